"""Which objects each node should hold, and what changes when a Device moves."""

from __future__ import annotations

from typing import Any

from cloudcore.scope import NOWHERE, NodeScope, Transition, addressing_of
from protocol.resources import ObjectKey


def device(name: str, node: str | None, model: str | None = "m") -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if node:
        spec["nodeName"] = node
    if model:
        spec["deviceModelRef"] = {"name": model}
    return {"kind": "Device", "metadata": {"name": name, "namespace": "ns"}, "spec": spec}


D1 = ObjectKey("Device/ns/d1")
D2 = ObjectKey("Device/ns/d2")
M = ObjectKey("DeviceModel/ns/m")


def test_a_device_brings_its_model_to_its_node() -> None:
    scope = NodeScope()
    out = scope.apply(D1, addressing_of(device("d1", "a")))
    assert set(out) == {Transition("a", D1, True), Transition("a", M, True)}
    assert scope.keys_for("a") == {D1, M}
    assert scope.nodes_holding(M) == {"a"}


def test_a_device_without_a_node_goes_nowhere() -> None:
    scope = NodeScope()
    assert scope.apply(D1, addressing_of(device("d1", None))) == []


def test_the_model_stays_while_another_device_on_the_node_uses_it() -> None:
    scope = NodeScope()
    scope.apply(D1, addressing_of(device("d1", "a")))
    scope.apply(D2, addressing_of(device("d2", "a")))
    out = scope.apply(D1, NOWHERE)
    assert out == [Transition("a", D1, False)]
    assert scope.keys_for("a") == {D2, M}


def test_moving_a_device_deletes_it_from_the_old_node_and_sends_it_to_the_new() -> None:
    scope = NodeScope()
    scope.apply(D1, addressing_of(device("d1", "a")))
    out = scope.apply(D1, addressing_of(device("d1", "b")))
    assert set(out) == {
        Transition("a", D1, False), Transition("a", M, False),
        Transition("b", D1, True), Transition("b", M, True),
    }
    assert scope.keys_for("a") == set() and scope.nodes_holding(D1) == {"b"}


def test_changing_the_model_swaps_the_dependency_on_the_same_node() -> None:
    scope = NodeScope()
    scope.apply(D1, addressing_of(device("d1", "a", "m")))
    out = scope.apply(D1, addressing_of(device("d1", "a", "m2")))
    assert set(out) == {Transition("a", ObjectKey("DeviceModel/ns/m2"), True),
                        Transition("a", M, False)}


def test_an_app_replica_travels_to_its_node_only() -> None:
    replica = {"kind": "AppReplica", "metadata": {"name": "web-0", "namespace": "default"},
               "spec": {"app": "web", "index": 0, "nodeName": "edge-7",
                        "template": {"command": ["true"]}}}
    assert addressing_of(replica).nodes == frozenset({"edge-7"})
    assert addressing_of(replica).deps == frozenset()
