"""The apps controller against a real sqlite store: objects are applied as a user would,
Node readiness is set as the node lifecycle would, and AppReplica statuses are written
as an edge would; the controller's clock is driven by the test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

import protocol.kinds  # noqa: F401  (registers every kind)
from cloudcore.apps import AppsController, AppsControllerConfig
from cloudcore.store.sqlite import SqliteStore
from protocol.errors import NotFound
from protocol.kinds.appreplicas import APP_LABEL, APP_REPLICA
from protocol.kinds.apps import APP
from protocol.kinds.nodegroups import NODE_GROUP
from protocol.kinds.scheduling import QUEUE
from protocol.resources import validate_object, validate_status
from protocol.selectors import parse_selector

T = TypeVar("T")
TOLERATION = 60
LOST_NODE = 120


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    store: SqliteStore
    controller: AppsController
    clock: Clock


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = SqliteStore.open(tmp_path / "store.db")
    clock = Clock()
    controller = AppsController(
        store,
        AppsControllerConfig(debounce_seconds=0.01, recheck_seconds=0.02,
                             lost_node_seconds=LOST_NODE),
        clock=clock)
    await controller.start()
    yield Env(store, controller, clock)
    await controller.stop()
    await store.close()


# --- helpers -------------------------------------------------------------------------------


WAIT_SECONDS = 10.0


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    """Poll ``probe`` until it returns something truthy, or fail after WAIT_SECONDS."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECONDS
    while True:
        value = await probe()
        if value:
            return value
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def apply(store: SqliteStore, obj: dict[str, Any]) -> dict[str, Any]:
    _, valid = validate_object(obj)
    stored, _ = await store.apply(valid)
    return stored


async def add_node(store: SqliteStore, name: str, labels: dict[str, str] | None = None, *,
                   cpu: str = "4", memory: str = "8Gi", ready: str = "True") -> None:
    await apply(store, {"apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": name, "labels": labels or {}}, "spec": {}})
    await store.update_status("Node", None, name, {
        "conditions": [{"type": "Ready", "status": ready}],
        "capacity": {"cpu": cpu, "memory": memory},
        "allocatable": {"cpu": cpu, "memory": memory}})


async def set_ready(store: SqliteStore, name: str, ready: str) -> None:
    node = await store.get("Node", None, name)
    status = dict(node["status"])
    status["conditions"] = [{"type": "Ready", "status": ready}]
    await store.update_status("Node", None, name, status)


def app(name: str, replicas: int, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "apps.edgefleet.io/v1alpha1", "kind": "App",
            "metadata": {"name": name, "namespace": "plant"},
            "spec": {"command": ["python3", "main.py"], "replicas": replicas, **spec}}


