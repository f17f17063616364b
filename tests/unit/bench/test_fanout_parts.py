"""The pure parts of the fan-out benchmark (scripts/bench): the frames its simulated
nodes send must be what the hub accepts, they must apply changes by edgecore's rule,
and the report's arithmetic and verdicts must be right."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts" / "bench"))

import fanout_report
import fanout_sim

from protocol import envelope as wire
from protocol.envelope import Op


def test_simulated_frames_are_valid_envelopes_with_valid_bodies() -> None:
    sync = wire.decode(fanout_sim.sync_frame({"Device/default/d1": 7}))
    assert sync.op is Op.SYNC
    assert wire.decode_body(sync, wire.SyncBody).holdings == {"Device/default/d1": 7}

    beat = wire.decode(fanout_sim.heartbeat_frame("bench-00001"))
    status = wire.decode_body(beat, wire.HeartbeatBody).status
    assert status.capacity["cpu"] == "4"
    assert {a.type for a in status.addresses} == {"InternalIP", "Hostname"}

    ack = wire.decode(fanout_sim.ack_frame("abc123"))
    assert (ack.op, ack.parent_id) == (Op.ACK, "abc123")


def test_changes_apply_by_edgecores_rule() -> None:
    held: dict[str, int] = {}
    fanout_sim.apply_change(held, Op.UPSERT, "k", 5)
    fanout_sim.apply_change(held, Op.UPSERT, "k", 3)  # older: acked, not applied
    assert held == {"k": 5}
    fanout_sim.apply_change(held, Op.DELETE, "k", 4)  # older than what is held
    assert held == {"k": 5}
    fanout_sim.apply_change(held, Op.DELETE, "k", 9)
    assert held == {}
    fanout_sim.apply_change(held, Op.DELETE, "gone", 2)  # deleting the absent is fine
    assert held == {}


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert fanout_report.percentile(values, 50) == pytest.approx(50.5)
    assert fanout_report.percentile(values, 99) == pytest.approx(99.01)
    assert fanout_report.percentile([3.0], 99) == 3.0
    assert math.isnan(fanout_report.percentile([], 50))


def _results(n: int, p99: float = 0.5, lost: int = 0, rss_per_node: float = 70e3) -> dict[str, Any]:
    dist = {"n": n, "p50_s": 0.1, "p99_s": p99, "max_s": p99}
    usage = {"seconds": 1.0, "cloud_cpus": 0.5, "client_cpus": 0.3, "other_cpus": 0.0}
    return {
        "nodes": n, "layout": "test",
        "machine": {"cpus": 2, "python": "3.11", "platform": "Linux"},
        "other_load": {"mean_cpus": 0.0, "worst_cpus": 0.0},
        "edgefleet": {
            "connect_rate": 100.0, "rss_idle": 50e6, "rss_connected": 50e6 + n * rss_per_node,
            "rss_per_node": rss_per_node, "fanout": dist, "fanout_recv": dist,
            "fanout_rounds": 3, "per_node_ack": dist, "per_node_recv": dist,
            "per_node_rate": 300.0, "apply_concurrency": 32, "join_rate": 300.0,
            "held": n, "hold_seconds": 45.0, "hold_drops": 0, "ready": n,
            "hold_usage": usage, "per_node_usage": usage, "rss_after_changes": 60e6,
        },
        "raw": {"connect_rate": 200.0, "rss_idle": 30e6, "rss_connected": 30e6 + n * 60e3,
                "rss_per_node": 60e3, "broadcast": dist, "rounds": 5,
                "storm_s": 5.0, "storm_restart_s": 0.5, "storm_sessions": n,
                "storm_handshake_failures": 0},
        "storm": {"restart_s": 2.0, "resynced_s": 10.0, "resynced": n - lost,
                  "per_node": dist, "updates": 5, "deletes": 2, "lost": lost,
                  "store_mismatch": 0, "rss_peak": 70e6, "usage": usage,
                  "reconnect_failures": 10, "hub_sessions": n, "hub_handshake_failures": 0},
    }


def test_verdicts_pass_and_miss_on_the_issue_thresholds() -> None:
    rows = {r[0]: r[3] for r in fanout_report.verdicts(_results(5000))}
    assert set(rows.values()) == {"PASS"}

    rows = {r[0]: r[3] for r in fanout_report.verdicts(
        _results(2000, p99=2.5, lost=1, rss_per_node=120 * 1024))}
    assert rows["nodes held with heartbeats"] == "PASS"
    assert rows["apply -> edge ack p99 (one change per node)"] == "MISS"
    assert rows["reconnect storm resynced, nothing lost"] == "MISS"
    assert rows["goal: RSS per node"] == "MISS"
    assert rows["goal: 5,000 nodes"].startswith("ok at N=2,000")  # not measured at 5,000


def test_report_renders_every_section() -> None:
    text = fanout_report.render(_results(200))
    for heading in ("server RSS per connected node", "storm: lost", "requirement"):
        assert heading in text
