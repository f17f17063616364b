"""Queues' deserved shares: Volcano's proportion plugin, weighted water-filling
(reference §5.6), and the queue checks built on it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudcore.scheduler import (
    UNLIMITED,
    JobView,
    NodeView,
    QueueDemand,
    QueueView,
    Resources,
    deserved_shares,
    schedule,
)
from cloudcore.scheduler.proportion import allocatable, overused, queue_share, real_capability
from cloudcore.scheduler.resources import FractionalResources

GI = 2**30
CLUSTER = Resources(18_000, 72 * GI)  # §5.8: one node group with 18 CPU / 72 GiB


def cores_and_gib(d: FractionalResources) -> tuple[float, float]:
    return d.cpu / 1000, d.memory / GI


def test_reference_5_8_b_two_equal_queues() -> None:
    # §5.8(b): qa asks ⟨10 CPU, 80 GiB⟩, qb ⟨60 CPU, 20 GiB⟩.  Round 1 ⟨9, 36⟩ each, qb
    # capped at 20 GiB; round 2 qa ⟨9, 44⟩, qb met; round 3 qa ⟨9, 52⟩.
    deserved = deserved_shares(CLUSTER, [
        QueueDemand("qa", Resources(10_000, 80 * GI)),
        QueueDemand("qb", Resources(60_000, 20 * GI)),
    ])
    assert cores_and_gib(deserved["qa"]) == (9, 52)
    assert cores_and_gib(deserved["qb"]) == (9, 20)


def test_reference_5_8_c_a_queue_alone_gets_what_it_asks_for_up_to_the_total() -> None:
    # §5.8(c): qb alone ⇒ deserved = min(total, request) = ⟨18, 20⟩.
    deserved = deserved_shares(CLUSTER, [QueueDemand("qb", Resources(60_000, 20 * GI))])
    assert cores_and_gib(deserved["qb"]) == (18, 20)


def test_weights_split_what_everyone_wants_too_much_of() -> None:
    big = Resources(100_000, 100 * GI)
    deserved = deserved_shares(CLUSTER, [QueueDemand("a", big, weight=1),
                                         QueueDemand("b", big, weight=2),
                                         QueueDemand("c", big, weight=3)])
    assert [cores_and_gib(deserved[q]) for q in "abc"] == [(3, 12), (6, 24), (9, 36)]


def test_capability_caps_and_the_rest_flows_to_the_others() -> None:
    big = Resources(100_000, 100 * GI)
    deserved = deserved_shares(CLUSTER, [
        QueueDemand("a", big, capability=Resources(4_000, UNLIMITED.memory)),
        QueueDemand("b", big),
    ])
    assert cores_and_gib(deserved["a"]) == (4, 36)
    assert cores_and_gib(deserved["b"]) == (14, 36)


def test_guarantee_is_a_floor_and_is_withheld_from_the_others() -> None:
    deserved = deserved_shares(CLUSTER, [
        QueueDemand("a", Resources(2_000, 0), guarantee=Resources(10_000, 0)),
        QueueDemand("b", Resources(100_000, 0)),
    ])
    # a deserves its guarantee even though it asks for less; b's real capability is
    # 18 - 10 = 8 CPU.
    assert deserved["a"].cpu == 10_000
    assert deserved["b"].cpu == 8_000
    assert real_capability(CLUSTER, Resources(10_000, 0),
                           QueueDemand("b", Resources())) == Resources(8_000, 72 * GI)


def test_guarantees_of_queues_without_jobs_are_still_withheld() -> None:
    deserved = deserved_shares(CLUSTER, [QueueDemand("b", Resources(100_000, 0))],
                               all_guarantees=Resources(6_000, 0))
    assert deserved["b"].cpu == 12_000


def test_guarantee_floor_can_overshoot_the_total_as_in_volcano() -> None:
    # The floor is applied after the weighted split: 30 CPU, equal weights, a guarantees
    # 12 → a 12, b 10, c 10.  Faithful to the plugin; nothing is handed out twice.
    big = Resources(100_000, 0)
    deserved = deserved_shares(Resources(30_000, 0), [
        QueueDemand("a", big, guarantee=Resources(12_000, 0)),
        QueueDemand("b", big), QueueDemand("c", big)])
    assert [deserved[q].cpu for q in "abc"] == [12_000, 10_000, 10_000]


def test_queue_checks() -> None:
    deserved = FractionalResources(9_000, 52 * GI)
    # Allocatable: allocated + request ≤ deserved on the dimensions the replica asks for.
    assert allocatable(Resources(5_000, 40 * GI), Resources(1_000, 8 * GI), deserved)
    assert not allocatable(Resources(6_000, 48 * GI), Resources(1_000, 8 * GI), deserved)
    assert allocatable(Resources(9_000, 60 * GI), Resources(0, 0), deserved)
    # Overused only when at or above deserved in every dimension.
    assert not overused(Resources(18_000, 6 * GI), FractionalResources(9_000, 20 * GI))
    assert overused(Resources(9_000, 20 * GI), FractionalResources(9_000, 20 * GI))
    # Share: the dominant allocated/deserved ratio.
    assert queue_share(Resources(18_000, 6 * GI), FractionalResources(9_000, 20 * GI)) == 2
    assert queue_share(Resources(), FractionalResources()) == 0


def test_only_queues_with_jobs_take_part_in_a_session() -> None:
    node = NodeView("n", CLUSTER)
    job = JobView("ns/a", Resources(1_000, GI), queue="busy", pending=tuple(range(30)))
    result = schedule([node], [QueueView("busy"), QueueView("idle", weight=5)], [job])
    assert cores_and_gib(result.queues["busy"].deserved) == (18, 30)
    assert result.queues["idle"].deserved == FractionalResources()
    assert len(result.bindings) == 18


amounts = st.integers(min_value=0, max_value=10**6)
demands = st.lists(
    st.tuples(st.integers(1, 10), amounts, amounts,
              st.one_of(st.none(), amounts), st.one_of(st.none(), amounts)),
    min_size=1, max_size=6)


@settings(max_examples=300)
@given(amounts, amounts, demands)
def test_deserved_respects_capability_request_and_total(
        total_cpu: int, total_mem: int,
        specs: list[tuple[int, int, int, int | None, int | None]]) -> None:
    total = Resources(total_cpu, total_mem)
    queues = [QueueDemand(f"q{i}", Resources(rc, rm), w,
                          Resources(UNLIMITED.cpu if cc is None else cc,
                                    UNLIMITED.memory if cm is None else cm))
              for i, (w, rc, rm, cc, cm) in enumerate(specs)]
    deserved = deserved_shares(total, queues)
    tolerance = 1e-6 * max(total_cpu, total_mem, 1)
    for q in queues:
        d = deserved[q.name]
        assert 0 <= d.cpu <= min(q.capability.cpu, q.request.cpu) + tolerance
        assert 0 <= d.memory <= min(q.capability.memory, q.request.memory) + tolerance
    assert sum(d.cpu for d in deserved.values()) <= total.cpu + tolerance
    assert sum(d.memory for d in deserved.values()) <= total.memory + tolerance
    # Nothing is left idle that somebody asked for and was allowed to have.
    wanted_cpu = sum(min(q.capability.cpu, q.request.cpu) for q in queues)
    if wanted_cpu <= total.cpu:
        for q in queues:
            assert deserved[q.name].cpu == pytest.approx(min(q.capability.cpu, q.request.cpu),
                                                         abs=1)


@settings(max_examples=200)
@given(amounts, st.lists(st.tuples(st.integers(1, 10), amounts, amounts, amounts),
                         min_size=1, max_size=5))
def test_deserved_is_at_least_the_guarantee_and_at_most_the_capability(
        total_cpu: int, specs: list[tuple[int, int, int, int]]) -> None:
    queues = []
    for i, (weight, request, cap, floor) in enumerate(specs):
        floor = min(floor, cap)  # validation refuses guarantee > capability
        queues.append(QueueDemand(f"q{i}", Resources(request, 0), weight,
                                  Resources(cap, UNLIMITED.memory), Resources(floor, 0)))
    deserved = deserved_shares(Resources(total_cpu, 0), queues)
    for q in queues:
        assert q.guarantee.cpu <= deserved[q.name].cpu <= q.capability.cpu


def test_capability_is_a_hard_cap_and_the_app_says_so() -> None:
    node = NodeView("n", CLUSTER)
    job = JobView("ns/a", Resources(1_000, 0), queue="capped", pending=tuple(range(5)))
    capped = QueueView("capped", capability=Resources(2_000, UNLIMITED.memory))
    result = schedule([node], [capped], [job])
    assert len(result.bindings) == 2
    assert result.unschedulable == {"ns/a": (
        "queue capped has used its deserved share: deserved cpu 2, memory 0; "
        "allocated cpu 2, memory 0")}


def test_a_closed_queue_keeps_what_runs_but_places_nothing_new() -> None:
    node = NodeView("n", CLUSTER)
    job = JobView("ns/a", Resources(1_000, 0), queue="q", pending=(0, 1))
    result = schedule([node], [QueueView("q", open=False)], [job])
    assert result.bindings == ()
    assert result.unschedulable == {"ns/a": "queue q is closed"}
