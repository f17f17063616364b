"""The scheduler benchmark runs end to end at its small size (500 nodes, 100 Apps, 1,000
replicas): the controller and both first-fit baselines place every replica, nothing is
overcommitted or outside its policy's node groups, and the table and the verdict come
out.  (A benchmark nobody runs rots; this keeps it working.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SCHEDULER = REPO / "scripts" / "bench" / "scheduler"


@pytest.mark.slow
def test_scheduler_quick_run_places_every_replica_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = subprocess.run([sys.executable, str(SCHEDULER), "--quick", "--json", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for line in ("replicas placed per second", "decision per round p50/p99/max, ms",
                 "ratio ours / first fit", "goal >= 1000 replicas/s:"):
        assert line in result.stdout, result.stdout
    r = json.loads(out.read_text())
    assert (r["nodes"], r["groups"], r["queues"], r["apps"]) == (500, 10, 4, 100)
    assert r["replicas_expected"] == 1000
    ours, base, batched = r["ours"], r["first_fit"], r["first_fit_batched"]
    for side in (ours, base, batched):
        assert side["replicas"] == 1000
        assert side["replicas_per_s"] > 0
        assert side["checks"]["apps_complete"] == 100
        assert side["checks"]["replicas_live"] == 1000
        assert side["checks"]["nodes_over_allocatable"] == 0
    assert ours["checks"]["replicas_outside_allowed_groups"] == 0
    assert ours["checks"]["apps_scheduled"] == 100  # every App's status says Scheduled
    assert ours["rounds"] >= 1
    assert ours["app_latency_s"]["n"] == 100  # every App's placement was timed
    assert ours["decision_ms"]["p99"] >= ours["decision_ms"]["p50"] > 0
    assert base["unplaced"] == batched["unplaced"] == 0
    # The controller batches its writes: far fewer transactions than objects.
    assert sum(ours["store_write_calls"].values()) < 100
