"""How hard the fuzzers try, and what they report to docs/reliability.md.

One knob, ``EDGEFLEET_FUZZ_EXAMPLES`` (default 300): the examples each pure property
runs.  The fuzzers that do I/O scale it down (see :func:`scaled`) so that the CI run of
``tests/fuzz`` stays within a few minutes on a small machine; ``scripts/bench/reliability``
raises it for a long run.  Every run uses the seed from :mod:`tests.reliability`, so a
failure found in CI is found again on a laptop, and nothing is replayed from a local
example database that CI would not have.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import seed as hypothesis_seed

from tests.reliability import SEED, record_fuzz

EXAMPLES = int(os.environ.get("EDGEFLEET_FUZZ_EXAMPLES", "300"))


def scaled(divisor: int, floor: int = 2) -> int:
    """``EXAMPLES / divisor``, at least ``floor``: the budget of a fuzzer whose every
    example costs a round trip."""
    return max(floor, EXAMPLES // divisor)


F = TypeVar("F", bound=Callable[..., Any])


def fuzz(max_examples: int = EXAMPLES, *, io: bool = False,
         suppress: Sequence[HealthCheck] = ()) -> Callable[[F], F]:
    """The settings of every fuzz property: the budget, the shared seed, no example
    database, and for ``io`` properties no deadline (a round trip on a loaded CI
    machine is slow without being wrong)."""
    quiet = [HealthCheck.too_slow, HealthCheck.data_too_large, *suppress]
    if io:
        quiet.append(HealthCheck.function_scoped_fixture)
    chosen = settings(max_examples=max_examples, database=None, print_blob=False,
                      deadline=None if io else 2000, suppress_health_check=quiet)

    def wrap(test: F) -> F:
        return hypothesis_seed(SEED)(chosen(test))

    return wrap


@dataclass
class Counts:
    tried: int = 0
    crashes: int = 0


@dataclass
class Tally:
    """Bad inputs sent per interface, summed over the tests of a run and recorded once
    per interface at the end (``record_fuzz``)."""

    interfaces: dict[str, Counts] = field(default_factory=dict)

    @contextmanager
    def example(self, interface: str) -> Iterator[None]:
        """Count one input to ``interface``; an exception out of it is a crash."""
        counts = self.interfaces.setdefault(interface, Counts())
        counts.tried += 1
        try:
            yield
        except Exception:
            counts.crashes += 1
            raise

    def add(self, interface: str, tried: int, crashes: int = 0) -> None:
        counts = self.interfaces.setdefault(interface, Counts())
        counts.tried += tried
        counts.crashes += crashes

    def flush(self) -> None:
        for interface, counts in sorted(self.interfaces.items()):
            record_fuzz(interface, counts.tried, counts.crashes)
        self.interfaces.clear()
