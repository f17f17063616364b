"""Reconnect delays: exponential backoff with full jitter (pure; the caller passes
the random draw so the schedule is testable)."""

from __future__ import annotations


def reconnect_delay(attempt: int, rand: float, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Delay before reconnect attempt ``attempt`` (0 for the first retry).

    The ceiling doubles from ``base`` up to ``cap``; the delay is drawn uniformly from
    [ceiling/2, ceiling] so thousands of edges cut off at the same moment do not all
    return in the same second, yet none waits less than half the ceiling."""
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    ceiling = min(cap, base * 2.0 ** min(attempt, 32))
    rand = min(max(rand, 0.0), 1.0)
    return ceiling / 2 + rand * ceiling / 2
