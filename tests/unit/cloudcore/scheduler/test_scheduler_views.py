"""Stored objects become the scheduler's views: what a replica's status entry means for
scheduling, Volcano's queue defaults, and a node's readiness and allocatable."""

from __future__ import annotations

from typing import Any

import protocol.kinds  # noqa: F401  (registers every kind)
from cloudcore.scheduler import (
    UNLIMITED,
    BoundReplica,
    JobView,
    QueueView,
    Resources,
    job_from_app,
    node_from_object,
    queue_from_object,
    queue_status,
    schedule,
    with_default_queue,
)
from protocol.kinds.scheduling import QUEUE
from protocol.resources import validate_object, validate_status

GI = 2**30
MI = 2**20


def app_object(name: str = "a", **spec: Any) -> dict[str, Any]:
    obj = {"apiVersion": "apps.edgefleet.io/v1alpha1", "kind": "App",
           "metadata": {"name": name, "namespace": "plant",
                        "creationTimestamp": "2025-01-01T00:00:00Z"},
           "spec": {"command": ["run"], **spec}}
    validate_object(obj)
    return obj


def node_object(name: str, ready: str = "True", **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": extra.pop("labels", {})},
            "spec": extra.pop("spec", {}),
            "status": {"conditions": [{"type": "Ready", "status": ready}],
                       "allocatable": extra.pop("allocatable", {"cpu": "4", "memory": "8Gi"})}}


def test_a_new_app_is_all_pending_with_defaults() -> None:
    job = job_from_app(app_object(replicas=3))
    assert job == JobView(key="plant/a", request=Resources(), queue="default", priority=0,
                          min_available=1, pending=(0, 1, 2),
                          created="2025-01-01T00:00:00Z")
    assert job_from_app(app_object()).pending == (0,)  # replicas defaults to 1


def test_spec_fields_reach_the_job() -> None:
    job = job_from_app(app_object(
        replicas=4, minAvailable=3, queue="team-a", priority=7,
        nodeSelector={"zone": "hall-1"}, schedulerName="other",
        resources={"requests": {"cpu": "250m"}, "limits": {"cpu": "1", "memory": "64Mi"}}))
    assert job.request == Resources(250, 64 * MI)  # memory request defaults to the limit
    assert (job.queue, job.priority, job.min_available) == ("team-a", 7, 3)
    assert job.node_selector == {"zone": "hall-1"}
    assert job.scheduler_name == "other"


def replica_object(index: int, node: str, phase: str | None = None, *,
                   terminating: bool = False, reason: str | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "apps.edgefleet.io/v1alpha1", "kind": "AppReplica",
        "metadata": {"name": f"a-{index}", "namespace": "plant",
                     "labels": {"apps.edgefleet.io/app": "a"}},
        "spec": {"app": "a", "index": index, "nodeName": node, "template": {"command": ["run"]},
                 "terminating": terminating}}
    status = {k: v for k, v in (("phase", phase), ("reason", reason)) if v is not None}
    if status:
        obj["status"] = status
    validate_object(obj)
    return obj


def test_appreplica_objects_decide_bound_pending_and_releasing() -> None:
    replicas = [
        replica_object(0, "n1", "Running"),
        replica_object(1, "n2", "CrashLoopBackOff"),
        replica_object(2, "n2", "Running", terminating=True),  # evicted, still stopping
        replica_object(3, "n1", "Succeeded"),
        replica_object(5, "n1", "Failed"),
        replica_object(6, "n3"),  # just bound, the edge has not reported yet
        replica_object(7, "n3", "Running", terminating=True, reason="Terminated"),  # stopped
    ]
    job = job_from_app(app_object(replicas=6), replicas)
    assert job.bound == (BoundReplica(0, "n1"), BoundReplica(1, "n2"),
                         BoundReplica(2, "n2", releasing=True), BoundReplica(6, "n3"))
    # Five replicas fill slots (0, 1, 3, 5 and 6: a Failed one is not replaced); the
    # sixth slot takes the lowest index no object uses - 2 is still taken while it stops.
    assert job.pending == (4,)
    assert job.completed == 1


def test_pending_replicas_take_the_lowest_free_indices() -> None:
    replicas = [replica_object(1, "n1", "Running"),
                replica_object(0, "n1", "Running", terminating=True)]
    assert job_from_app(app_object(replicas=4), replicas).pending == (2, 3, 4)


