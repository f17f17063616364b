"""Volcano's proportion plugin: each queue's deserved share, and the queue-level checks
built on it (reference §5.6).

Only queues that have jobs in the session take part.  A queue's ``request`` is what its
jobs hold plus what their pending replicas ask for.  Its real capability is what is left
of the total after every queue's guarantee, plus its own guarantee, capped by its
capability::

    realCapability = min(max(0, total - sum of all guarantees) + guarantee, capability)

Then weighted water-filling, per dimension, every queue in a round using the same
``remaining``::

    remaining = total
    repeat while some queue is not yet met:
        W = sum of the weights of queues not met
        for each such queue q:
            d = q.deserved + remaining * q.weight / W
            d = max(min(d, q.realCapability, q.request), q.guarantee)
            met if q.request <= d in every dimension, or d did not change
            q.deserved = d
        remaining = max(0, remaining - increases + decreases)
        stop when remaining < 0.1 in every dimension, or did not change

Worked example (§5.8 b): 18 CPU / 72 GiB, equal weights, qa asks ⟨10, 80 GiB⟩ and qb
⟨60, 20 GiB⟩ → qa deserves ⟨9, 52 GiB⟩, qb ⟨9, 20 GiB⟩.

Faithful quirk: the guarantee floor is applied after the weighted split, so with
guarantees the deserved shares can add up to a little more than the total (the excess is
never handed out twice: ``remaining`` just stops at 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cloudcore.scheduler.resources import (
    UNLIMITED,
    ZERO,
    FractionalResources,
    Resources,
    share,
)

MIN_RESOURCE = 0.1
"""Volcano's precision: less than this (milli-CPU or byte) counts as nothing left."""

MAX_ROUNDS = 1000  # a guard; water-filling converges in a handful of rounds


@dataclass(frozen=True)
class QueueDemand:
    """A queue taking part in the split: its weight and bounds, and what its jobs ask for."""

    name: str
    request: Resources
    weight: int = 1
    capability: Resources = UNLIMITED
    guarantee: Resources = ZERO


def real_capability(total: Resources, all_guarantees: Resources,
                    queue: QueueDemand) -> Resources:
    return Resources(
        min(max(0, total.cpu - all_guarantees.cpu) + queue.guarantee.cpu, queue.capability.cpu),
        min(max(0, total.memory - all_guarantees.memory) + queue.guarantee.memory,
            queue.capability.memory),
    )


def deserved_shares(total: Resources, queues: Sequence[QueueDemand],
                    all_guarantees: Resources | None = None) -> dict[str, FractionalResources]:
    """Each queue's deserved share of ``total``.  ``all_guarantees`` is the sum over *every*
    queue, including those without jobs (default: the sum over ``queues``)."""
    ordered = sorted(queues, key=lambda q: q.name)
    if all_guarantees is None:
        all_guarantees = sum((q.guarantee for q in ordered), ZERO)
    caps = {q.name: real_capability(total, all_guarantees, q) for q in ordered}
    deserved = {q.name: (0.0, 0.0) for q in ordered}
    met: set[str] = set()
    remaining = (float(total.cpu), float(total.memory))
    for _ in range(MAX_ROUNDS):
        weights = sum(q.weight for q in ordered if q.name not in met)
        if weights == 0:
            break
        increased = [0.0, 0.0]
        decreased = [0.0, 0.0]
        for q in ordered:
            if q.name in met:
                continue
            old = deserved[q.name]
            cap = caps[q.name]
            new = tuple(
                float(max(min(old[i] + remaining[i] * q.weight / weights, cap_i, request_i),
                          floor_i))
                for i, (cap_i, request_i, floor_i) in enumerate((
                    (cap.cpu, q.request.cpu, q.guarantee.cpu),
                    (cap.memory, q.request.memory, q.guarantee.memory),
                ))
            )
            if q.request.cpu <= new[0] and q.request.memory <= new[1]:
                met.add(q.name)
            elif new == old:
                met.add(q.name)  # capped: it cannot grow any more
            deserved[q.name] = (new[0], new[1])
            for i in (0, 1):
                if new[i] > old[i]:
                    increased[i] += new[i] - old[i]
                else:
                    decreased[i] += old[i] - new[i]
        before = remaining
        remaining = (max(0.0, remaining[0] - increased[0] + decreased[0]),
                     max(0.0, remaining[1] - increased[1] + decreased[1]))
        if (remaining[0] < MIN_RESOURCE and remaining[1] < MIN_RESOURCE) or remaining == before:
            break
    return {name: FractionalResources(*d) for name, d in deserved.items()}


def queue_share(allocated: Resources, deserved: FractionalResources) -> float:
    """``max_r allocated_r / deserved_r`` (0/0 is 0, x/0 is 1): lower is served first."""
    return max(share(allocated.cpu, deserved.cpu), share(allocated.memory, deserved.memory))


def overused(allocated: Resources, deserved: FractionalResources) -> bool:
    """Deserved ≤ allocated in every dimension: allocate and reclaim skip the queue."""
    return deserved.cpu <= allocated.cpu and deserved.memory <= allocated.memory


def allocatable(allocated: Resources, request: Resources,
                deserved: FractionalResources) -> bool:
    """May the queue take one more replica?  ``allocated + request ≤ deserved`` in each
    dimension the replica asks for (Volcano's Allocatable, and Preemptive for reclaim)."""
    if request.cpu > 0 and allocated.cpu + request.cpu > deserved.cpu:
        return False
    return not (request.memory > 0 and allocated.memory + request.memory > deserved.memory)


def above_deserved(allocated: Resources, deserved: FractionalResources) -> bool:
    """Holding more than deserved in some dimension: only such a queue gives back."""
    return allocated.cpu > deserved.cpu or allocated.memory > deserved.memory
