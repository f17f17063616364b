"""Webster (Sainte-Laguë) apportionment: how Karmada (v1.16+) divides replicas among
node groups by weight (reference/placement-scheduling.md §1.6).

Seats are handed out one at a time, each to the party with the largest
``weight / (2 * seats + 1)``; a party may start with some seats already.  Ties go to
the party with fewer seats, then by name - ascending, or descending when the caller
asks (Karmada picks the direction per workload from its UID, see
:func:`names_descending_for`, so that ties do not always favour the same group).

The comparison is done on integers (cross-multiplied), never on floats, so equal
priorities really are ties.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping

_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193


class _Party:
    __slots__ = ("descending", "name", "seats", "weight")

    def __init__(self, name: str, weight: int, seats: int, descending: bool) -> None:
        self.name = name
        self.weight = weight
        self.seats = seats
        self.descending = descending

    def __lt__(self, other: _Party) -> bool:
        # "self comes first" in the heap: a higher Webster priority.
        mine = self.weight * (2 * other.seats + 1)
        theirs = other.weight * (2 * self.seats + 1)
        if mine != theirs:
            return mine > theirs
        if self.seats != other.seats:
            return self.seats < other.seats
        return self.name > other.name if self.descending else self.name < other.name


def webster(
    seats: int,
    weights: Mapping[str, int],
    initial: Mapping[str, int] | None = None,
    *,
    names_descending: bool = False,
) -> dict[str, int]:
    """Hand ``seats`` more seats to the parties of ``weights`` (each starting with its
    ``initial`` seats, default 0).  Returns every party's total, sorted by name.

    A party with weight 0 only gets seats if every party's priority is 0.  ``seats``
    and the weights must not be negative.
    """
    if seats < 0:
        raise ValueError("cannot hand out a negative number of seats")
    start = dict(initial or {})
    names = sorted(set(weights) | set(start))
    parties = []
    for name in names:
        weight, have = weights.get(name, 0), start.get(name, 0)
        if weight < 0 or have < 0:
            raise ValueError(f"party {name!r} has a negative weight or seat count")
        parties.append(_Party(name, weight, have, names_descending))
    if not parties:
        if seats:
            raise ValueError("no party to give seats to")
        return {}
    heapq.heapify(parties)
    for _ in range(seats):
        top = parties[0]
        top.seats += 1
        heapq.heapreplace(parties, top)
    return {p.name: p.seats for p in sorted(parties, key=lambda p: p.name)}


def fnv32a(text: str) -> int:
    """The 32-bit FNV-1a hash of ``text``'s UTF-8 bytes."""
    h = _FNV32_OFFSET
    for byte in text.encode():
        h = ((h ^ byte) * _FNV32_PRIME) & 0xFFFFFFFF
    return h


def names_descending_for(uid: str) -> bool:
    """The tie-break direction for one workload: stable for that workload, spread
    evenly across workloads (Karmada uses the parity of the FNV-32a hash of the UID;
    which parity means descending is our choice: odd)."""
    return fnv32a(uid) % 2 == 1
