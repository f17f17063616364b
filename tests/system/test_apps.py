"""Edge apps with real processes: cloudcore, three edgecores in three NodeGroups, Apps
placed by a Karmada-style PropagationPolicy and run by each node's edged."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from tests.harness import Cloud, Edge, command, wait_until

pytestmark = pytest.mark.system

APPS = "apps.edgefleet.io/v1alpha1"
POLICY = "policy.edgefleet.io/v1alpha1"


def processes(marker: str) -> dict[int, tuple[str, list[str]]]:
    """Every running replica process carrying ``marker`` in its command line:
    pid -> (the edge directory it runs under, its command line)."""
    found = {}
    for proc in psutil.process_iter(["pid", "cmdline", "cwd", "status"]):
        cmdline = proc.info["cmdline"] or []
        if marker in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found[proc.info["pid"]] = (str(proc.info["cwd"] or ""), cmdline)
    return found


def per_edge(marker: str, edges: list[Edge]) -> dict[str, int]:
    counts = {e.name: 0 for e in edges}
    for cwd, _ in processes(marker).values():
        for e in edges:
            if cwd.startswith(str(e.dir)):
                counts[e.name] += 1
    return counts


def sleeper_app(name: str, marker: str, replicas: int, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": APPS, "kind": "App", "metadata": {"name": name, "namespace": "default"},
            "spec": {"command": [sys.executable, "-c", "import time; time.sleep(3600)", marker],
                     "replicas": replicas, **spec}}


def node_group(name: str, node: str) -> dict[str, Any]:
    return {"apiVersion": "apps.kubeedge.io/v1alpha1", "kind": "NodeGroup",
            "metadata": {"name": name}, "spec": {"nodes": [node]}}


def start_cluster(cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
                  names: list[str]) -> tuple[Cloud, list[Edge]]:
    # A short grace period: a stopped edgecore's node turns Unknown within seconds.
    cloud = cloud_factory({"nodes": {"gracePeriodSeconds": 3}}).start()
    token = cloud.join_token()
    edges = []
    for name in names:
        edge = edge_factory(cloud, name)
        assert edge.join(token).returncode == 0
        edges.append(edge.start())
    return cloud, edges


def test_divided_placement_failover_and_overrides_with_real_processes(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
) -> None:
    cloud, edges = start_cluster(cloud_factory, edge_factory, ["edge-a", "edge-b", "edge-c"])
    marker = f"ef-{uuid.uuid4().hex[:8]}"
    for group, node in (("ga", "edge-a"), ("gb", "edge-b"), ("gc", "edge-c")):
        assert cloud.apply(node_group(group, node)).status_code in (200, 201)
    policy = {
        "apiVersion": POLICY, "kind": "PropagationPolicy",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "resourceSelectors": [{"apiVersion": APPS, "kind": "App", "name": "web"}],
            "placement": {
                "clusterAffinity": {"clusterNames": ["ga", "gb", "gc"]},
                "replicaScheduling": {
                    "replicaSchedulingType": "Divided",
                    "replicaDivisionPreference": "Weighted",
                    "weightPreference": {"staticWeightList": [
                        {"targetCluster": {"clusterNames": ["ga"]}, "weight": 1},
                        {"targetCluster": {"clusterNames": ["gb"]}, "weight": 2},
                        {"targetCluster": {"clusterNames": ["gc"]}, "weight": 3},
                    ]},
                },
            },
            "failover": {"application": {"decisionConditions": {"tolerationSeconds": 2}}},
        },
    }
    override = {
        "apiVersion": POLICY, "kind": "OverridePolicy",
        "metadata": {"name": "web-ga", "namespace": "default"},
        "spec": {
            "resourceSelectors": [{"apiVersion": APPS, "kind": "App", "name": "web"}],
            "overrideRules": [{"targetCluster": {"clusterNames": ["ga"]},
                               "overriders": {"argsOverrider": [
                                   {"operator": "add", "value": ["--group-a"]}]}}],
        },
    }
    # An invalid policy is refused at apply time, naming the field, and changes nothing.
    bad = json.loads(json.dumps(policy))
    bad["spec"]["placement"]["replicaScheduling"]["weightPreference"]["staticWeightList"][0][
        "weight"] = -1
    refused = subprocess.run([*command("efctl"), "--config", str(cloud.efctl_config), "apply",
                              "-f", "-"], input=yaml.safe_dump(bad), capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode != 0
    assert "staticWeightList[0].weight" in refused.stderr
    assert cloud.list("PropagationPolicy") == []
    for obj in (policy, override):
        r = cloud.apply(obj)
        assert r.status_code in (200, 201), r.text
    assert cloud.apply(sleeper_app("web", marker, 10)).status_code in (200, 201)

    # 10 replicas at 1:2:3 -> 2/3/5 real processes.
    wait_until(lambda: per_edge(marker, edges) == {"edge-a": 2, "edge-b": 3, "edge-c": 5}, 60,
               interval=0.5, what="2/3/5 processes")
    by_pid = processes(marker)
    for cwd, cmdline in by_pid.values():
        assert ("--group-a" in cmdline) == cwd.startswith(str(edges[0].dir)), cmdline
    wait_until(lambda: (cloud.get("App", "web").get("status") or {}).get("readyReplicas") == 10,
               30, what="10 ready replicas in the App's status")
    kept = {pid for pid, (cwd, _) in by_pid.items() if not cwd.startswith(str(edges[2].dir))}
    wide = subprocess.run([*command("efctl"), "--config", str(cloud.efctl_config), "get", "app",
                           "web", "-o", "wide"], capture_output=True, text=True, timeout=60)
    assert wide.returncode == 0, wide.stderr
    rows = [line.split() for line in wide.stdout.splitlines() if line.split()[:1] != []]
    replica_rows = [r for r in rows if r[0].isdigit()]
    assert len(replica_rows) == 10
    assert sorted(r[1] for r in replica_rows) == ["edge-a"] * 2 + ["edge-b"] * 3 + ["edge-c"] * 5
    assert {r[2] for r in replica_rows} == {"Running"}

    # Group gc loses its only node: after the toleration its replicas run in ga and gb.
    assert edges[2].stop() == 0
    wait_until(lambda: per_edge(marker, edges) == {"edge-a": 3, "edge-b": 7, "edge-c": 0}, 90,
               interval=0.5, what="gc's replicas moved to ga and gb (3/7)")
    assert kept <= set(processes(marker)), "replicas in healthy groups were restarted"

    # Deleting the App stops every process.
    assert cloud.delete("App", "web").status_code == 200
    wait_until(lambda: not processes(marker), 60, interval=0.5, what="every replica stopped")


def test_artifacts_crashes_autonomy_and_delete(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge], tmp_path: Path,
) -> None:
    cloud, (edge,) = start_cluster(cloud_factory, edge_factory, ["edge-a"])
    marker = f"ef-{uuid.uuid4().hex[:8]}"

    # A tampered artifact refuses to run, and the status says so.
    script = tmp_path / "tool.py"
    script.write_text("print('hello')\n")
    pushed = subprocess.run([*command("efctl"), "--config", str(cloud.efctl_config), "artifact",
                             "push", str(script)], capture_output=True, text=True, timeout=60)
    assert pushed.returncode == 0, pushed.stderr
    sha = pushed.stdout.strip()
    stored = cloud.dir / "artifacts" / sha
    stored.chmod(0o600)
    stored.write_text("print('tampered')\n")
    cloud.apply(sleeper_app("tampered", marker, 1,
                            artifacts=[{"name": "tool.py", "sha256": sha}]))

    def replica_reason(app: str) -> str:
        entries = (cloud.get("App", app).get("status") or {}).get("replicas") or [{}]
        return f"{entries[0].get('reason')}: {entries[0].get('message')}"
    wait_until(lambda: "ArtifactMismatch" in replica_reason("tampered"), 60,
               what="the mismatch in the App's status")
    assert not processes(marker)

    # A crashing app backs off and shows CrashLoopBackOff.
    crash = {"apiVersion": APPS, "kind": "App", "metadata": {"name": "crash", "namespace":
                                                             "default"},
             "spec": {"command": [sys.executable, "-c", "import sys; sys.exit(3)"]}}
    cloud.apply(crash)

    def crash_state() -> tuple[str, int, int]:
        entries = (cloud.get("App", "crash").get("status") or {}).get("replicas") or [{}]
        e = entries[0]
        return str(e.get("phase")), int(e.get("restarts") or 0), int(e.get("lastExitCode") or 0)
    wait_until(lambda: crash_state()[0] == "CrashLoopBackOff" and crash_state()[1] >= 2, 60,
               what="CrashLoopBackOff after repeated failures")
    assert crash_state()[2] == 3

    # An edge restarted while the cloud is away restarts its apps from its cache.
    cloud.apply(sleeper_app("steady", marker, 1))
    wait_until(lambda: len(processes(marker)) == 1, 60, what="the steady app running")
    (before,) = processes(marker)
    assert cloud.stop() == 0
    assert edge.stop() == 0
    assert not processes(marker), "stopping edgecore stops its apps"
    edge.start(wait_connected=False)
    wait_until(lambda: len(processes(marker)) == 1, 60, what="the app back from the cache")
    assert set(processes(marker)) != {before}

    # With the cloud back, deleting the Apps stops every process.
    cloud.start()
    edge.wait_synced(after=1)
    for name in ("tampered", "crash", "steady"):
        assert cloud.delete("App", name).status_code == 200
    wait_until(lambda: not processes(marker), 60, interval=0.5, what="every app stopped")
