from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fuzz.budget import Tally


@pytest.fixture(scope="session")
def tally() -> Iterator[Tally]:
    """Shared by every fuzz test of the run; the figures are recorded once at the end."""
    counts = Tally()
    yield counts
    counts.flush()
