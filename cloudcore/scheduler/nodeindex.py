"""The nodes of one session and what is placed on them, indexed so that finding the best
node for a replica does not mean visiting every node.

Per node the session tracks, besides allocatable:

- ``used``: requests of replicas placed on it (bound before, or allocated this session);
- ``releasing``: the part of ``used`` held by replicas that are stopping (evicted);
- ``pipelined``: requests of replicas nominated to it, waiting for releasing ones to go.

``idle = allocatable - used`` is what can be bound now; ``future idle = idle + releasing -
pipelined`` is what a replica may be placed against, as in Volcano.

The index, for each distinct node selector in use, over the Ready, uncordoned nodes that
match it:

- per request size, a heap of ``(-score, name)``, so the best node is the top entry - the
  same answer as scoring every node and breaking ties by name.  Entries go stale when a
  node changes: every change pushes a fresh entry (scores can rise as well as fall -
  binpack rises as a node fills) and stale ones are dropped when they surface; an entry
  whose node does not fit is dropped too, since only a change can make it fit, and a
  change pushes a fresh one.  A replica costs a few heap operations, not a visit to every
  node, however varied the nodes' sizes (edge devices rarely report identical memory).
- *buckets* of nodes in identical state (allocatable, used, releasing, pipelined), to
  count why nodes do not fit without visiting each when many are alike.
"""

from __future__ import annotations

import bisect
import heapq
from collections import Counter
from collections.abc import Mapping, Sequence

from cloudcore.scheduler.filtering import (
    NOT_READY,
    SELECTOR_MISMATCH,
    UNSCHEDULABLE,
    resource_reasons,
    selector_matches,
    unschedulable_message,
)
from cloudcore.scheduler.model import NodeView
from cloudcore.scheduler.resources import ZERO, Resources
from cloudcore.scheduler.scoring import Scorer

BucketKey = tuple[int, int, int, int, int, int, int, int]
"""(alloc cpu, alloc memory, used cpu, used memory, releasing cpu, releasing memory,
pipelined cpu, pipelined memory)."""

SelectorKey = frozenset[tuple[str, str]]
HeapEntry = tuple[float, str, int]
"""(-score, node name, node version when scored)."""

MAX_HEAPS_PER_SELECTOR = 32
"""Heaps kept per selector (one per request size); the least recently used goes first."""


class NodeState:
    __slots__ = ("alloc_cpu", "alloc_mem", "cordoned", "labels", "members", "name",
                 "pipe_cpu", "pipe_mem", "ready", "rel_cpu", "rel_mem", "used_cpu", "used_mem",
                 "version")

    def __init__(self, view: NodeView) -> None:
        self.name = view.name
        self.labels = dict(view.labels)
        self.ready = view.ready
        self.cordoned = view.unschedulable
        self.alloc_cpu = view.allocatable.cpu
        self.alloc_mem = view.allocatable.memory
        self.used_cpu = self.used_mem = 0
        self.rel_cpu = self.rel_mem = 0
        self.pipe_cpu = self.pipe_mem = 0
        self.version = 0  # bumped on every change: older heap entries are stale
        self.members: list[SelectorIndex] = []

    def key(self) -> BucketKey:
        return (self.alloc_cpu, self.alloc_mem, self.used_cpu, self.used_mem,
                self.rel_cpu, self.rel_mem, self.pipe_cpu, self.pipe_mem)

    def future_fits(self, request: Resources) -> bool:
        return (self.alloc_cpu - self.used_cpu + self.rel_cpu - self.pipe_cpu >= request.cpu
                and self.alloc_mem - self.used_mem + self.rel_mem - self.pipe_mem
                >= request.memory)

    def score(self, scorer: Scorer, request: Resources) -> float:
        return scorer(self.alloc_cpu, self.alloc_mem, self.used_cpu, self.used_mem,
                      request.cpu, request.memory)

    def idle_fits(self, request: Resources) -> bool:
        return (self.alloc_cpu - self.used_cpu >= request.cpu
                and self.alloc_mem - self.used_mem >= request.memory)

    def future_idle(self) -> Resources:
        return Resources(self.alloc_cpu - self.used_cpu + self.rel_cpu - self.pipe_cpu,
                         self.alloc_mem - self.used_mem + self.rel_mem - self.pipe_mem)

    @property
    def used(self) -> Resources:
        return Resources(self.used_cpu, self.used_mem)


