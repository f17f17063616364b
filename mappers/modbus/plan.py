"""Which requests to send for one device's poll (pure).

Every Modbus request costs a full round trip (and on a serial line a turnaround and an
inter-frame gap), while one more register in a reply costs two bytes.  So the points of
one poll are coalesced: points of the same table whose addresses are contiguous, overlap
or sit at most ``max_gap`` apart become one read, up to the protocol's limit of 125
registers or 2000 bits per request.  Each reply is then sliced back per point.

Reading a gap also reads addresses nobody asked for; if the device does not implement
one of them it answers the whole read with an exception.  The caller then reads that
request's points one by one (``Read.singles``) so that only a bad point fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mappers.modbus.codec import RegisterKind

MAX_REGISTERS_PER_READ = 125
MAX_BITS_PER_READ = 2000
DEFAULT_MAX_GAP = 8
"""Unrequested addresses a read may span to join two points (registers or bits)."""

class PlanError(ValueError):
    """A point cannot be read with a single Modbus request."""


def max_per_read(kind: RegisterKind) -> int:
    return MAX_BITS_PER_READ if kind.is_bits else MAX_REGISTERS_PER_READ


@dataclass(frozen=True, slots=True)
class Point:
    """One value to read: ``key`` names it (a property name; unique within a poll)."""

    key: str
    kind: RegisterKind
    offset: int
    count: int


@dataclass(frozen=True, slots=True)
class Read:
    """One request: ``count`` items of ``kind`` from ``offset``, covering ``points``."""

    kind: RegisterKind
    offset: int
    count: int
    points: tuple[Point, ...]

    def split(self, values: Sequence[int]) -> dict[str, list[int]]:
        """The reply to this read, sliced back to each point."""
        if len(values) < self.count:
            raise PlanError(f"reply has {len(values)} values, the read asked for {self.count}")
        return {p.key: list(values[p.offset - self.offset:p.offset - self.offset + p.count])
                for p in self.points}

    def singles(self) -> list[Read]:
        """This read as one request per point (the fallback when a coalesced read fails)."""
        return [Read(p.kind, p.offset, p.count, (p,)) for p in self.points]


def plan_reads(points: Iterable[Point], *, max_gap: int = DEFAULT_MAX_GAP) -> list[Read]:
    """Coalesce ``points`` into as few reads as the gap and size limits allow.

    Reads come out grouped by table (coils, discrete inputs, input, holding registers)
    and by ascending address; every point is covered by exactly one read."""
    if max_gap < 0:
        raise PlanError("max_gap must be >= 0")
    by_kind: dict[RegisterKind, list[Point]] = {}
    for point in points:
        limit = max_per_read(point.kind)
        if not 1 <= point.count <= limit:
            raise PlanError(f"{point.key}: {point.count} items cannot be read in one request "
                            f"(1..{limit} for {point.kind.value})")
        if point.offset < 0 or point.offset + point.count > 0x10000:
            raise PlanError(f"{point.key}: addresses {point.offset}..+{point.count} "
                            "are outside 0..65535")
        by_kind.setdefault(point.kind, []).append(point)
    reads: list[Read] = []
    for kind in RegisterKind:
        group = sorted(by_kind.get(kind, ()), key=lambda p: (p.offset, -p.count, p.key))
        reads.extend(_coalesce(kind, group, max_gap))
    return reads


def _coalesce(kind: RegisterKind, group: list[Point], max_gap: int) -> list[Read]:
    limit = max_per_read(kind)
    reads: list[Read] = []
    members: list[Point] = []
    start = end = 0  # the current read covers [start, end)
    for point in group:
        point_end = point.offset + point.count
        if members and point.offset - end <= max_gap and max(end, point_end) - start <= limit:
            members.append(point)
            end = max(end, point_end)
            continue
        if members:
            reads.append(Read(kind, start, end - start, tuple(members)))
        members, start, end = [point], point.offset, point_end
    if members:
        reads.append(Read(kind, start, end - start, tuple(members)))
    return reads