def node_group(name: str, nodes: list[str] | None = None,
               match_labels: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if nodes is not None:
        spec["nodes"] = nodes
    if match_labels is not None:
        spec["matchLabels"] = match_labels
    return {"apiVersion": "apps.kubeedge.io/v1alpha1", "kind": "NodeGroup",
            "metadata": {"name": name}, "spec": spec}


def select_app(name: str) -> list[dict[str, Any]]:
    return [{"apiVersion": "apps.edgefleet.io/v1alpha1", "kind": "App", "name": name}]


def divided_1_2_3(app_name: str, **extra: Any) -> dict[str, Any]:
    weights = [{"targetCluster": {"clusterNames": [group]}, "weight": weight}
               for group, weight in (("g-a", 1), ("g-b", 2), ("g-c", 3))]
    return {"apiVersion": "policy.edgefleet.io/v1alpha1", "kind": "PropagationPolicy",
            "metadata": {"name": f"{app_name}-policy", "namespace": "plant"},
            "spec": {"resourceSelectors": select_app(app_name),
                     "placement": {
                         "clusterAffinity": {"clusterNames": ["g-a", "g-b", "g-c"]},
                         "replicaScheduling": {"replicaSchedulingType": "Divided",
                                               "replicaDivisionPreference": "Weighted",
                                               "weightPreference": {"staticWeightList": weights}}},
                     **extra}}


async def three_groups(store: SqliteStore) -> dict[str, list[str]]:
    """Groups g-a, g-b, g-c of two nodes each (g-a by name, the others by label)."""
    members: dict[str, list[str]] = {}
    for group in ("g-a", "g-b", "g-c"):
        members[group] = [f"{group}-n{i}" for i in (1, 2)]
        for node in members[group]:
            await add_node(store, node, {"site": group})
    await apply(store, node_group("g-a", nodes=members["g-a"]))
    await apply(store, node_group("g-b", match_labels={"site": "g-b"}))
    await apply(store, node_group("g-c", match_labels={"site": "g-c"}))
    return members


async def replicas_of(store: SqliteStore, app_name: str) -> list[dict[str, Any]]:
    items, _ = await store.list("AppReplica", "plant", parse_selector(f"{APP_LABEL}={app_name}"))
    return items


def live(replicas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in replicas if not r["spec"]["terminating"]]


def per_group(replicas: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in live(replicas):
        out[r["spec"]["nodeGroup"]] = out.get(r["spec"]["nodeGroup"], 0) + 1
    return out


async def report(store: SqliteStore, replica: dict[str, Any], phase: str,
                 reason: str | None = None) -> None:
    """Write an AppReplica's status as its edge would."""
    status: dict[str, Any] = {"phase": phase, "restarts": 0}
    if reason is not None:
        status["reason"] = reason
    validate_status(APP_REPLICA, status)
    await store.update_status("AppReplica", "plant", replica["metadata"]["name"], status)


async def app_status(store: SqliteStore, name: str) -> dict[str, Any]:
    obj = await store.get("App", "plant", name)
    status: dict[str, Any] = obj.get("status") or {}
    return status


async def settled(env: Env) -> int:
    """Let the controller complete a round that started after everything so far was
    written (two triggered rounds: the first may have been under way); the store's
    resourceVersion after it."""
    for _ in range(2):
        rounds = env.controller.rounds
        env.controller.trigger()

        async def another_round(rounds: int = rounds) -> bool:
            return env.controller.rounds > rounds

        await eventually(another_round, "the controller to complete a round")
    return env.store.current_rv()


# --- (a) division over node groups -----------------------------------------------------------


async def test_an_app_divided_1_2_3_gets_2_3_5_replicas_on_the_right_nodes(env: Env) -> None:
    members = await three_groups(env.store)
    await apply(env.store, divided_1_2_3("web"))
    await apply(env.store, app("web", 10, resources={"requests": {"cpu": "100m"}}))

    async def divided() -> list[dict[str, Any]] | None:
        items = await replicas_of(env.store, "web")
        return items if per_group(items) == {"g-a": 2, "g-b": 3, "g-c": 5} else None

    replicas = await eventually(divided, "2/3/5 AppReplicas")
    assert sorted(r["spec"]["index"] for r in replicas) == list(range(10))
    for replica in replicas:
        validate_object(replica)  # the contract the edge reads
        spec = replica["spec"]
        assert spec["nodeName"] in members[spec["nodeGroup"]]
        assert replica["metadata"]["name"] == f"web-{spec['index']}"
        assert replica["metadata"]["labels"][APP_LABEL] == "web"
        assert spec["template"]["command"] == ["python3", "main.py"]
    # Least-allocated scoring spreads a group's replicas over its nodes.
    on_c = [r["spec"]["nodeName"] for r in replicas if r["spec"]["nodeGroup"] == "g-c"]
    assert sorted(on_c.count(n) for n in members["g-c"]) == [2, 3]

    status = await app_status(env.store, "web")
    validate_status(APP, status)
    assert status["placement"]["groups"] == {"g-a": 2, "g-b": 3, "g-c": 5}
    assert status["placement"]["policy"] == "web-policy"
    assert [e["index"] for e in status["replicas"]] == list(range(10))
    assert status["readyReplicas"] == 0
    assert status["conditions"][0]["status"] == "True"

    # The edges report Running: the App counts them ready.
    for replica in replicas:
        await report(env.store, replica, "Running")

    async def ready() -> bool:
        return (await app_status(env.store, "web")).get("readyReplicas") == 10

    await eventually(ready, "10 ready replicas")
    # Once converged, a round writes nothing.
    rv = await settled(env)
    assert await settled(env) == rv


# --- (b) failover ------------------------------------------------------------------------------


async def test_a_group_without_ready_nodes_loses_its_replicas_after_the_toleration(
        env: Env) -> None:
    members = await three_groups(env.store)
    failover = {"application": {"decisionConditions": {"tolerationSeconds": TOLERATION}}}
    await apply(env.store, divided_1_2_3("web", failover=failover))
    await apply(env.store, app("web", 10))

    async def divided() -> list[dict[str, Any]] | None:
        items = await replicas_of(env.store, "web")
        return items if per_group(items) == {"g-a": 2, "g-b": 3, "g-c": 5} else None

    before = {r["metadata"]["name"]: r for r in await eventually(divided, "2/3/5 replicas")}
    on_a = sorted(n for n, r in before.items() if r["spec"]["nodeGroup"] == "g-a")

    for node in members["g-a"]:
        await set_ready(env.store, node, "False")

    async def group_down() -> bool:
        group = await env.store.get("NodeGroup", None, "g-a")
        return (group.get("status") or {}).get("readyNodes") == 0

    await eventually(group_down, "g-a to report no Ready node")

    # Within the toleration nothing moves.
    env.clock.now += TOLERATION - 1
    await settled(env)
    assert per_group(await replicas_of(env.store, "web")) == {"g-a": 2, "g-b": 3, "g-c": 5}

    # Past it, g-a's replicas are taken away and re-placed on the other groups
    # (static weights 2:3 over what is left: 4/6).
    env.clock.now += 2

    async def failed_over() -> list[dict[str, Any]] | None:
        items = await replicas_of(env.store, "web")
        return items if per_group(items) == {"g-b": 4, "g-c": 6} else None

    after = {r["metadata"]["name"]: r for r in await eventually(failed_over, "failover")}
    for name in on_a:
        assert after[name]["spec"]["terminating"] is True
        assert after[name]["metadata"]["annotations"][
            "apps.edgefleet.io/termination-reason"] == "FailedOver"
    for name, replica in before.items():
        if name not in on_a:  # replicas on healthy groups are untouched
            assert after[name]["metadata"]["uid"] == replica["metadata"]["uid"]
            assert after[name]["spec"] == replica["spec"]
    new = [r for n, r in after.items() if n not in before]
    assert len(new) == 2
    assert all(r["spec"]["nodeName"] not in members["g-a"] for r in new)
    status = await app_status(env.store, "web")
    assert status["placement"]["groups"] == {"g-b": 4, "g-c": 6}

    # g-a's edges cannot confirm the stop; once their nodes have been gone long enough
    # the replicas are deleted anyway.
    env.clock.now += LOST_NODE

    async def cleaned_up() -> bool:
        names = {r["metadata"]["name"] for r in await replicas_of(env.store, "web")}
        return not names & set(on_a)

    await eventually(cleaned_up, "g-a's replicas to be deleted")
    # g-a coming back does not move anything back.
    for node in members["g-a"]:
        await set_ready(env.store, node, "True")
    await settled(env)
    assert per_group(await replicas_of(env.store, "web")) == {"g-b": 4, "g-c": 6}


# --- (c) overrides ------------------------------------------------------------------------------


async def test_an_override_policy_gives_one_group_different_args(env: Env) -> None:
    await three_groups(env.store)
    await apply(env.store, divided_1_2_3("web"))
    await apply(env.store, {
        "apiVersion": "policy.edgefleet.io/v1alpha1", "kind": "OverridePolicy",
        "metadata": {"name": "web-b", "namespace": "plant"},
        "spec": {"resourceSelectors": select_app("web"),
                 "overrideRules": [{"targetCluster": {"clusterNames": ["g-b"]},
                                    "overriders": {"argsOverrider": [
                                        {"operator": "add", "value": ["--line", "b"]}]}}]}})
    await apply(env.store, app("web", 6, args=["--serve"]))

    async def placed() -> list[dict[str, Any]] | None:
        items = await replicas_of(env.store, "web")
        return items if len(live(items)) == 6 else None

    replicas = await eventually(placed, "6 replicas")
    args = {r["spec"]["nodeGroup"]: r["spec"]["template"]["args"] for r in replicas}
    assert args == {"g-a": ["--serve"], "g-b": ["--serve", "--line", "b"], "g-c": ["--serve"]}

    # Changing the App reaches the running replicas' templates, overrides still applied.
    await apply(env.store, app("web", 6, args=["--serve", "--fast"]))

    async def updated() -> dict[str, list[str]] | None:
        items = await replicas_of(env.store, "web")
        got = {r["spec"]["nodeGroup"]: r["spec"]["template"]["args"] for r in items}
        return got if got["g-a"] == ["--serve", "--fast"] else None

    assert await eventually(updated, "templates to follow the App") == {
        "g-a": ["--serve", "--fast"], "g-b": ["--serve", "--fast", "--line", "b"],
        "g-c": ["--serve", "--fast"]}


# --- (d) unschedulable ----------------------------------------------------------------------------


async def test_an_unschedulable_app_explains_itself(env: Env) -> None:
    for i in range(3):
        await add_node(env.store, f"small-{i}", cpu="1")
    for i in range(2):
        await add_node(env.store, f"down-{i}", cpu="8", ready="False")
    await apply(env.store, app("big", 2, resources={"requests": {"cpu": "2"}}))

    async def explained() -> dict[str, Any] | None:
        status = await app_status(env.store, "big")
        return status if status.get("message") else None

    status = await explained_status(explained)
    assert status["message"] == "0/5 nodes: 3 insufficient cpu, 2 not ready"
    validate_status(APP, status)
    assert status["conditions"][0]["status"] == "False"
    assert status["conditions"][0]["reason"] == "Unschedulable"
    assert [(e["index"], e["phase"], e["reason"]) for e in status["replicas"]] == [
        (0, "Pending", "Unschedulable"), (1, "Pending", "Unschedulable")]
    assert await replicas_of(env.store, "big") == []

    # Within a node group the count is over the group's own nodes.
    await apply(env.store, node_group("small", match_labels={"size": "small"}))
    for i in range(3):
        await apply(env.store, {"apiVersion": "v1", "kind": "Node",
                                "metadata": {"name": f"small-{i}", "labels": {"size": "small"}},
                                "spec": {}})
    await apply(env.store, {
        "apiVersion": "policy.edgefleet.io/v1alpha1", "kind": "PropagationPolicy",
        "metadata": {"name": "big", "namespace": "plant"},
        "spec": {"resourceSelectors": select_app("big"),
                 "placement": {"clusterAffinity": {"clusterNames": ["small"]},
                               "replicaScheduling": {"replicaSchedulingType": "Divided"}}}})

    async def per_group_message() -> str | None:
        message = (await app_status(env.store, "big")).get("message", "")
        return message if message.startswith("node group") else None

    assert await eventually(per_group_message, "a per-group explanation") == \
        "node group small: 0/3 nodes: 3 insufficient cpu"


async def explained_status(probe: Callable[[], Awaitable[dict[str, Any] | None]]
                           ) -> dict[str, Any]:
    return await eventually(probe, "the App to explain why it is not placed")


# --- (e) scale down ------------------------------------------------------------------------------


async def test_scaling_down_stops_the_highest_indices_then_deletes_them(env: Env) -> None:
    for i in range(2):
        await add_node(env.store, f"edge-{i}")
    await apply(env.store, app("web", 4))

    async def four() -> list[dict[str, Any]] | None:
        items = await replicas_of(env.store, "web")
        return items if len(items) == 4 else None

    for replica in await eventually(four, "4 replicas"):
        await report(env.store, replica, "Running")
    await apply(env.store, app("web", 2))

    async def two_stopping() -> list[dict[str, Any]] | None:
        items = await replicas_of(env.store, "web")
        stopping = sorted(r["spec"]["index"] for r in items if r["spec"]["terminating"])
        return items if stopping == [2, 3] else None

    items = await eventually(two_stopping, "indices 2 and 3 to be terminating")
    assert sorted(r["spec"]["index"] for r in live(items)) == [0, 1]
    status = await app_status(env.store, "web")
    assert [(e["index"], e.get("reason")) for e in status["replicas"]] == [
        (0, None), (1, None), (2, "ScaledDown"), (3, "ScaledDown")]
    assert status["readyReplicas"] == 2

    # Still stopping: kept.  Reported Terminated by its edge: deleted.
    by_index = {r["spec"]["index"]: r for r in items}
    await report(env.store, by_index[3], "Succeeded", reason="Terminated")

    async def three_gone() -> bool:
        names = {r["metadata"]["name"] for r in await replicas_of(env.store, "web")}
        return names == {"web-0", "web-1", "web-2"}

    await eventually(three_gone, "web-3 to be deleted")
    await settled(env)
    assert {r["metadata"]["name"] for r in await replicas_of(env.store, "web")} == {
        "web-0", "web-1", "web-2"}
    await report(env.store, by_index[2], "Failed", reason="Terminated")

    async def two_left() -> bool:
        names = {r["metadata"]["name"] for r in await replicas_of(env.store, "web")}
        return names == {"web-0", "web-1"}

    await eventually(two_left, "web-2 to be deleted")
    status = await app_status(env.store, "web")
    assert [e["index"] for e in status["replicas"]] == [0, 1]


async def test_deleting_an_app_stops_every_replica(env: Env) -> None:
    await add_node(env.store, "edge-0")
    await apply(env.store, app("web", 3))

    async def three() -> bool:
        return len(await replicas_of(env.store, "web")) == 3

    await eventually(three, "3 replicas")
    await env.store.delete("App", "plant", "web")

    async def all_stopping() -> list[dict[str, Any]] | None:
        items = await replicas_of(env.store, "web")
        return items if all(r["spec"]["terminating"] for r in items) else None

    for replica in await eventually(all_stopping, "every replica to be terminating"):
        await report(env.store, replica, "Succeeded", reason="Terminated")

    async def none_left() -> bool:
        return await replicas_of(env.store, "web") == []

    await eventually(none_left, "every replica to be deleted")


# --- (f) node group status -----------------------------------------------------------------------


async def test_node_group_status_counts_ready_nodes_and_sums_allocatable(env: Env) -> None:
    await add_node(env.store, "hall-1", {"hall": "1"}, cpu="2", memory="4Gi")
    await add_node(env.store, "hall-2", {"hall": "1"}, cpu="1500m", memory="2Gi")
    await add_node(env.store, "hall-3", {"hall": "1"}, cpu="4", memory="8Gi", ready="False")
    await apply(env.store, node_group("hall", match_labels={"hall": "1"}))
    # A second group claiming hall-1 (and a node that does not exist): "hall" sorts
    # first and keeps hall-1.
    await apply(env.store, node_group("line", nodes=["hall-1", "ghost"]))

    async def status_of(name: str, ready: int) -> dict[str, Any] | None:
        group = await env.store.get("NodeGroup", None, name)
        status: dict[str, Any] = group.get("status") or {}
        return status if status.get("readyNodes") == ready else None

    hall = await eventually(lambda: status_of("hall", 2), "hall's status")
    validate_status(NODE_GROUP, hall)
    assert hall["allocatable"] == {"cpu": "3500m", "memory": "6Gi"}
    assert hall["nodeStatuses"] == [
        {"nodeName": "hall-1", "readyStatus": "Ready", "selectionStatus": "Succeeded"},
        {"nodeName": "hall-2", "readyStatus": "Ready", "selectionStatus": "Succeeded"},
        {"nodeName": "hall-3", "readyStatus": "NotReady", "selectionStatus": "Succeeded"}]
    line = await eventually(lambda: status_of("line", 0), "line's status")
    validate_status(NODE_GROUP, line)
    assert [(s["nodeName"], s["selectionStatus"]) for s in line["nodeStatuses"]] == [
        ("ghost", "Failed"), ("hall-1", "Failed")]
    assert "NodeGroup hall" in line["nodeStatuses"][1]["selectionStatusReason"]
    assert line["allocatable"] == {"cpu": "0", "memory": "0"}

    await set_ready(env.store, "hall-3", "True")
    hall = await eventually(lambda: status_of("hall", 3), "hall-3 to count as Ready")
    assert hall["allocatable"] == {"cpu": "7500m", "memory": "14Gi"}


# --- (g) gang -----------------------------------------------------------------------------------


async def test_a_gang_that_cannot_fully_fit_creates_no_replicas(env: Env) -> None:
    for i in range(2):
        await add_node(env.store, f"edge-{i}", cpu="2")
    await apply(env.store, app("gang", 3, minAvailable=3,
                               resources={"requests": {"cpu": "1500m"}}))

    async def explained() -> dict[str, Any] | None:
        status = await app_status(env.store, "gang")
        return status if status.get("message") else None

    status = await explained_status(explained)
    assert "minAvailable" in status["message"], status["message"]
    assert "0/2 nodes: 2 insufficient cpu" in status["message"], status["message"]
    await settled(env)
    assert await replicas_of(env.store, "gang") == []

    # A third node makes room for the whole gang: all three at once.
    await add_node(env.store, "edge-2", cpu="2")

    async def placed() -> list[dict[str, Any]] | None:
        items = await replicas_of(env.store, "gang")
        return items if items else None

    items = await eventually(placed, "the gang to be placed")
    assert sorted(r["spec"]["nodeName"] for r in items) == ["edge-0", "edge-1", "edge-2"]


async def test_apps_of_another_scheduler_are_left_alone(env: Env) -> None:
    await add_node(env.store, "edge-0")
    await apply(env.store, app("theirs", 2, schedulerName="someone-else"))
    await apply(env.store, app("ours", 1))

    async def ours_placed() -> bool:
        return len(await replicas_of(env.store, "ours")) == 1

    await eventually(ours_placed, "our App to be placed")
    await settled(env)
    assert await replicas_of(env.store, "theirs") == []
    assert "status" not in await env.store.get("App", "plant", "theirs")


async def test_a_replica_whose_node_is_deleted_is_replaced(env: Env) -> None:
    await add_node(env.store, "edge-0")
    await add_node(env.store, "edge-1")
    await apply(env.store, app("web", 2, resources={"requests": {"cpu": "1"}}))

    async def two() -> list[dict[str, Any]] | None:
        items = await replicas_of(env.store, "web")
        return items if len(items) == 2 else None

    items = await eventually(two, "2 replicas")
    assert sorted(r["spec"]["nodeName"] for r in items) == ["edge-0", "edge-1"]
    await env.store.delete("Node", None, "edge-1")

    async def both_on_edge_0() -> bool:
        got = await replicas_of(env.store, "web")
        return len(got) == 2 and {r["spec"]["nodeName"] for r in got} == {"edge-0"}

    await eventually(both_on_edge_0, "the lost replica to be re-created on edge-0")
    with pytest.raises(NotFound):
        await env.store.get("Node", None, "edge-1")


async def test_a_gang_spread_over_groups_is_placed_whole_or_not_at_all(env: Env) -> None:
    for node, ready in (("a1", "True"), ("a2", "True"), ("b1", "True"), ("b2", "False")):
        await add_node(env.store, node, {"site": node[0]}, cpu="1", ready=ready)
    await apply(env.store, node_group("g-a", match_labels={"site": "a"}))
    await apply(env.store, node_group("g-b", match_labels={"site": "b"}))
    await apply(env.store, {
        "apiVersion": "policy.edgefleet.io/v1alpha1", "kind": "PropagationPolicy",
        "metadata": {"name": "gang", "namespace": "plant"},
        "spec": {"resourceSelectors": select_app("gang"),
                 "placement": {"replicaScheduling": {"replicaSchedulingType": "Divided"}}}})
    await apply(env.store, app("gang", 4, minAvailable=4, resources={"requests": {"cpu": "1"}}))

    async def explained() -> dict[str, Any] | None:
        status = await app_status(env.store, "gang")
        return status if "minAvailable" in status.get("message", "") else None

    status = await explained_status(explained)
    # g-a could take its two, g-b only one of its two: nothing is created anywhere.
    assert status["placement"]["groups"] == {"g-a": 2, "g-b": 2}
    assert "node group g-b: " in status["message"], status["message"]
    await settled(env)
    assert await replicas_of(env.store, "gang") == []

    await set_ready(env.store, "b2", "True")

    async def placed() -> list[dict[str, Any]] | None:
        items = await replicas_of(env.store, "gang")
        return items if items else None

    items = await eventually(placed, "the gang to be placed")
    assert sorted(r["spec"]["nodeName"] for r in items) == ["a1", "a2", "b1", "b2"]


async def test_queue_status_shows_what_its_apps_hold(env: Env) -> None:
    await add_node(env.store, "edge-0", cpu="4", memory="8Gi")
    await apply(env.store, {"apiVersion": "scheduling.edgefleet.io/v1alpha1", "kind": "Queue",
                            "metadata": {"name": "team-a"}, "spec": {"weight": 2}})
    await apply(env.store, app("web", 2, queue="team-a",
                               resources={"requests": {"cpu": "1", "memory": "1Gi"}}))

    async def queue_status() -> dict[str, Any] | None:
        queue = await env.store.get("Queue", None, "team-a")
        status: dict[str, Any] = queue.get("status") or {}
        return status if status.get("allocated", {}).get("cpu") == "2" else None

    status = await eventually(queue_status, "the queue's allocation")
    assert status == {"allocated": {"cpu": "2", "memory": "2Gi"},
                      "deserved": {"cpu": "2", "memory": "2Gi"}, "state": "Open"}
    validate_status(QUEUE, status)


async def test_a_higher_priority_app_preempts_and_binds_once_the_victim_stopped(
        env: Env) -> None:
    await add_node(env.store, "edge-0", cpu="2")
    await apply(env.store, app("low", 2, resources={"requests": {"cpu": "1"}}))

    async def low_placed() -> list[dict[str, Any]] | None:
        items = await replicas_of(env.store, "low")
        return items if len(items) == 2 else None

    for replica in await eventually(low_placed, "low's two replicas"):
        await report(env.store, replica, "Running")
    await apply(env.store, app("high", 1, priority=10, resources={"requests": {"cpu": "1"}}))

    async def victim() -> dict[str, Any] | None:
        for replica in await replicas_of(env.store, "low"):
            if replica["spec"]["terminating"]:
                return replica
        return None

    evicted = await eventually(victim, "a replica of low to be evicted")
    assert evicted["metadata"]["annotations"][
        "apps.edgefleet.io/termination-reason"] == "Evicted"

    async def nominated() -> dict[str, Any] | None:
        status = await app_status(env.store, "high")
        entries = status.get("replicas") or []
        return status if entries and entries[0].get("reason") == "Nominated" else None

    await eventually(nominated, "high to wait for the victim")
    assert await replicas_of(env.store, "high") == []  # not bound before the victim stops

    await report(env.store, evicted, "Succeeded", reason="Terminated")

    async def high_bound() -> list[dict[str, Any]] | None:
        items = await replicas_of(env.store, "high")
        return items if items else None

    (bound,) = await eventually(high_bound, "high to be bound")
    assert bound["spec"]["nodeName"] == "edge-0"
    await settled(env)
    assert len(live(await replicas_of(env.store, "low"))) == 1
    low = await app_status(env.store, "low")
    assert low["message"] == "0/1 nodes: 1 insufficient cpu"


async def test_an_override_that_breaks_the_app_places_nothing_in_that_group(env: Env) -> None:
    await three_groups(env.store)
    await apply(env.store, divided_1_2_3("web"))
    await apply(env.store, {
        "apiVersion": "policy.edgefleet.io/v1alpha1", "kind": "OverridePolicy",
        "metadata": {"name": "web-c", "namespace": "plant"},
        "spec": {"resourceSelectors": select_app("web"),
                 "overrideRules": [{"targetCluster": {"clusterNames": ["g-c"]},
                                    "overriders": {"plaintext": [
                                        {"path": "/spec/command", "operator": "replace",
                                         "value": []}]}}]}})
    await apply(env.store, app("web", 6))

    async def explained() -> dict[str, Any] | None:
        status = await app_status(env.store, "web")
        return status if "node group g-c" in status.get("message", "") else None

    status = await explained_status(explained)
    assert "the App as rendered is invalid" in status["message"], status["message"]
    assert "spec.template.command" in status["message"], status["message"]
    await settled(env)
    assert per_group(await replicas_of(env.store, "web")) == {"g-a": 1, "g-b": 2}
    waiting = [e for e in (await app_status(env.store, "web"))["replicas"] if "node" not in e]
    assert len(waiting) == 3 and all(e["reason"] == "Unschedulable" for e in waiting)


# --- (h) a settled App still follows what changes around it ---------------------------------------
# Once an App is placed and nothing about it changes, a round reuses its placement from the
# round before; these check that what it depends on beyond the App itself still counts.


async def test_an_override_policy_added_later_reaches_a_settled_app(env: Env) -> None:
    await three_groups(env.store)
    await apply(env.store, divided_1_2_3("web"))
    await apply(env.store, app("web", 6, args=["--serve"]))

    async def placed() -> list[dict[str, Any]] | None:
        items = await replicas_of(env.store, "web")
        return items if len(live(items)) == 6 else None

    await eventually(placed, "6 replicas")
    await settled(env)
    await settled(env)  # a round with nothing to do: the App is reused as it was
    await apply(env.store, {
        "apiVersion": "policy.edgefleet.io/v1alpha1", "kind": "OverridePolicy",
        "metadata": {"name": "web-b", "namespace": "plant"},
        "spec": {"resourceSelectors": select_app("web"),
                 "overrideRules": [{"targetCluster": {"clusterNames": ["g-b"]},
                                    "overriders": {"argsOverrider": [
                                        {"operator": "add", "value": ["--line", "b"]}]}}]}})

    async def overridden() -> dict[str, list[str]] | None:
        items = await replicas_of(env.store, "web")
        got = {r["spec"]["nodeGroup"]: r["spec"]["template"]["args"] for r in items}
        return got if got.get("g-b") == ["--serve", "--line", "b"] else None

    assert await eventually(overridden, "the override to reach g-b") == {
        "g-a": ["--serve"], "g-b": ["--serve", "--line", "b"], "g-c": ["--serve"]}


async def test_a_settled_app_follows_a_node_group_relabelled_into_an_override(
        env: Env) -> None:
    await three_groups(env.store)
    await apply(env.store, divided_1_2_3("web"))
    await apply(env.store, {
        "apiVersion": "policy.edgefleet.io/v1alpha1", "kind": "OverridePolicy",
        "metadata": {"name": "gold-args", "namespace": "plant"},
        "spec": {"resourceSelectors": select_app("web"),
                 "overrideRules": [{"targetCluster": {"labelSelector": {
                     "matchLabels": {"tier": "gold"}}},
                     "overriders": {"argsOverrider": [
                         {"operator": "add", "value": ["--gold"]}]}}]}})
    await apply(env.store, app("web", 6, args=["--serve"]))

    async def placed() -> list[dict[str, Any]] | None:
        items = await replicas_of(env.store, "web")
        return items if len(live(items)) == 6 else None

    await eventually(placed, "6 replicas")
    await settled(env)
    await settled(env)
    # Only the group's labels change: not its nodes, not the App, not a policy.
    await apply(env.store, {**node_group("g-b", match_labels={"site": "g-b"}),
                            "metadata": {"name": "g-b", "labels": {"tier": "gold"}}})

    async def gold() -> dict[str, list[str]] | None:
        items = await replicas_of(env.store, "web")
        got = {r["spec"]["nodeGroup"]: r["spec"]["template"]["args"] for r in items}
        return got if got.get("g-b") == ["--serve", "--gold"] else None

    assert await eventually(gold, "g-b's replicas to take the gold override") == {
        "g-a": ["--serve"], "g-b": ["--serve", "--gold"], "g-c": ["--serve"]}