class SelectorIndex:
    """The schedulable nodes matching one node selector."""

    def __init__(self, selector: Mapping[str, str], nodes: Sequence[NodeState],
                 scorer: Scorer) -> None:
        self.selector = dict(selector)
        self.scorer = scorer
        self.total = len(nodes)
        self.static_reasons: Counter[str] = Counter()
        self.members: dict[str, NodeState] = {}  # sorted by name (nodes arrive sorted)
        self.buckets: dict[BucketKey, list[str]] = {}
        self.heaps: dict[Resources, list[HeapEntry]] = {}
        self.reasons_cache: dict[Resources, tuple[int, Counter[str]]] = {}
        for node in nodes:
            if not node.ready:
                self.static_reasons[NOT_READY] += 1
            elif node.cordoned:
                self.static_reasons[UNSCHEDULABLE] += 1
            elif not selector_matches(self.selector, node.labels):
                self.static_reasons[SELECTOR_MISMATCH] += 1
            else:
                self.members[node.name] = node
                self.buckets.setdefault(node.key(), []).append(node.name)
                node.members.append(self)

    def _moved(self, node: NodeState, old: BucketKey) -> None:
        """``node`` changed: re-bucket it and give every heap a fresh entry for it."""
        bucket = self.buckets[old]
        del bucket[bisect.bisect_left(bucket, node.name)]
        if not bucket:
            del self.buckets[old]
        new = node.key()
        target = self.buckets.get(new)
        if target is None:
            self.buckets[new] = [node.name]
        else:
            bisect.insort(target, node.name)
        for request, heap in self.heaps.items():
            heapq.heappush(heap, (-node.score(self.scorer, request), node.name, node.version))

    def _heap(self, request: Resources) -> list[HeapEntry]:
        heap = self.heaps.pop(request, None)
        if heap is None:
            heap = [(-n.score(self.scorer, request), n.name, n.version)
                    for n in self.members.values() if n.future_fits(request)]
            heapq.heapify(heap)
            if len(self.heaps) >= MAX_HEAPS_PER_SELECTOR:
                del self.heaps[next(iter(self.heaps))]
        self.heaps[request] = heap  # (re)inserted last: most recently used
        return heap

    def best(self, request: Resources) -> str | None:
        """The highest-scoring member whose future idle covers ``request`` (ties: the
        smallest name), or None."""
        heap = self._heap(request)
        members = self.members
        while heap:
            _, name, version = heap[0]
            node = members[name]
            if version == node.version and node.future_fits(request):
                return name
            heapq.heappop(heap)  # stale, or cannot fit until it changes
        return None

    def reasons(self, request: Resources, changes: int) -> Counter[str]:
        """Why each node cannot take ``request`` (nodes that can are not counted).
        ``changes`` is the index's change count: the answer is reused until it moves."""
        cached = self.reasons_cache.get(request)
        if cached is not None and cached[0] == changes:
            return cached[1]
        counts = Counter(self.static_reasons)
        for (ac, am, uc, um, lc, lm, pc, pm), names in self.buckets.items():
            for reason in resource_reasons(ac - uc + lc - pc, am - um + lm - pm, request):
                counts[reason] += len(names)
        self.reasons_cache[request] = (changes, counts)
        return counts

    def fitting_count(self, request: Resources) -> int:
        return sum(len(names) for (ac, am, uc, um, lc, lm, pc, pm), names in self.buckets.items()
                   if ac - uc + lc - pc >= request.cpu and am - um + lm - pm >= request.memory)


class NodeIndex:
    def __init__(self, nodes: Sequence[NodeView], scorer: Scorer) -> None:
        ordered = sorted(nodes, key=lambda n: n.name)
        self.scorer = scorer
        self.nodes: dict[str, NodeState] = {n.name: NodeState(n) for n in ordered}
        self._ordered = list(self.nodes.values())
        self._selectors: dict[SelectorKey, SelectorIndex] = {}
        self.changes = 0
        total = ZERO
        for node in ordered:
            if node.ready:
                total += node.allocatable
        self.total = total
        """Allocatable summed over Ready nodes: DRF's and proportion's total."""

    def for_selector(self, selector: Mapping[str, str]) -> SelectorIndex:
        key: SelectorKey = frozenset(selector.items())
        index = self._selectors.get(key)
        if index is None:
            index = self._selectors[key] = SelectorIndex(selector, self._ordered, self.scorer)
        return index

    def best(self, selector: Mapping[str, str], request: Resources) -> str | None:
        return self.for_selector(selector).best(request)

    def message(self, selector: Mapping[str, str], request: Resources) -> str:
        """``"0/5 nodes: 3 insufficient cpu, 2 not ready"`` for ``request`` right now."""
        index = self.for_selector(selector)
        return unschedulable_message(index.total, index.reasons(request, self.changes),
                                     index.fitting_count(request))

    def change(self, name: str, *, used: Resources = ZERO, releasing: Resources = ZERO,
               pipelined: Resources = ZERO) -> None:
        """Add (or, with negative amounts, take away) what is placed on node ``name``."""
        node = self.nodes[name]
        old = node.key()
        node.used_cpu += used.cpu
        node.used_mem += used.memory
        node.rel_cpu += releasing.cpu
        node.rel_mem += releasing.memory
        node.pipe_cpu += pipelined.cpu
        node.pipe_mem += pipelined.memory
        if node.key() != old:
            node.version += 1
            self.changes += 1
            for member in node.members:
                member._moved(node, old)
