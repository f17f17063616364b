"""Properties of whole sessions over generated clusters: the indexed node search agrees
with the plain definition, nothing is overcommitted, gangs are whole, and the outcome
does not depend on the order of the inputs."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudcore.scheduler import (
    BoundReplica,
    JobView,
    NodeView,
    QueueView,
    Resources,
    SchedulerConfig,
    Scoring,
    SessionResult,
    filter_nodes,
    schedule,
    score_node,
)

GI = 2**30
SHAPES = [Resources(2_000, 4 * GI), Resources(4_000, 8 * GI), Resources(8_000, 8 * GI)]
SIZES = [Resources(500, GI // 2), Resources(1_000, GI), Resources(2_000, 3 * GI),
         Resources(250, 0), Resources(0, GI)]


@st.composite
def clusters(draw: st.DrawFn) -> list[NodeView]:
    count = draw(st.integers(1, 12))
    return [NodeView(f"n{i:02d}", draw(st.sampled_from(SHAPES)),
                     labels={"zone": draw(st.sampled_from("ab"))},
                     ready=draw(st.integers(0, 3)) != 0,
                     unschedulable=draw(st.integers(0, 9)) == 0)
            for i in range(count)]


@settings(max_examples=150, deadline=None)
@given(clusters(), st.data())
def test_indexed_search_matches_scoring_every_node(nodes: list[NodeView],
                                                   data: st.DataObject) -> None:
    # Other workloads (another scheduler's) hold some resources already.
    used: Counter[str] = Counter()
    foreign = []
    usage: dict[str, Resources] = {}
    for node in nodes:
        size = data.draw(st.sampled_from([*SIZES, Resources()]))
        if size != Resources() and node.ready:
            foreign.append(JobView(f"other/{node.name}", size, scheduler_name="someone-else",
                                   bound=(BoundReplica(0, node.name),)))
            usage[node.name] = size
            used[node.name] += 1
    request = data.draw(st.sampled_from(SIZES))
    selector = data.draw(st.sampled_from([{}, {"zone": "a"}]))
    scoring = data.draw(st.sampled_from(list(Scoring)))
    replicas = data.draw(st.integers(1, 25))
    job = JobView("ns/app", request, node_selector=selector, pending=tuple(range(replicas)))
    result = schedule(nodes, [QueueView("default")], [job, *foreign],
                      SchedulerConfig(scoring=scoring))

    # The plain definition: filter every node, score every fitting one, best score wins,
    # smallest name breaks ties.
    expected: list[str] = []
    message = None
    by_name = {n.name: n for n in nodes}
    for _ in range(replicas):
        fit = filter_nodes(nodes, request, selector, usage)
        if not fit.fitting:
            message = fit.message()
            break
        best = min(fit.fitting, key=lambda name: (
            -score_node(scoring, by_name[name].allocatable, usage.get(name, Resources()),
                        request), name))
        expected.append(best)
        usage[best] = usage.get(best, Resources()) + request
    assert [b.node for b in result.bindings] == expected
    assert result.unschedulable.get("ns/app") == message


@st.composite
def workloads(draw: st.DrawFn) -> tuple[list[NodeView], list[QueueView], list[JobView]]:
    nodes = [NodeView(f"n{i:02d}", draw(st.sampled_from(SHAPES)))
             for i in range(draw(st.integers(1, 4)))]
    queues = [QueueView(f"q{i}", weight=draw(st.integers(1, 3)),
                        reclaimable=draw(st.integers(0, 3)) != 0)
              for i in range(draw(st.integers(1, 3)))]
    jobs = []
    for i in range(draw(st.integers(1, 8))):
        replicas = draw(st.integers(1, 16))
        jobs.append(JobView(
            f"ns/j{i}", draw(st.sampled_from(SIZES[:3])),
            queue=draw(st.sampled_from(queues)).name, priority=draw(st.integers(0, 2)),
            min_available=draw(st.sampled_from([1, 1, draw(st.integers(1, replicas))])),
            pending=tuple(range(replicas)),
            created=f"2025-01-01T00:00:{i:02d}Z"))
    return nodes, queues, jobs


def apply(jobs: list[JobView], result: SessionResult) -> list[JobView]:
    out = []
    for job in jobs:
        mine = [b for b in result.bindings if b.job == job.key]
        done = {b.index for b in mine}
        out.append(replace(job, bound=job.bound + tuple(BoundReplica(b.index, b.node)
                                                          for b in mine),
                           pending=tuple(i for i in job.pending if i not in done)))
    return out


def check_session(nodes: list[NodeView], jobs: list[JobView], result: SessionResult) -> None:
    by_key = {j.key: j for j in jobs}
    evicted = {(e.job, e.index) for e in result.evictions}
    now: Counter[str] = Counter()  # bound after the session, cpu in millicores
    later: Counter[str] = Counter()  # once evicted replicas have stopped
    for job in jobs:
        for r in job.bound:
            now[r.node] += job.request.cpu
            if not r.releasing and (job.key, r.index) not in evicted:
                later[r.node] += job.request.cpu
    for b in result.bindings:
        assert b.index in by_key[b.job].pending
        now[b.node] += by_key[b.job].request.cpu
        later[b.node] += by_key[b.job].request.cpu
    for n in result.nominations:
        assert n.index in by_key[n.job].pending
        later[n.node] += by_key[n.job].request.cpu
    placed = Counter((b.job, b.index) for b in (*result.bindings, *result.nominations))
    assert all(count == 1 for count in placed.values())
    for node in nodes:
        assert now[node.name] <= node.allocatable.cpu  # bindings fit right now
        assert later[node.name] <= node.allocatable.cpu  # nominations fit after evictions
    for job in jobs:
        holding = sum(1 for r in job.bound if not r.releasing and (job.key, r.index)
                      not in evicted)
        new = sum(1 for key, _ in placed if key == job.key)
        if new:  # all or nothing
            assert holding + new >= job.min_available
        if any(key == job.key for key, _ in evicted):  # victims keep their gang
            assert holding >= job.min_available


@settings(max_examples=120, deadline=None)
@given(workloads(), st.integers(0, 2**32 - 1))
def test_sessions_never_overcommit_and_place_gangs_whole(
        workload: tuple[list[NodeView], list[QueueView], list[JobView]], seed: int) -> None:
    nodes, queues, jobs = workload
    first = schedule(nodes, queues, jobs)
    check_session(nodes, jobs, first)
    # A second wave arrives on top of what now runs: higher priority in the existing
    # queues (preempt), or in a new queue that deserves a share (reclaim).
    jobs = apply(jobs, first)
    rng = random.Random(seed)
    queues = [*queues, QueueView("late", weight=rng.randint(1, 3))]
    wave = [JobView(f"ns/late{i}", rng.choice(SIZES[:3]),
                    queue=rng.choice([queues[0].name, queues[-1].name]),
                    priority=rng.choice([0, 3]), min_available=2, pending=(0, 1, 2))
            for i in range(2)]
    second = schedule(nodes, queues, jobs + wave)
    check_session(nodes, jobs + wave, second)
    # Same inputs in another order: the same session.
    shuffled = schedule(rng.sample(nodes, len(nodes)), rng.sample(queues, len(queues)),
                        rng.sample(jobs + wave, len(jobs) + len(wave)))
    assert shuffled == second


def test_another_schedulers_replicas_still_take_up_room() -> None:
    nodes = [NodeView("n", Resources(4_000, GI))]
    theirs = JobView("ns/theirs", Resources(3_000, 0), scheduler_name="custom",
                     bound=(BoundReplica(0, "n"),), pending=(1,))
    mine = JobView("ns/mine", Resources(2_000, 0), pending=(0,))
    result = schedule(nodes, [QueueView("default")], [theirs, mine])
    assert result.bindings == ()  # and theirs' pending replica is left to "custom"
    assert result.unschedulable == {"ns/mine": "0/1 nodes: 1 insufficient cpu"}
