from __future__ import annotations

import pytest

from protocol.backoff import reconnect_delay
from protocol.ratelimit import TokenBucket


def test_backoff_doubles_then_caps_at_30_seconds() -> None:
    highs = [reconnect_delay(a, 1.0) for a in range(12)]
    assert highs[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(highs) == 30.0 and highs[-1] == 30.0


def test_backoff_jitter_stays_within_half_to_full_ceiling() -> None:
    for attempt in range(10):
        ceiling = min(30.0, 0.5 * 2**attempt)
        assert reconnect_delay(attempt, 0.0) == ceiling / 2
        assert ceiling / 2 <= reconnect_delay(attempt, 0.37) <= ceiling


def test_backoff_rejects_negative_attempts() -> None:
    with pytest.raises(ValueError):
        reconnect_delay(-1, 0.5)


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5)
    assert all(bucket.allow(0.0) for _ in range(5))
    assert not bucket.allow(0.0)
    assert bucket.allow(0.1)  # one token back after 1/rate seconds
    assert not bucket.allow(0.1)
