"""DRF within a queue (reference §5.5) and the worked example §5.8(a): two users in one
queue on 18 CPU / 72 GiB."""

from __future__ import annotations

import pytest

from cloudcore.scheduler import (
    BoundReplica,
    JobView,
    NodeView,
    QueueView,
    Resources,
    dominant_share,
    schedule,
)

GI = 2**30
CLUSTER = Resources(18_000, 72 * GI)
TASK_A = Resources(1_000, 8 * GI)  # user A: memory-heavy
TASK_B = Resources(3_000, 1 * GI)  # user B: CPU-heavy


def test_dominant_share_formula() -> None:
    # §5.5: s = max_r allocated_r / total_r.  One A task: max(1/18, 8/72) = 0.111 (memory);
    # one B task: max(3/18, 1/72) = 0.167 (cpu).
    assert dominant_share(TASK_A, CLUSTER) == pytest.approx(1 / 9)
    assert dominant_share(TASK_B, CLUSTER) == pytest.approx(1 / 6)
    # Equal shares are exactly equal: 3 A tasks (24/72) and 2 B tasks (6/18) tie.
    assert dominant_share(TASK_A * 3, CLUSTER) == dominant_share(TASK_B * 2, CLUSTER)
    # Empty total: 0 when nothing is held, else 1.
    assert dominant_share(Resources(0, 0), Resources(0, 0)) == 0
    assert dominant_share(Resources(1, 0), Resources(0, 10)) == 1


def _two_users() -> tuple[list[NodeView], list[JobView]]:
    # Both minMember 1, same priority, A created first.
    a = JobView("users/a", TASK_A, pending=tuple(range(10)), created="2025-01-01T00:00:00Z")
    b = JobView("users/b", TASK_B, pending=tuple(range(20)), created="2025-01-01T00:00:05Z")
    return [NodeView("group-1", CLUSTER)], [a, b]


def test_reference_5_8_a_progressive_filling_order() -> None:
    nodes, jobs = _two_users()
    result = schedule(nodes, [QueueView("default")], jobs)
    order = [b.job[-1].upper() for b in result.bindings]
    # The reference's replay, step by step: B goes second because it is not ready yet
    # (gang before DRF); step 6 is a tie at 1/3 that the older job wins.
    assert order == ["A", "B", "A", "B", "A", "A", "B", "A", "B", "A"]
    shares = {"A": 0, "B": 0}
    expected = [(0.111, 0), (0.111, 0.167), (0.222, 0.167), (0.222, 0.333), (0.333, 0.333),
                (0.444, 0.333), (0.444, 0.5), (0.556, 0.5), (0.556, 0.667), (0.667, 0.667)]
    for step, who in enumerate(order):
        shares[who] += 1
        a = dominant_share(TASK_A * shares["A"], CLUSTER)
        b = dominant_share(TASK_B * shares["B"], CLUSTER)
        assert (round(a, 3), round(b, 3)) == expected[step], f"step {step + 1}"


def test_reference_5_8_a_outcome() -> None:
    # A = 6 tasks (6 CPU, 48 GiB), B = 4 tasks (12 CPU, 4 GiB), both shares 2/3, CPU
    # exhausted, 20 GiB idle.
    nodes, jobs = _two_users()
    result = schedule(nodes, [QueueView("default")], jobs)
    count = {key: sum(1 for b in result.bindings if b.job == key) for key in
             ("users/a", "users/b")}
    assert count == {"users/a": 6, "users/b": 4}
    held = TASK_A * 6 + TASK_B * 4
    assert held == Resources(18_000, 52 * GI)
    assert CLUSTER - held == Resources(0, 20 * GI)
    assert dominant_share(TASK_A * 6, CLUSTER) == pytest.approx(2 / 3)
    assert dominant_share(TASK_B * 4, CLUSTER) == pytest.approx(2 / 3)
    assert result.unschedulable == {"users/a": "0/1 nodes: 1 insufficient cpu",
                                    "users/b": "0/1 nodes: 1 insufficient cpu"}


def test_higher_priority_job_is_served_first() -> None:
    nodes, (a, _) = _two_users()
    urgent = JobView("users/b", TASK_B, priority=10, pending=tuple(range(20)))
    result = schedule(nodes, [QueueView("default")], [a, urgent])
    assert {x.job for x in result.bindings} == {"users/b"}
    assert len(result.bindings) == 6  # 18 CPU / 3


def test_running_replicas_count_towards_the_share() -> None:
    # A already holds 5 tasks (share 5/9); B, holding nothing, goes first and keeps going
    # until its share passes A's.
    nodes, (_, b) = _two_users()
    a_running = JobView("users/a", TASK_A, bound=tuple(BoundReplica(i, "group-1")
                                                       for i in range(5)),
                        pending=(5, 6, 7, 8, 9))
    result = schedule(nodes, [QueueView("default")], [a_running, b])
    order = [x.job[-1] for x in result.bindings]
    assert order[:5] == ["b", "b", "b", "b", "a"]  # B: 1/6 .. 2/3 against A's 5/9
