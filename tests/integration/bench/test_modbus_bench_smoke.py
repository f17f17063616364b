"""The Modbus poll benchmark runs end to end at a tiny size (2 devices, 3 s per mode):
both modes poll, the table and the goal lines come out, and no simulator is left
running.  (A benchmark nobody runs rots; this keeps it working.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
MODBUS = REPO / "scripts" / "bench" / "modbus"


@pytest.mark.slow
def test_modbus_quick_run_prints_the_table_and_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = subprocess.run([sys.executable, str(MODBUS), "--quick", "--json", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "requests/s on the wire" in result.stdout
    assert "coalesced" in result.stdout and "per-property" in result.stdout
    assert "goals (coalesced):" in result.stdout
    r = json.loads(out.read_text())
    coalesced, baseline = r["coalesced"], r["per-property"]
    assert coalesced["devices"] == baseline["devices"] == 2
    assert coalesced["polls"] > 0 and baseline["polls"] > 0
    # One request per property is what the baseline means; the driver coalesces 20 into 1.
    assert baseline["requests_bus"] >= 15 * coalesced["requests_bus"] > 0
    assert r["pids"]  # the simulator and the two mapper processes...
    for pid in r["pids"]:
        with pytest.raises(ProcessLookupError):  # ...are all gone
            os.kill(pid, 0)
