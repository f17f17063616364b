"""Clock skew between a node and the cloud: measured, described, judged against the
tolerance.  The clocks are plain datetimes here because the system clock cannot be
moved in a test; what the functions see is exactly what a skewed clock would give."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from certs.clock import (
    MEASUREMENT_SLACK,
    ClockSkewError,
    check_clock_skew,
    describe_skew,
    format_duration,
)
from certs.errors import CertError

CLOUD = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)
TOLERANCE = timedelta(minutes=5)


@pytest.mark.parametrize("offset", [timedelta(0), timedelta(minutes=4, seconds=59),
                                    -timedelta(minutes=4, seconds=59), TOLERANCE, -TOLERANCE])
def test_a_skew_within_the_tolerance_is_accepted_and_measured(offset: timedelta) -> None:
    assert check_clock_skew(CLOUD + offset, CLOUD, TOLERANCE) == offset


@pytest.mark.parametrize(("offset", "words"), [
    (timedelta(minutes=7, seconds=12), "7m12s ahead of"),
    (-timedelta(hours=2), "2h0m0s behind"),
    (-timedelta(days=20000), "20000d0h0m0s behind"),  # an RTC that reset to 1971
])
def test_a_skew_beyond_the_tolerance_is_named_in_the_error(
    offset: timedelta, words: str,
) -> None:
    with pytest.raises(ClockSkewError) as info:
        check_clock_skew(CLOUD + offset, CLOUD, TOLERANCE)
    message = str(info.value)
    assert f"this node's clock is {words} the cloud's" in message
    assert "5m0s tolerated (nodes.clockSkewSeconds)" in message
    assert "NTP" in message
    assert info.value.skew == offset
    assert isinstance(info.value, CertError)  # the CLIs report it as one line


def test_the_time_between_the_two_readings_is_not_counted_as_skew() -> None:
    # A zero tolerance still accepts a request that spent a moment in transit ...
    check_clock_skew(CLOUD - timedelta(seconds=1), CLOUD, timedelta(0))
    # ... but not more than the measurement slack.
    with pytest.raises(ClockSkewError):
        check_clock_skew(CLOUD - MEASUREMENT_SLACK - timedelta(seconds=1), CLOUD, timedelta(0))


@pytest.mark.parametrize(("span", "text"), [
    (timedelta(seconds=0.25), "0.25s"), (timedelta(seconds=42), "42s"),
    (timedelta(seconds=59.6), "1m0s"), (timedelta(minutes=5), "5m0s"),
    (timedelta(days=1, hours=2, minutes=3, seconds=4), "1d2h3m4s"),
])
def test_durations_read_naturally(span: timedelta, text: str) -> None:
    assert format_duration(span) == text


def test_no_skew_is_described_as_such() -> None:
    assert describe_skew(timedelta(0)) == "in step with"
