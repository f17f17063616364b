"""Which nodes a replica may go to, and why the others may not.

A node passes when it is Ready, not cordoned, carries every ``nodeSelector`` label, and
has room: its allocatable minus what is already placed on it covers the request in every
dimension.  Checks run in that order and a node is charged with the first that fails -
except that CPU and memory are checked together, so a node short of both counts under
both, as in Kubernetes' ``NodeResourcesFit``.

The counts make the message an unschedulable App shows, Kubernetes-style::

    0/5 nodes: 3 insufficient cpu, 2 not ready

(most frequent reason first, then alphabetical).  The session uses an index
(:mod:`cloudcore.scheduler.nodeindex`) that reaches the same counts without visiting
every node; :func:`filter_nodes` is the plain definition.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cloudcore.scheduler.model import NodeView
from cloudcore.scheduler.resources import ZERO, Resources

NOT_READY = "not ready"
UNSCHEDULABLE = "unschedulable"
SELECTOR_MISMATCH = "didn't match node selector"
INSUFFICIENT_CPU = "insufficient cpu"
INSUFFICIENT_MEMORY = "insufficient memory"


def selector_matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def resource_reasons(free_cpu: int, free_memory: int, request: Resources) -> tuple[str, ...]:
    """The resource checks alone: what is short, given what is free."""
    reasons: tuple[str, ...] = ()
    if request.cpu > free_cpu:
        reasons += (INSUFFICIENT_CPU,)
    if request.memory > free_memory:
        reasons += (INSUFFICIENT_MEMORY,)
    return reasons


def node_reasons(node: NodeView, used: Resources, request: Resources,
                 selector: Mapping[str, str]) -> tuple[str, ...]:
    """Why ``node`` cannot take the replica (empty when it can)."""
    if not node.ready:
        return (NOT_READY,)
    if node.unschedulable:
        return (UNSCHEDULABLE,)
    if not selector_matches(selector, node.labels):
        return (SELECTOR_MISMATCH,)
    free = node.allocatable - used
    return resource_reasons(free.cpu, free.memory, request)


def unschedulable_message(total: int, reasons: Mapping[str, int], fitting: int = 0) -> str:
    """``"0/5 nodes: 3 insufficient cpu, 2 not ready"``."""
    if total == 0:
        return "0/0 nodes: there are no nodes"
    parts = [f"{count} {reason}" for reason, count in
             sorted(reasons.items(), key=lambda item: (-item[1], item[0])) if count]
    return f"{fitting}/{total} nodes: " + ", ".join(parts)


@dataclass(frozen=True)
class FilterResult:
    fitting: tuple[str, ...]  # names, sorted
    total: int
    reasons: Mapping[str, int] = field(default_factory=dict)

    def message(self) -> str:
        return unschedulable_message(self.total, self.reasons, len(self.fitting))


def filter_nodes(nodes: Sequence[NodeView], request: Resources,
                 selector: Mapping[str, str] | None = None,
                 used: Mapping[str, Resources] | None = None) -> FilterResult:
    """The nodes that can take one more replica asking for ``request``, and a count of
    each reason the others cannot.  ``used`` is what is already placed per node."""
    fitting: list[str] = []
    counts: Counter[str] = Counter()
    for node in nodes:
        reasons = node_reasons(node, (used or {}).get(node.name, ZERO), request, selector or {})
        if reasons:
            counts.update(reasons)
        else:
            fitting.append(node.name)
    return FilterResult(tuple(sorted(fitting)), len(nodes), dict(counts))
