"""When devices poll: offsets spread over the period, and each poll on its device's grid."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mappers.sdk.schedule import next_poll_at, stagger


def test_stagger_spreads_devices_over_the_period() -> None:
    assert stagger(["a", "b", "c", "d"], 1000) == {"a": 0, "b": 250, "c": 500, "d": 750}
    assert stagger(["only"], 1000) == {"only": 0}
    assert stagger([], 1000) == {}
    offsets = stagger([f"d{i}" for i in range(130)], 2000)
    assert len(set(offsets.values())) == 130
    assert all(0 <= o < 2000 for o in offsets.values())


def test_stagger_keeps_the_order_given_and_ignores_repeats() -> None:
    assert stagger(["b", "a", "b", "c"], 300) == {"b": 0, "a": 100, "c": 200}
    assert stagger([("bus", 1), ("bus", 2)], 0) == {("bus", 1): 0, ("bus", 2): 0}
    with pytest.raises(ValueError):
        stagger(["a"], -1)


@given(st.integers(1, 500), st.integers(1, 100_000))
def test_stagger_gaps_between_neighbours_differ_by_at_most_one_ms(n: int, period: int) -> None:
    offsets = sorted(stagger(range(n), period).values())
    gaps = [b - a for a, b in zip(offsets, [*offsets[1:], offsets[0] + period], strict=True)]
    assert max(gaps) - min(gaps) <= 1


def test_first_poll_is_the_next_point_of_the_grid() -> None:
    # A lane that started at t=100 with a period of 2 s; this device's offset is 0.5 s.
    assert next_poll_at(100.0, epoch=100.0, offset=0.0, period=2.0) == 100.0
    assert next_poll_at(100.1, epoch=100.0, offset=0.5, period=2.0) == 100.5
    assert next_poll_at(107.0, epoch=100.0, offset=0.5, period=2.0) == 108.5


def test_polls_follow_the_grid_without_drift() -> None:
    at = next_poll_at(100.0, epoch=100.0, offset=0.25, period=1.0)
    seen = [at]
    for _ in range(5):
        # the poll itself took 0.3 s: the next one is still one period after the last
        at = next_poll_at(at + 0.3, epoch=100.0, offset=0.25, period=1.0, last=at)
        seen.append(at)
    assert seen == [100.25, 101.25, 102.25, 103.25, 104.25, 105.25]


def test_an_overrun_skips_the_missed_points_instead_of_polling_twice() -> None:
    # The poll scheduled at 101 took 2.5 s: 102 and 103 are gone, the next is 104.
    assert next_poll_at(103.5, epoch=100.0, offset=0.0, period=1.0, last=101.0) == 104.0


def test_a_moved_offset_keeps_polls_at_least_half_a_period_apart() -> None:
    # The device polled at 110.0 with offset 0; a device joined and its offset is now
    # 0.1: 110.1 would be too soon after the last poll, so 111.1.
    assert next_poll_at(110.01, epoch=100.0, offset=0.1, period=1.0, last=110.0) == 111.1
    # ...and with offset 0.6, the next poll comes 0.6 s after the last.
    assert next_poll_at(110.01, epoch=100.0, offset=0.6, period=1.0, last=110.0) == 110.6


def test_period_must_be_positive() -> None:
    with pytest.raises(ValueError):
        next_poll_at(0.0, epoch=0.0, offset=0.0, period=0.0)


@given(now=st.floats(0, 1e6), epoch=st.floats(0, 1e6), offset=st.floats(0, 10),
       period=st.floats(0.01, 10), since_last=st.one_of(st.none(), st.floats(0, 20)))
def test_the_next_poll_is_the_first_allowed_point_of_the_grid(
        now: float, epoch: float, offset: float, period: float,
        since_last: float | None) -> None:
    last = None if since_last is None else now - since_last
    at = next_poll_at(now, epoch=epoch, offset=offset, period=period, last=last)
    earliest = now if last is None else max(now, last + period / 2)
    tolerance = 1e-9 * max(1.0, abs(epoch), abs(now))
    assert at >= earliest - tolerance
    assert at < earliest + period + tolerance
    k = (at - epoch - offset) / period
    assert math.isclose(k, round(k), abs_tol=1e-6 * max(1.0, abs(k)))
