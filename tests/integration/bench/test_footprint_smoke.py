"""The edge footprint benchmark runs end to end at a tiny size (5 devices, 3 s settle):
every device reports through the real mapper and edgecore, the memory table, both
baselines and the goal line come out, and nothing is left running."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
FOOTPRINT = REPO / "scripts" / "bench" / "footprint"


@pytest.mark.slow
def test_footprint_quick_run_measures_edgecore_with_its_baselines(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = subprocess.run([sys.executable, str(FOOTPRINT), "--quick", "--json", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "requirement: edgecore RSS ≤ 70 MB" in result.stdout
    r = json.loads(out.read_text())
    assert r["devices"] == 5
    assert r["still_reported"] == 5  # every twin reached the cloud through the mapper
    for part in ("bare_asyncio", "edgecore_idle", "edgecore_loaded", "mapper"):
        assert r[part]["rss"] > 0, part
    # The loaded edgecore carries the baselines plus its twins, never less than idle's floor.
    assert r["edgecore_loaded"]["rss"] > r["bare_asyncio"]["rss"]
    assert "amqtt (broker + client)" in [row[0] for row in r["imports"]]
