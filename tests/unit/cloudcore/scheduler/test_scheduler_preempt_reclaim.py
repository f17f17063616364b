"""Preempt (within a queue) and reclaim (across queues), reference §5.7, and the worked
example §5.8(c)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from cloudcore.scheduler import (
    BoundReplica,
    Eviction,
    EvictionAction,
    JobView,
    NodeView,
    QueueView,
    Resources,
    SchedulerConfig,
    SessionResult,
    schedule,
)

GI = 2**30
CLUSTER = [NodeView("group-1", Resources(18_000, 72 * GI))]  # §5.8
TASK_A = Resources(1_000, 8 * GI)
TASK_B = Resources(3_000, 1 * GI)
QA_QB = [QueueView("qa"), QueueView("qb")]


def apply(jobs: Sequence[JobView], result: SessionResult) -> list[JobView]:
    """What the scheduler loop writes back: bindings become bound replicas; evicted
    replicas keep their node while they stop (releasing) and their index waits again."""
    out = []
    for job in jobs:
        bound = list(job.bound)
        pending = set(job.pending)
        for b in result.bindings:
            if b.job == job.key:
                bound.append(BoundReplica(b.index, b.node))
                pending.discard(b.index)
        for e in result.evictions:
            if e.job == job.key:
                bound = [replace(r, releasing=True) if r.index == e.index else r for r in bound]
                pending.add(e.index)
        out.append(replace(job, bound=tuple(bound), pending=tuple(sorted(pending))))
    return out


def stopped(jobs: Sequence[JobView]) -> list[JobView]:
    """The evicted replicas' processes have exited: they hold nothing any more."""
    return [replace(j, bound=tuple(r for r in j.bound if not r.releasing)) for j in jobs]


def holding(jobs: Sequence[JobView], key: str) -> int:
    return sum(1 for j in jobs if j.key == key for r in j.bound if not r.releasing)


def test_reference_5_8_c_reclaim() -> None:
    # Only qb had work: 6 of its tasks run (18 CPU, 6 GiB).
    b = JobView("team-b/b", TASK_B, queue="qb", bound=tuple(
        BoundReplica(i, "group-1") for i in range(6)), pending=tuple(range(6, 20)))
    # qa submits a job with minMember 5.
    a = JobView("team-a/a", TASK_A, queue="qa", min_available=5, pending=tuple(range(10)))
    jobs = [a, b]

    first = schedule(CLUSTER, QA_QB, jobs)
    # Deserved as in (b); qa is starving and within its share, so reclaim evicts qb tasks
    # (above qb's minimum of 1, and qb holds more than it deserves): one eviction frees 3
    # CPU for three qa tasks, a second covers tasks 4-5; then qa is pipelined → commit.
    assert first.queues["qa"].deserved.cpu == 9_000
    assert first.queues["qb"].deserved.cpu == 9_000
    assert first.evictions == (
        Eviction("team-b/b", 5, "group-1", EvictionAction.RECLAIM, "team-a/a"),
        Eviction("team-b/b", 4, "group-1", EvictionAction.RECLAIM, "team-a/a"),
    )
    assert first.bindings == ()
    assert [(n.job, n.index) for n in first.nominations] == [("team-a/a", i) for i in range(5)]
    jobs = apply(jobs, first)

    # While the victims are still stopping, qa's replicas stay nominated; nothing more
    # is evicted (the releasing resources are qa's "future idle").
    waiting = schedule(CLUSTER, QA_QB, jobs)
    assert waiting.evictions == () and waiting.bindings == ()
    assert len(waiting.nominations) == 6

    # Once they have stopped, allocate binds qa - and it may still grow by one:
    # ⟨5, 40⟩ + ⟨1, 8⟩ ≤ ⟨9, 52⟩.
    jobs = stopped(jobs)
    second = schedule(CLUSTER, QA_QB, jobs)
    assert [(x.job, x.index) for x in second.bindings] == [("team-a/a", i) for i in range(6)]
    # qb keeps 4 tasks (12 CPU), above its 9-CPU share, but qa is no longer starving.
    assert second.evictions == ()
    jobs = apply(jobs, second)

    # Final: qa 6 (6 CPU, 48 GiB), qb 4 (12 CPU, 4 GiB); a further session changes nothing.
    assert holding(jobs, "team-a/a") == 6 and holding(jobs, "team-b/b") == 4
    assert TASK_A * 6 == Resources(6_000, 48 * GI) and TASK_B * 4 == Resources(12_000, 4 * GI)
    third = schedule(CLUSTER, QA_QB, jobs)
    assert third.bindings == () and third.evictions == () and third.nominations == ()


def _three_queues(reclaimable: bool = True) -> tuple[list[NodeView], list[QueueView],
                                                     list[JobView]]:
    node = [NodeView("n", Resources(12_000, 0))]
    two = Resources(2_000, 0)
    qb = JobView("ns/b", two, queue="qb", bound=tuple(BoundReplica(i, "n") for i in range(4)),
                 pending=tuple(range(4, 30)))
    qc = JobView("ns/c", two, queue="qc", bound=(BoundReplica(0, "n"), BoundReplica(1, "n")))
    qa = JobView("ns/a", Resources(1_000, 0), queue="qa", min_available=2, pending=(0, 1))
    queues = [QueueView("qa"), QueueView("qb", reclaimable=reclaimable), QueueView("qc")]
    return node, queues, [qa, qb, qc]


