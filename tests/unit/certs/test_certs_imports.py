"""The run-time edge modules must not pull in ``cryptography`` (about 13 MB resident)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]


def modules_loaded_by(statement: str) -> list[str]:
    probe = f"import sys\n{statement}\nimport json\nprint(json.dumps(sorted(sys.modules)))\n"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        check=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        timeout=60,
    )
    loaded: list[str] = json.loads(result.stdout)
    return loaded


def crypto_modules(modules: list[str]) -> list[str]:
    return [m for m in modules if m == "cryptography" or m.startswith("cryptography.")]


def test_runtime_edge_modules_do_not_import_cryptography() -> None:
    loaded = modules_loaded_by(
        "import certs, certs.tls, certs.tokens, certs.keyfiles, certs.rotation, certs.errors,"
        " certs.clock"
    )
    assert crypto_modules(loaded) == []
    assert "certs.ca" not in loaded and "certs.csr" not in loaded


@pytest.mark.parametrize("module", ["certs.csr", "certs.ca"])
def test_probe_does_see_cryptography_when_it_is_imported(module: str) -> None:
    # Guards the test above against passing because the probe is blind.
    assert crypto_modules(modules_loaded_by(f"import {module}")) != []
