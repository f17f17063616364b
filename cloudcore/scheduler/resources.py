"""CPU and memory amounts, and the dominant-resource share that DRF and proportion use.

Amounts are whole millicores and bytes (:mod:`protocol.quantity` turns ``500m`` and
``256Mi`` into them).  Deserved shares are divided out of totals, so they are fractional:
they come in a second type, :class:`FractionalResources`, of floats - as in Volcano,
which computes them in float64 milli-units and bytes.  Shares are floats too; two shares
that are equal as fractions (24/72 and 6/18) are equal floats, because each is the
correctly rounded quotient of two exactly represented integers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from protocol.quantity import cpu_millis, format_cpu, format_memory, memory_bytes

UNLIMITED_AMOUNT = 2**62
"""Stands for "no limit" in a capability dimension; far above any real node or cluster."""


@dataclass(frozen=True, slots=True)
class Resources:
    """An amount of CPU (millicores) and memory (bytes)."""

    cpu: int = 0
    memory: int = 0

    @classmethod
    def parse(cls, cpu: str | int | float = 0, memory: str | int | float = 0) -> Resources:
        """From Kubernetes quantities: ``Resources.parse("500m", "1Gi")``."""
        return cls(cpu_millis(cpu), memory_bytes(memory))

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.memory + other.memory)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu - other.cpu, self.memory - other.memory)

    def __mul__(self, times: int) -> Resources:
        return Resources(self.cpu * times, self.memory * times)

    def fits_in(self, other: Resources) -> bool:
        """True when this amount is no larger than ``other`` in every dimension."""
        return self.cpu <= other.cpu and self.memory <= other.memory

    def __str__(self) -> str:
        cpu = "unlimited" if self.cpu >= UNLIMITED_AMOUNT else format_cpu(self.cpu)
        mem = "unlimited" if self.memory >= UNLIMITED_AMOUNT else format_memory(self.memory)
        return f"cpu {cpu}, memory {mem}"


ZERO = Resources()
UNLIMITED = Resources(UNLIMITED_AMOUNT, UNLIMITED_AMOUNT)


@dataclass(frozen=True, slots=True)
class FractionalResources:
    """CPU (millicores) and memory (bytes) that need not be whole: a deserved share."""

    cpu: float = 0.0
    memory: float = 0.0

    @classmethod
    def of(cls, amount: Resources) -> FractionalResources:
        return cls(float(amount.cpu), float(amount.memory))

    def floor(self) -> Resources:
        """Whole units, rounded down (what a status field shows)."""
        return Resources(math.floor(self.cpu), math.floor(self.memory))

    def __str__(self) -> str:
        return str(self.floor())


def share(used: float, total: float) -> float:
    """``used / total``, with Volcano's rule for an empty total: 0 when nothing is used,
    else 1 (a job holding something nobody has is as "full" as it gets)."""
    if total == 0:
        return 0.0 if used == 0 else 1.0
    return used / total


def dominant_share(allocated: Resources | FractionalResources,
                   total: Resources | FractionalResources) -> float:
    """DRF's dominant share: the largest fraction of any resource the holder has
    (reference §5.5: ``s = max_r share(allocated_r, total_r)``)."""
    return max(share(allocated.cpu, total.cpu), share(allocated.memory, total.memory))
