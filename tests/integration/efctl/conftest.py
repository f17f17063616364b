from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from efctl.config import write_efctl_config
from tests.integration.api.api_harness import RunningApi, running_api

_BIN = Path(sys.executable).parent / "efctl"
EFCTL = [str(_BIN)] if _BIN.exists() else [sys.executable, "-m", "efctl"]


@dataclass
class Efctl:
    """Runs the real efctl executable against one config file."""

    config: Path
    home: Path

    def __call__(self, *args: str, stdin: str | None = None,
                 config: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "EFCTL_CONFIG"}
        env["HOME"] = str(self.home)
        env["EFCTL_CONFIG"] = str(config or self.config)
        return subprocess.run(
            [*EFCTL, *args], input=stdin, capture_output=True, text=True, env=env,
            timeout=60, check=False,
        )


@pytest.fixture
def api(tmp_path: Path) -> Iterator[RunningApi]:
    with running_api(tmp_path / "cloud") as server:
        yield server


@pytest.fixture
def efctl(api: RunningApi, tmp_path: Path) -> Efctl:
    config = tmp_path / "home" / ".edgefleet" / "efctl.yaml"
    write_efctl_config(config, api.url, api.ca_pem, api.admin_token)
    return Efctl(config, tmp_path / "home")
