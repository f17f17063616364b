"""The fan-out benchmark runs end to end at a tiny size: every phase completes, every
simulated node is held, acked and resynced with nothing lost, and it leaves no process
and no temp dir behind.  (A benchmark nobody runs rots; this keeps it working.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
FANOUT = REPO / "scripts" / "bench" / "fanout"


@pytest.mark.slow
def test_fanout_small_run_completes_and_cleans_up(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, str(FANOUT), "--nodes", "6", "--hold", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=240,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    r = json.loads(out.read_text())
    e, storm = r["edgefleet"], r["storm"]
    assert (e["held"], e["hold_drops"], e["ready"]) == (6, 0, 6)
    assert e["per_node_ack"]["n"] == 6
    assert r["raw"]["broadcast"]["n"] == 6
    assert (storm["resynced"], storm["lost"], storm["store_mismatch"]) == (6, 0, 0)
    assert "requirement" in result.stdout
    assert list(scratch.iterdir()) == []  # the run's temp dir is gone
    leftovers = subprocess.run(["pgrep", "-f", str(scratch)], capture_output=True, text=True)
    assert leftovers.stdout == ""  # no cloudcore, simulator or raw server left running
