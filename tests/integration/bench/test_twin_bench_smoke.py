"""The twin pipeline benchmark runs end to end at a tiny size (--quick: 4 devices, 2
publishing clients, 2 s per phase) and produces its figures: raw broker rate, twin
updates processed, cloud latency, the goal lines; and it leaves no process behind.

Deadlines are generous and nothing is asserted about speed: the machine may be busy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
TWIN = REPO / "scripts" / "bench" / "twin"


@pytest.mark.slow
def test_twin_quick_run_produces_its_figures_and_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = subprocess.run([sys.executable, str(TWIN), "--quick", "--json", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "requirement: twin rate" in result.stdout
    assert "requirement: cloud latency p99" in result.stdout
    r = json.loads(out.read_text())
    raw, paced, flood = r["raw"], r["paced"], r["twin"]
    assert raw["received"] > 0 and raw["rx_rate"] > 0
    # Paced well below capacity: every update is answered and reaches the cloud.
    assert paced["received"] == paced["sent"] > 0
    assert paced["latency"]["n"] > 0 and paced["latency"]["p99"] > 0
    assert paced["converged"] == r["devices"] == 4
    assert flood["received"] > 0 and flood["rx_rate"] > 0
    for phase in (raw, paced, flood):
        assert phase["cpu_s"]["edgecore"] > 0
    for pid in r["pids"]:  # edgecore and cloudcore are gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
