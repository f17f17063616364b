"""Node scores: which of the nodes a replica fits on it should go to (higher is better).

Both work on a node's allocatable ``A_r``, what is already placed on it ``U_r`` and the
replica's request ``q_r``, for r in {cpu, memory}, each with weight 1.

**Least allocated** (Kubernetes' ``NodeResourcesFit`` default, spreads load), in integer
arithmetic as Kubernetes does::

    score_r = (A_r - (U_r + q_r)) * 100 // A_r      (0 if A_r == 0 or U_r + q_r > A_r)
    score   = (score_cpu + score_memory) // 2

**Binpack** (Volcano's ``binpack`` plugin, reference §5.4, fills nodes up)::

    score = 100 * sum_r (U_r + q_r) / A_r / (number of counted resources)

A resource that would not fit (``U_r + q_r > A_r``) makes the whole score 0; a resource
the node does not have (``A_r == 0``) and the replica does not ask for is not counted.

Ties are broken by node name (smallest first) so sessions are deterministic; Kubernetes
picks at random among equals.
"""

from __future__ import annotations

from collections.abc import Callable

from cloudcore.scheduler.model import Scoring
from cloudcore.scheduler.resources import Resources

MAX_NODE_SCORE = 100

Scorer = Callable[[int, int, int, int, int, int], float]
"""``(alloc_cpu, alloc_memory, used_cpu, used_memory, request_cpu, request_memory)``."""


def least_allocated_score(alloc_cpu: int, alloc_mem: int, used_cpu: int, used_mem: int,
                          req_cpu: int, req_mem: int) -> float:
    # Per resource: (A - (U + q)) * 100 // A, or 0 when A is 0 or U + q exceeds A - written
    # out, as this runs for every node a session looks at.
    cpu = used_cpu + req_cpu
    cpu_score = (alloc_cpu - cpu) * MAX_NODE_SCORE // alloc_cpu \
        if alloc_cpu and cpu <= alloc_cpu else 0
    mem = used_mem + req_mem
    mem_score = (alloc_mem - mem) * MAX_NODE_SCORE // alloc_mem \
        if alloc_mem and mem <= alloc_mem else 0
    return (cpu_score + mem_score) // 2


def binpack_score(alloc_cpu: int, alloc_mem: int, used_cpu: int, used_mem: int,
                  req_cpu: int, req_mem: int) -> float:
    total = 0.0
    counted = 0
    for alloc, after in ((alloc_cpu, used_cpu + req_cpu), (alloc_mem, used_mem + req_mem)):
        if after > alloc:
            return 0.0
        if alloc == 0:
            continue
        total += after / alloc
        counted += 1
    return MAX_NODE_SCORE * total / counted if counted else 0.0


SCORERS: dict[Scoring, Scorer] = {
    Scoring.LEAST_ALLOCATED: least_allocated_score,
    Scoring.BINPACK: binpack_score,
}
FALLS_WITH_USE: frozenset[Scorer] = frozenset({least_allocated_score})
"""Scorers whose score never rises as more is used on the node (the node index relies on
it to skip re-scoring after a placement)."""


def score_node(strategy: Scoring, allocatable: Resources, used: Resources,
               request: Resources) -> float:
    """The score of one node for one replica (0..100)."""
    return SCORERS[strategy](allocatable.cpu, allocatable.memory, used.cpu, used.memory,
                             request.cpu, request.memory)