def test_queue_objects_take_volcano_defaults() -> None:
    assert queue_from_object({"metadata": {"name": "q"}, "spec": {}}) == QueueView("q")
    view = queue_from_object({
        "metadata": {"name": "team-vision"},
        "spec": {"weight": 2, "reclaimable": False, "priority": 3,
                 "capability": {"cpu": "64"},
                 "guarantee": {"resource": {"cpu": "4", "memory": "16Gi"}}},
        "status": {"state": "Closed"}})
    assert view == QueueView("team-vision", weight=2,
                             capability=Resources(64_000, UNLIMITED.memory),
                             guarantee=Resources(4_000, 16 * GI), reclaimable=False,
                             priority=3, open=False)


def test_node_objects() -> None:
    view = node_from_object(node_object("edge-1", labels={"zone": "a"},
                                        allocatable={"cpu": "3500m", "memory": "16314440Ki"}))
    assert (view.name, view.ready, view.unschedulable) == ("edge-1", True, False)
    assert view.allocatable == Resources(3_500, 16314440 * 1024)
    assert view.labels == {"zone": "a"}
    assert not node_from_object(node_object("x", ready="Unknown")).ready
    assert node_from_object(node_object("x", spec={"unschedulable": True})).unschedulable
    broken = node_from_object(node_object("x", allocatable={"cpu": "many", "memory": "1Gi"}))
    assert broken.allocatable == Resources(0, GI)


def test_there_is_always_a_default_queue() -> None:
    assert with_default_queue([]) == [QueueView("default")]
    mine = QueueView("default", weight=3)
    assert with_default_queue([mine, QueueView("x")]) == [mine, QueueView("x")]


def test_from_objects_to_bindings() -> None:
    nodes = [node_from_object(node_object(f"edge-{i}")) for i in range(3)]
    nodes.append(node_from_object(node_object("edge-down", ready="False")))
    apps = [app_object("web", replicas=3, resources={"requests": {"cpu": "1", "memory": "1Gi"}}),
            app_object("big", replicas=1, resources={"requests": {"cpu": "8"}})]
    result = schedule(nodes, with_default_queue([]), [job_from_app(a) for a in apps])
    assert sorted((b.job, b.node) for b in result.bindings) == [
        ("plant/web", "edge-0"), ("plant/web", "edge-1"), ("plant/web", "edge-2")]
    assert result.unschedulable == {"plant/big": "0/4 nodes: 3 insufficient cpu, 1 not ready"}


def test_an_app_that_requests_nothing_is_placed() -> None:
    # Its queue deserves nothing (it asks for nothing), so it is "overused" from the
    # start; replicas that take nothing from the share are placed all the same.
    nodes = [node_from_object(node_object("edge-0"))]
    result = schedule(nodes, with_default_queue([]), [job_from_app(app_object(replicas=3))])
    assert [(b.index, b.node) for b in result.bindings] == [
        (0, "edge-0"), (1, "edge-0"), (2, "edge-0")]
    assert result.nominations == ()
    assert result.unschedulable == {}


def test_unknown_queue_and_other_schedulers() -> None:
    nodes = [node_from_object(node_object("edge-0"))]
    lost = job_from_app(app_object("lost", queue="nowhere"))
    other = job_from_app(app_object("other", schedulerName="my-scheduler"))
    result = schedule(nodes, with_default_queue([]), [lost, other])
    assert result.bindings == ()
    assert result.unschedulable == {"plant/lost": "queue 'nowhere' does not exist"}


def test_queue_status_is_valid_for_the_queue_kind() -> None:
    # §5.8(b): after the session qa holds 6 tasks ⟨6 CPU, 48 GiB⟩ and deserves ⟨9, 52 GiB⟩.
    node = node_from_object(node_object("group-1", allocatable={"cpu": "18", "memory": "72Gi"}))
    qa = job_from_app(app_object("a", replicas=10, queue="qa",
                                 resources={"requests": {"cpu": "1", "memory": "8Gi"}}))
    qb = job_from_app(app_object("b", replicas=20, queue="qb",
                                 resources={"requests": {"cpu": "3", "memory": "1Gi"}}))
    result = schedule([node], [QueueView("qa"), QueueView("qb")], [qa, qb])
    status = queue_status(result.queues["qa"])
    assert status == {"allocated": {"cpu": "6", "memory": "48Gi"},
                      "deserved": {"cpu": "9", "memory": "52Gi"}, "state": "Open"}
    validate_status(QUEUE, status)
    assert queue_status(result.queues["qb"])["allocated"] == {"cpu": "9", "memory": "3Gi"}