def test_reclaim_takes_only_from_queues_above_their_deserved_share() -> None:
    nodes, queues, jobs = _three_queues()
    result = schedule(nodes, queues, jobs)
    # Deserved: qa 2 CPU (all it asks), qc 4 (exactly what it holds), qb 6 (holds 8).
    assert {q: s.deserved.cpu for q, s in result.queues.items()} == {
        "qa": 2_000, "qb": 6_000, "qc": 4_000}
    assert [(e.job, e.action) for e in result.evictions] == [("ns/b", EvictionAction.RECLAIM)]
    assert [n.job for n in result.nominations] == ["ns/a", "ns/a"]


def test_a_queue_that_is_not_reclaimable_keeps_what_it_holds() -> None:
    nodes, queues, jobs = _three_queues(reclaimable=False)
    result = schedule(nodes, queues, jobs)
    assert result.evictions == () and result.nominations == ()
    assert result.unschedulable["ns/a"].startswith("only 0 of the 2 replicas")


def _same_queue(low_min: int = 1, high_priority: int = 10, high_min: int = 2,
                ) -> tuple[list[NodeView], list[JobView]]:
    nodes = [NodeView("n", Resources(4_000, 8 * GI))]
    one = Resources(1_000, GI)
    low = JobView("ns/low", one, priority=0, min_available=low_min,
                  bound=tuple(BoundReplica(i, "n") for i in range(4)))
    high = JobView("ns/high", one, priority=high_priority, min_available=high_min,
                   pending=tuple(range(high_min)))
    return nodes, [low, high]


def test_a_starving_higher_priority_job_preempts_within_its_queue() -> None:
    nodes, jobs = _same_queue()
    result = schedule(nodes, [QueueView("default")], jobs)
    assert result.evictions == (
        Eviction("ns/low", 3, "n", EvictionAction.PREEMPT, "ns/high"),
        Eviction("ns/low", 2, "n", EvictionAction.PREEMPT, "ns/high"),
    )
    assert [(n.job, n.index) for n in result.nominations] == [("ns/high", 0), ("ns/high", 1)]
    assert result.unschedulable == {
        "ns/high": "2 replicas nominated, waiting for evicted replicas to stop"}


def test_victims_keep_their_own_gang_minimum() -> None:
    # low needs 3 of its 4: only one can go, which is not enough for high's gang of 2.
    nodes, jobs = _same_queue(low_min=3)
    result = schedule(nodes, [QueueView("default")], jobs)
    assert result.evictions == () and result.nominations == ()
    assert "ns/high" in result.unschedulable


def test_equal_priority_falls_back_to_drf_fairness() -> None:
    # Same priority: the DRF test decides.  high (nothing) taking one replica has share
    # 1/4, low losing one keeps 3/4 → low gives one up.
    nodes, jobs = _same_queue(high_priority=0, high_min=1)
    result = schedule(nodes, [QueueView("default")], jobs)
    assert [(e.job, e.index) for e in result.evictions] == [("ns/low", 3)]
    assert [(n.job, n.index) for n in result.nominations] == [("ns/high", 0)]


def test_drf_fallback_refuses_to_make_things_less_fair() -> None:
    # high already holds 4 of 6 CPU and needs a fifth: its share would be 5/6 against
    # low's 1/6 after losing one - no eviction.
    nodes = [NodeView("n", Resources(6_000, 0))]
    one = Resources(1_000, 0)
    low = JobView("ns/low", one, bound=(BoundReplica(0, "n"), BoundReplica(1, "n")))
    high = JobView("ns/high", one, min_available=5, pending=(3, 4),
                   bound=tuple(BoundReplica(i, "n") for i in range(3)))
    result = schedule(nodes, [QueueView("default")], [low, high])
    assert result.evictions == () and result.nominations == ()


def test_preemption_never_crosses_queues_and_can_be_turned_off() -> None:
    nodes, (low, high) = _same_queue()
    queues = [QueueView("qa"), QueueView("qb")]
    jobs = [replace(low, queue="qb"), replace(high, queue="qa")]
    result = schedule(nodes, queues, jobs, SchedulerConfig(reclaim=False))
    assert result.evictions == ()
    nodes, jobs = _same_queue()
    result = schedule(nodes, [QueueView("default")], jobs, SchedulerConfig(preempt=False))
    assert result.evictions == ()


def test_a_job_that_is_not_starving_does_not_evict() -> None:
    # high already has its minimum running; its other replicas wait for room instead.
    nodes = [NodeView("n", Resources(4_000, 0))]
    one = Resources(1_000, 0)
    low = JobView("ns/low", one, bound=tuple(BoundReplica(i, "n") for i in range(3)))
    high = JobView("ns/high", one, priority=10, bound=(BoundReplica(0, "n"),),
                   pending=(1, 2))
    result = schedule(nodes, [QueueView("default")], [low, high])
    assert result.evictions == ()
    assert result.unschedulable == {"ns/high": "0/1 nodes: 1 insufficient cpu"}
