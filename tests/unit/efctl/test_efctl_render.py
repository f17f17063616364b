"""What efctl prints: ages, node readiness, tables, describe."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import protocol.kinds  # noqa: F401  (registers every kind)
from efctl.render import describe, human_age, node_status, object_ref, replica_table, table
from protocol.resources import REGISTRY

NOW = datetime(2026, 1, 2, 12, 0, 0, tzinfo=UTC)
NODE = REGISTRY.by_kind("Node")
DEVICE = REGISTRY.by_kind("Device")


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (59, "59s"), (119, "119s"), (130, "2m10s"), (600, "10m"), (3 * 3600, "3h"),
    (3 * 3600 + 20 * 60, "3h20m"), (20 * 3600, "20h"), (3 * 86400, "3d"),
    (2 * 86400 + 5 * 3600, "2d5h"), (400 * 86400, "400d"), (3 * 365 * 86400, "3y"),
])
def test_ages_read_like_kubectl(seconds: int, text: str) -> None:
    assert human_age(seconds) == text


@pytest.mark.parametrize(("conditions", "text"), [
    ([{"type": "Ready", "status": "True"}], "Ready"),
    ([{"type": "Ready", "status": "False"}], "NotReady"),
    ([{"type": "Ready", "status": "Unknown"}], "Unknown"),
    ([{"type": "MemoryPressure", "status": "False"}], "Unknown"),
    ([], "Unknown"),
])
def test_node_status_comes_from_the_ready_condition(conditions: list[dict[str, str]],
                                                    text: str) -> None:
    assert node_status({"status": {"conditions": conditions}}) == text


def test_cordoned_nodes_say_so() -> None:
    obj = {"spec": {"unschedulable": True},
           "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert node_status(obj) == "Ready,SchedulingDisabled"


def node(name: str, ready: str) -> dict[str, object]:
    return {"metadata": {"name": name, "creationTimestamp": "2026-01-02T11:00:00Z"},
            "status": {"conditions": [{"type": "Ready", "status": ready}],
                       "allocatable": {"cpu": "4", "memory": "8Gi"}}}


def test_table_has_name_columns_and_age_and_wide_adds_more() -> None:
    objs = [node("edge-1", "True"), node("edge-22", "False")]
    narrow = table(NODE, objs, wide=False, all_namespaces=False, now=NOW).splitlines()
    assert narrow[0].split() == ["NAME", "STATUS", "AGE"]
    assert narrow[1].split() == ["edge-1", "Ready", "60m"]
    assert narrow[2].split() == ["edge-22", "NotReady", "60m"]
    wide = table(NODE, objs, wide=True, all_namespaces=False, now=NOW).splitlines()
    assert wide[0].split() == ["NAME", "STATUS", "CPU", "MEMORY", "VERSION", "AGE"]
    assert wide[1].split() == ["edge-1", "Ready", "4", "8Gi", "<none>", "60m"]


def test_all_namespaces_adds_a_namespace_column() -> None:
    dev = {"metadata": {"name": "d1", "namespace": "ns-a"},
           "spec": {"nodeName": "edge-1", "deviceModelRef": {"name": "m"}}}
    lines = table(DEVICE, [dev], wide=False, all_namespaces=True, now=NOW).splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "NODE", "MODEL", "AGE"]
    assert lines[1].split() == ["ns-a", "d1", "edge-1", "m", "<none>"]


def test_object_refs_follow_kubectl() -> None:
    assert object_ref(DEVICE, "t1") == "device.devices.kubeedge.io/t1"
    assert object_ref(NODE, "edge-1") == "node/edge-1"


def test_describe_shows_metadata_spec_and_status() -> None:
    obj = {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
           "metadata": {"name": "d1", "namespace": "default", "labels": {"a": "1", "b": "2"},
                        "uid": "u-1", "resourceVersion": "7", "generation": 2,
                        "creationTimestamp": "2026-01-02T11:00:00Z"},
           "spec": {"nodeName": "edge-1"}, "status": {"state": "online"}}
    text = describe(DEVICE, obj)
    assert "Name:         d1" in text and "Namespace:    default" in text
    assert "Labels:       a=1" in text and "              b=2" in text
    assert "Annotations:  <none>" in text
    assert "Resource Version:" in text and "7" in text
    assert "Spec:\n  nodeName: edge-1" in text
    assert "Status:\n  state: online" in text


def test_app_replicas_show_node_phase_restarts_and_why_not_running() -> None:
    app = {"status": {"replicas": [
        {"index": 1, "node": None, "phase": "Pending", "reason": "Unschedulable",
         "message": "0/5 nodes: 3 insufficient cpu, 2 not ready"},
        {"index": 0, "node": "edge-a", "phase": "CrashLoopBackOff", "restarts": 4,
         "lastExitCode": 3, "reason": "Error"},
    ]}}
    lines = replica_table(app).splitlines()
    assert lines[0].split() == ["REPLICA", "NODE", "PHASE", "RESTARTS", "EXIT", "REASON",
                                "MESSAGE"]
    assert lines[1].split()[:6] == ["0", "edge-a", "CrashLoopBackOff", "4", "3", "Error"]
    assert lines[2].split()[:3] == ["1", "<none>", "Pending"]
    assert lines[2].endswith("0/5 nodes: 3 insufficient cpu, 2 not ready")
    assert replica_table({"status": {}}) == ""
