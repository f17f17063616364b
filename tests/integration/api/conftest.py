from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.api.api_harness import RunningApi, running_api


@pytest.fixture
def api(tmp_path: Path) -> Iterator[RunningApi]:
    with running_api(tmp_path) as server:
        yield server
