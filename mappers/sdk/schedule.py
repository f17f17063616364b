"""When each device polls (pure: no clocks, no asyncio).

Devices that share a medium (one Modbus serial line, one gateway) and one collect cycle
would, left alone, all poll at the instant they were registered, and then again together
every cycle: a burst of requests queues on the medium while it idles the rest of the
period, and the last device of every burst waits for all the others.  Instead, the
members of one group get start offsets spread evenly over the period, and each poll
runs on its device's grid ``epoch + offset + k * period``.

Offsets depend on how many members a group has, so they shift when a device joins or
leaves; a loop simply moves to its new grid at its next poll (:func:`next_poll_at`
keeps polls of one device at least half a period apart while it does).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import TypeVar

_K = TypeVar("_K", bound=Hashable)


def stagger(members: Sequence[_K], period_ms: int) -> dict[_K, int]:
    """Start offsets (ms, in ``[0, period_ms)``) spreading ``members`` evenly over one
    period, in the order given (duplicates keep their first place)."""
    if period_ms < 0:
        raise ValueError("period_ms must be >= 0")
    unique = list(dict.fromkeys(members))
    n = len(unique)
    return {member: (i * period_ms) // n for i, member in enumerate(unique)}


def next_poll_at(now: float, *, epoch: float, offset: float, period: float,
                 last: float | None = None) -> float:
    """The first instant on the grid ``epoch + offset + k * period`` (integer ``k``) that
    is not before ``now`` and, after a poll scheduled at ``last``, not before
    ``last + period / 2``.

    With an unchanged offset that is simply ``last + period``; a poll that overran its
    period skips the grid points it missed rather than polling twice in a row; and when
    the offset moved (a device joined or left the group) the gap to the previous poll
    stays between half a period and one and a half."""
    if period <= 0:
        raise ValueError("period must be > 0")
    earliest = now if last is None else max(now, last + period / 2)
    base = epoch + offset
    k = math.ceil((earliest - base) / period)
    return base + k * period
