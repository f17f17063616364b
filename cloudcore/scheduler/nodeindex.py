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
  node changes.  A change that may raise a node's score or make it fit again (something
  released or taken off it, or any change under binpack, whose score rises as a node
  fills) pushes a fresh entry into every heap at once.  A change that can only lower its
  score and its room - a replica placed on it, under least-allocated scoring, the common
  case by far - pushes nothing: the stale entry still ranks the node at least as high as
  it deserves, so when it surfaces it is scored again and pushed back (once per heap and
  version).  Either way the top entry, once current, is the best node.  An entry whose
  node does not fit is dropped: only a change of the first kind can make it fit.  A
  replica costs a few heap operations, not a visit to every node, however varied the
  nodes' sizes (edge devices rarely report identical memory).
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
from cloudcore.scheduler.scoring import FALLS_WITH_USE, Scorer

BucketKey = tuple[int, int, int, int, int, int, int, int]
"""(alloc cpu, alloc memory, used cpu, used memory, releasing cpu, releasing memory,
pipelined cpu, pipelined memory)."""

SelectorKey = frozenset[tuple[str, str]]
HeapEntry = tuple[float, str, int]
"""(-score, node name, node version when scored)."""


class _Heap:
    """The heap of one request size, and per node the version of its newest entry (so a
    stale entry is scored again only once per version)."""

    __slots__ = ("entries", "newest")

    def __init__(self, entries: list[HeapEntry]) -> None:
        heapq.heapify(entries)
        self.entries = entries
        self.newest: dict[str, int] = {}

    def push(self, entry: HeapEntry) -> None:
        heapq.heappush(self.entries, entry)
        self.newest[entry[1]] = entry[2]


MAX_HEAPS_PER_SELECTOR = 32
"""Heaps kept per selector (one per request size); the least recently used goes first."""


