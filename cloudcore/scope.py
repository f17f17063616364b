"""Which objects each node should hold (pure).

An object is *addressed* to some nodes directly (a Device to its ``spec.nodeName``)
and may *depend* on other objects that must travel with it (a Device needs its
DeviceModel).  :class:`NodeScope` keeps, per node, a reference count for every key it
should hold, and reports each key that enters or leaves a node's scope, so the
dispatcher can send exactly the upserts and deletes that follow from one change.

Later kinds plug in by adding a rule to :data:`ADDRESSING_RULES`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from protocol.resources import ObjectKey, make_key
from protocol.routes import eventbus_source_node


@dataclass(frozen=True)
class Addressing:
    nodes: frozenset[str] = frozenset()
    deps: frozenset[ObjectKey] = frozenset()


NOWHERE = Addressing()


@dataclass(frozen=True)
class Transition:
    node: str
    key: ObjectKey
    present: bool  # True: entered the node's scope; False: left it


def _device_addressing(obj: Mapping[str, Any]) -> Addressing:
    spec = obj.get("spec") or {}
    node = spec.get("nodeName")
    if not node:
        return NOWHERE
    ns = (obj.get("metadata") or {}).get("namespace")
    model = (spec.get("deviceModelRef") or {}).get("name")
    deps = frozenset({make_key("DeviceModel", ns, model)}) if model else frozenset()
    return Addressing(nodes=frozenset({node}), deps=deps)


def _rule_addressing(obj: Mapping[str, Any]) -> Addressing:
    """A rule whose source is an edge topic travels to that edge (which subscribes to
    the topic), with both its endpoints so the edge can tell the source's type."""
    node = eventbus_source_node(obj)
    if not node:
        return NOWHERE
    ns = (obj.get("metadata") or {}).get("namespace")
    spec = obj.get("spec") or {}
    deps = frozenset(
        make_key("RuleEndpoint", ns, spec[side]) for side in ("source", "target") if spec.get(side)
    )
    return Addressing(nodes=frozenset({node}), deps=deps)


AddressingRule = Callable[[Mapping[str, Any]], Addressing]

# Kinds that are synced to edges, and how each one is addressed.  A kind that is only
# ever a dependency (DeviceModel) is addressed nowhere by itself.
ADDRESSING_RULES: dict[str, AddressingRule] = {
    "Device": _device_addressing,
    "DeviceModel": lambda _obj: NOWHERE,
    "Rule": _rule_addressing,
    "AppReplica": lambda obj: Addressing(nodes=frozenset({(obj.get("spec") or {})["nodeName"]})),
    "RuleEndpoint": lambda _obj: NOWHERE,
}


def addressing_of(obj: Mapping[str, Any]) -> Addressing:
    rule = ADDRESSING_RULES.get(str(obj.get("kind")))
    return rule(obj) if rule else NOWHERE


@dataclass
class NodeScope:
    _refs: dict[str, dict[ObjectKey, int]] = field(default_factory=lambda: defaultdict(dict))
    _edges: dict[ObjectKey, Addressing] = field(default_factory=dict)
    _holders: dict[ObjectKey, set[str]] = field(default_factory=lambda: defaultdict(set))

    def apply(self, key: ObjectKey, addressing: Addressing) -> list[Transition]:
        """Record that ``key`` is now addressed as given (NOWHERE once deleted) and
        return the keys that entered or left each node's scope."""
        old = self._edges.get(key, NOWHERE)
        if old == addressing:
            return []
        out: list[Transition] = []
        for node in old.nodes - addressing.nodes:
            self._decref(node, key, out)
            for dep in old.deps:
                self._decref(node, dep, out)
        for node in addressing.nodes - old.nodes:
            self._incref(node, key, out)
            for dep in addressing.deps:
                self._incref(node, dep, out)
        for node in old.nodes & addressing.nodes:
            for dep in addressing.deps - old.deps:
                self._incref(node, dep, out)
            for dep in old.deps - addressing.deps:
                self._decref(node, dep, out)
        if addressing == NOWHERE:
            self._edges.pop(key, None)
        else:
            self._edges[key] = addressing
        return out

    def _incref(self, node: str, key: ObjectKey, out: list[Transition]) -> None:
        refs = self._refs[node]
        refs[key] = refs.get(key, 0) + 1
        if refs[key] == 1:
            self._holders[key].add(node)
            out.append(Transition(node, key, True))

    def _decref(self, node: str, key: ObjectKey, out: list[Transition]) -> None:
        refs = self._refs[node]
        count = refs.get(key, 0) - 1
        if count <= 0:
            refs.pop(key, None)
            holders = self._holders.get(key)
            if holders is not None:
                holders.discard(node)
                if not holders:
                    del self._holders[key]
            out.append(Transition(node, key, False))
        else:
            refs[key] = count

    def nodes_holding(self, key: ObjectKey) -> set[str]:
        return set(self._holders.get(key, ()))

    def keys_for(self, node: str) -> set[ObjectKey]:
        return set(self._refs.get(node, ()))
