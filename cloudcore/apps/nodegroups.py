"""Which nodes belong to which NodeGroup, and the status each NodeGroup shows.

A node belongs to a group when the group lists it in ``spec.nodes`` or the node carries
every ``spec.matchLabels`` pair (KubeEdge's rule, :func:`group_member_names`).  A node
may be claimed by several groups, but placement needs one answer - a replica on it is
rendered with one group's overrides and counted against one group's share - so the
group whose name sorts first keeps it; the others list it with ``selectionStatus:
Failed`` and say which group has it.  A name in ``spec.nodes`` that is no Node is listed
as Failed too, so a typo shows.

Status, in KubeEdge's shape plus edgefleet's two fields:

- ``nodeStatuses``: every node the group claims, sorted by name, with ``readyStatus``
  Ready / NotReady / Unknown (the Node's Ready condition True / False / anything else);
- ``readyNodes``: the members that are Ready (0 = the group is down, for failover);
- ``allocatable``: the summed allocatable cpu and memory of the *Ready* members - what
  the group can run now, the figure capacity-aware placement divides by.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cloudcore.scheduler.model import NodeView
from cloudcore.scheduler.resources import ZERO, Resources
from protocol.quantity import format_cpu, format_memory
from protocol.resources import dig

SUCCEEDED = "Succeeded"
FAILED = "Failed"


def ready_status(node: Mapping[str, Any]) -> str:
    """KubeEdge's ``readyStatus`` for a Node object."""
    for cond in dig(node, "status.conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == "Ready":
            return {"True": "Ready", "False": "NotReady"}.get(str(cond.get("status")),
                                                              "Unknown")
    return "Unknown"


@dataclass(frozen=True)
class Membership:
    """``group_of``: node -> the one group it belongs to.  ``members``: group -> its
    nodes (sorted).  ``statuses``: group -> the status it should show."""

    group_of: Mapping[str, str]
    members: Mapping[str, tuple[str, ...]]
    statuses: Mapping[str, dict[str, Any]]


def resolve_membership(groups: Sequence[Mapping[str, Any]],
                       nodes: Mapping[str, NodeView],
                       readiness: Mapping[str, str]) -> Membership:
    """Membership and status of every group.  ``nodes`` are the scheduler's views of
    the Node objects by name (labels, readiness, allocatable), ``readiness`` their
    :func:`ready_status` by name."""
    ordered = sorted(groups, key=lambda g: str(dig(g, "metadata.name")))
    group_of: dict[str, str] = {}
    claims: dict[str, list[str]] = {}
    by_label = _label_index(nodes.values())
    for group in ordered:
        name = str(dig(group, "metadata.name"))
        claims[name] = _claimed(group, readiness, by_label)
        for node in claims[name]:
            group_of.setdefault(node, name)
    members: dict[str, tuple[str, ...]] = {}
    statuses: dict[str, dict[str, Any]] = {}
    for group in ordered:
        name = str(dig(group, "metadata.name"))
        mine = tuple(n for n in claims[name] if group_of[n] == name)
        members[name] = mine
        entries: list[dict[str, Any]] = []
        for node in claims[name]:
            entry: dict[str, Any] = {"nodeName": node, "readyStatus": readiness[node],
                                     "selectionStatus": SUCCEEDED}
            if group_of[node] != name:
                entry["selectionStatus"] = FAILED
                entry["selectionStatusReason"] = (
                    f"the node already belongs to NodeGroup {group_of[node]} "
                    "(a node belongs to one group: the first by name)")
            entries.append(entry)
        for listed in sorted(set(dig(group, "spec.nodes") or ()) - set(claims[name])):
            entries.append({"nodeName": str(listed), "readyStatus": "Unknown",
                            "selectionStatus": FAILED,
                            "selectionStatusReason": "there is no node with this name"})
        entries.sort(key=lambda e: str(e["nodeName"]))
        ready = [nodes[n] for n in mine if nodes[n].ready]
        total = sum((v.allocatable for v in ready), ZERO)
        statuses[name] = {
            "nodeStatuses": entries,
            "readyNodes": len(ready),
            "allocatable": {"cpu": format_cpu(total.cpu), "memory": format_memory(total.memory)},
        }
    return Membership(group_of, members, statuses)


def _label_index(nodes: Iterable[NodeView]) -> dict[tuple[str, str], set[str]]:
    index: dict[tuple[str, str], set[str]] = {}
    for node in nodes:
        for pair in node.labels.items():
            index.setdefault(pair, set()).add(node.name)
    return index


def _claimed(group: Mapping[str, Any], existing: Mapping[str, Any],
             by_label: Mapping[tuple[str, str], set[str]]) -> list[str]:
    """:func:`~protocol.kinds.nodegroups.group_member_names`, through a label index
    (every group against every node would be 250,000 label checks at 50 x 5,000)."""
    out = {str(n) for n in dig(group, "spec.nodes") or () if n in existing}
    wanted: Mapping[str, str] = dig(group, "spec.matchLabels") or {}
    if wanted:
        sets = [by_label.get(pair, set()) for pair in wanted.items()]
        out |= set.intersection(*sets)
    return sorted(out)


def free_capacity(members: Sequence[str], nodes: Mapping[str, NodeView],
                  used: Mapping[str, Resources]) -> Resources:
    """What the Ready members have left: per node allocatable minus what replicas placed
    there request (never below zero), summed (Karmada's allocatable - allocated)."""
    cpu = memory = 0
    for name in members:
        view = nodes[name]
        if not view.ready:
            continue
        taken = used.get(name, ZERO)
        cpu += max(0, view.allocatable.cpu - taken.cpu)
        memory += max(0, view.allocatable.memory - taken.memory)
    return Resources(cpu, memory)