class NodeState:
    __slots__ = ("alloc_cpu", "alloc_mem", "cordoned", "labels", "members", "name",
                 "pipe_cpu", "pipe_mem", "ready", "rel_cpu", "rel_mem", "used_cpu", "used_mem",
                 "version")

    def __init__(self, view: NodeView) -> None:
        self.name = view.name
        self.labels: Mapping[str, str] = view.labels  # read only: no copy per session
        self.ready = view.ready
        self.cordoned = view.unschedulable
        self.alloc_cpu = view.allocatable.cpu
        self.alloc_mem = view.allocatable.memory
        self.used_cpu = self.used_mem = 0
        self.rel_cpu = self.rel_mem = 0
        self.pipe_cpu = self.pipe_mem = 0
        self.version = 0  # bumped on every change: older heap entries are stale
        # The selector indexes it belongs to; most nodes of a session are in none, so the
        # list is made on the first.
        self.members: list[SelectorIndex] | None = None

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
    """The schedulable nodes matching one node selector.

    ``candidates`` are the schedulable (Ready, uncordoned) nodes that may match, in name
    order - all of them, or those carrying one of the selector's labels (the caller's
    label index saves testing every node against every selector); ``total``, the
    session's node count, and ``static_reasons``, the not-ready and cordoned counts, are
    the caller's too: together they give the same counts as checking every node in
    :func:`~cloudcore.scheduler.filtering.node_reasons` order."""

    def __init__(self, selector: Mapping[str, str], candidates: Sequence[NodeState],
                 scorer: Scorer, total: int, static_reasons: Counter[str]) -> None:
        self.selector = dict(selector)
        self.scorer = scorer
        self.total = total
        self.static_reasons: Counter[str] = Counter(static_reasons)
        self.members: dict[str, NodeState] = {}  # sorted by name (nodes arrive sorted)
        self.buckets: dict[BucketKey, list[str]] = {}
        self.heaps: dict[Resources, _Heap] = {}
        self.reasons_cache: dict[Resources, tuple[int, Counter[str]]] = {}
        schedulable = total - sum(static_reasons.values())
        for node in candidates:
            if selector_matches(self.selector, node.labels):
                self.members[node.name] = node
                self.buckets.setdefault(node.key(), []).append(node.name)
                if node.members is None:
                    node.members = [self]
                else:
                    node.members.append(self)
        if schedulable > len(self.members):
            self.static_reasons[SELECTOR_MISMATCH] += schedulable - len(self.members)

    def _moved(self, node: NodeState, old: BucketKey, *, lazy: bool) -> None:
        """``node`` changed: re-bucket it and, unless the change can only lower its score
        and room (``lazy``), give every heap a fresh entry for it."""
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
        if lazy:
            return
        for request, heap in self.heaps.items():
            heap.push((-node.score(self.scorer, request), node.name, node.version))

    def _heap(self, request: Resources) -> _Heap:
        heap = self.heaps.pop(request, None)
        if heap is None:
            # NodeState.future_fits and .score, written out: this visits every member,
            # for every request size, in every session.
            scorer, cpu, memory = self.scorer, request.cpu, request.memory
            heap = _Heap([
                (-scorer(n.alloc_cpu, n.alloc_mem, n.used_cpu, n.used_mem, cpu, memory),
                 n.name, n.version)
                for n in self.members.values()
                if n.alloc_cpu - n.used_cpu + n.rel_cpu - n.pipe_cpu >= cpu
                and n.alloc_mem - n.used_mem + n.rel_mem - n.pipe_mem >= memory])
            if len(self.heaps) >= MAX_HEAPS_PER_SELECTOR:
                del self.heaps[next(iter(self.heaps))]
        self.heaps[request] = heap  # (re)inserted last: most recently used
        return heap

    def best(self, request: Resources) -> str | None:
        """The highest-scoring member whose future idle covers ``request`` (ties: the
        smallest name), or None."""
        heap = self._heap(request)
        entries = heap.entries
        members = self.members
        while entries:
            _, name, version = entries[0]
            node = members[name]
            if version == node.version:
                if node.future_fits(request):
                    return name
                heapq.heappop(entries)  # cannot fit until a change pushes it again
                continue
            heapq.heappop(entries)
            if heap.newest.get(name) != node.version:
                # Changed lazily since: score it as it is now (once per version).
                heap.newest[name] = node.version
                if node.future_fits(request):
                    heapq.heappush(entries, (-node.score(self.scorer, request), name,
                                             node.version))
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
        self._lazy_ok = scorer in FALLS_WITH_USE
        self.nodes: dict[str, NodeState] = {n.name: NodeState(n) for n in ordered}
        self._selectors: dict[SelectorKey, SelectorIndex] = {}
        # Schedulable nodes, and per label the schedulable nodes carrying it (name order):
        # a selector's members are found among the nodes of its rarest label.
        self._schedulable: list[NodeState] = []
        self._by_label: dict[tuple[str, str], list[NodeState]] = {}
        self._static_reasons: Counter[str] = Counter()
        for state in self.nodes.values():
            if not state.ready:
                self._static_reasons[NOT_READY] += 1
            elif state.cordoned:
                self._static_reasons[UNSCHEDULABLE] += 1
            else:
                self._schedulable.append(state)
                for pair in state.labels.items():
                    self._by_label.setdefault(pair, []).append(state)
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
            candidates = self._schedulable
            for pair in selector.items():
                carrying = self._by_label.get(pair, [])
                if len(carrying) < len(candidates):
                    candidates = carrying
            index = self._selectors[key] = SelectorIndex(
                selector, candidates, self.scorer, len(self.nodes), self._static_reasons)
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
        if not (used.cpu or used.memory or releasing.cpu or releasing.memory
                or pipelined.cpu or pipelined.memory):
            return
        node = self.nodes[name]
        members = node.members
        old = node.key() if members else None
        node.used_cpu += used.cpu
        node.used_mem += used.memory
        node.rel_cpu += releasing.cpu
        node.rel_mem += releasing.memory
        node.pipe_cpu += pipelined.cpu
        node.pipe_mem += pipelined.memory
        node.version += 1
        self.changes += 1
        if members and old is not None:
            # More used or pipelined, less releasing: the score cannot rise (under a
            # scorer that falls with use) and the node cannot start to fit.
            lazy = (self._lazy_ok and used.cpu >= 0 and used.memory >= 0
                    and releasing.cpu <= 0 and releasing.memory <= 0
                    and pipelined.cpu >= 0 and pipelined.memory >= 0)
            for member in members:
                member._moved(node, old, lazy=lazy)
