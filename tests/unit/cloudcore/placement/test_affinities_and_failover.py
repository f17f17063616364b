"""Ordered clusterAffinities with Karmada's exact fallback rule and no automatic move
back (§1.3), failover of a node group with no Ready node (§1.9-§1.10) and the
reschedule triggers (§1.10) - reference/placement-scheduling.md."""

from __future__ import annotations

from typing import Any

import pytest

from cloudcore.placement import (
    BindingState,
    ClusterView,
    due_evictions,
    evict,
    next_deadline,
    reschedule_reason,
    schedule,
    track_unhealthy,
)
from protocol.kinds.policies import FailoverBehavior, Placement, parse_propagation_spec

APP = {"apiVersion": "apps.edgefleet.io/v1alpha1", "kind": "App"}
DYNAMIC = {"replicaSchedulingType": "Divided", "replicaDivisionPreference": "Weighted",
           "weightPreference": {"dynamicWeight": "AvailableReplicas"}}
STATIC_1_2_3 = {
    "replicaSchedulingType": "Divided", "replicaDivisionPreference": "Weighted",
    "weightPreference": {"staticWeightList": [
        {"targetCluster": {"clusterNames": ["A"]}, "weight": 1},
        {"targetCluster": {"clusterNames": ["B"]}, "weight": 2},
        {"targetCluster": {"clusterNames": ["C"]}, "weight": 3},
    ]},
}


def placement(body: dict[str, Any]) -> Placement:
    spec = parse_propagation_spec({"spec": {"resourceSelectors": [APP], "placement": body}})
    assert spec.placement is not None
    return spec.placement


def failover(seconds: int | None = None) -> FailoverBehavior:
    conditions = {} if seconds is None else {"tolerationSeconds": seconds}
    spec = parse_propagation_spec({"spec": {
        "resourceSelectors": [APP],
        "failover": {"application": {"decisionConditions": conditions}},
    }})
    assert spec.failover is not None
    return spec.failover


# §1.3's example: on-prem first, rented as the fallback.
TERMS = placement({
    "clusterAffinities": [
        {"affinityName": "on-prem", "labelSelector": {"matchLabels": {"owner": "us"}}},
        {"affinityName": "rented", "clusterNames": ["cloud-a", "cloud-b"]},
    ],
    "replicaScheduling": DYNAMIC,
})


def fleet(on_prem_ready: bool = True) -> list[ClusterView]:
    return [
        ClusterView("site-1", labels={"owner": "us"}, ready=on_prem_ready, available_replicas=10),
        ClusterView("cloud-a", available_replicas=10),
        ClusterView("cloud-b", available_replicas=10),
    ]


# --- §1.3 clusterAffinities -----------------------------------------------------------


def test_first_term_is_used_when_it_fits() -> None:
    decision = schedule(TERMS, fleet(), BindingState(replicas=4))
    assert decision.scheduled
    assert decision.affinity_name == "on-prem"
    assert decision.clusters == {"site-1": 4}


def test_falls_back_to_the_next_term_when_the_first_cannot_schedule() -> None:
    # §1.3 step 3: any error -> next term; the winning name is recorded.
    decision = schedule(TERMS, fleet(on_prem_ready=False), BindingState(replicas=4))
    assert decision.scheduled
    assert decision.affinity_name == "rented"
    assert decision.clusters == {"cloud-a": 2, "cloud-b": 2}


def test_capacity_shortfall_also_moves_forward() -> None:
    # §1.3 step 3: "not enough capacity for Divided replicas" advances too.
    decision = schedule(TERMS, fleet(), BindingState(replicas=14))
    assert decision.affinity_name == "rented"
    assert decision.clusters == {"cloud-a": 7, "cloud-b": 7}


def test_no_move_back_when_the_earlier_term_recovers() -> None:
    # §1.3: "Moving back: never automatic" - rescheduling starts from the observed term.
    fell_back = schedule(TERMS, fleet(on_prem_ready=False), BindingState(replicas=4))
    assert fell_back.affinity_name == "rented"
    later = BindingState(replicas=6, current=fell_back.clusters,
                         observed_affinity=fell_back.affinity_name)
    decision = schedule(TERMS, fleet(on_prem_ready=True), later)
    assert decision.affinity_name == "rented"
    # The scale-up goes to the rented groups, on top of what they run.
    assert decision.clusters == {"cloud-a": 3, "cloud-b": 3}


def test_explicit_reschedule_starts_again_from_the_first_term() -> None:
    # §1.3 step 2: an explicit reschedule resets the start index to 0 (and divides afresh).
    state = BindingState(replicas=4, current={"cloud-a": 2, "cloud-b": 2},
                         observed_affinity="rented", reschedule_requested=True)
    decision = schedule(TERMS, fleet(), state)
    assert decision.affinity_name == "on-prem"
    assert decision.clusters == {"site-1": 4}


def test_a_renamed_observed_term_resets_to_the_first() -> None:
    # §1.3 step 1: "0 if empty or the name no longer exists".
    state = BindingState(replicas=4, current={"cloud-a": 2, "cloud-b": 2},
                         observed_affinity="hired")
    assert schedule(TERMS, fleet(), state).affinity_name == "on-prem"


def test_all_terms_failing_with_no_fit_removes_the_workload() -> None:
    # §1.3 step 4: observed name unchanged; a "no cluster fits" first error patches the
    # result to empty.
    state = BindingState(replicas=4, current={"site-1": 4}, observed_affinity="on-prem")
    decision = schedule(TERMS, [], state)
    assert not decision.scheduled
    assert decision.clusters == {}
    assert decision.affinity_name == "on-prem"
    assert decision.message.startswith("affinity 'on-prem': 0/0 node groups are available")
    assert "affinity 'rented'" in decision.message


def test_all_terms_failing_on_capacity_keeps_the_old_placement() -> None:
    # §1.3 step 4: only a no-fit first error empties the result.
    state = BindingState(replicas=100, current={"site-1": 4}, observed_affinity="on-prem")
    decision = schedule(TERMS, fleet(), state)
    assert not decision.scheduled
    assert decision.clusters == {"site-1": 4}
    assert decision.affinity_name == "on-prem"


# --- §1.9-§1.10 failover --------------------------------------------------------------


def test_unhealthy_since_is_first_sighting_and_resets_when_healthy() -> None:
    # §1.9: "records when ... first seen Unhealthy ... Healthy/Unknown resets the timer".
    down = [ClusterView("a", ready=False), ClusterView("b")]
    since = track_unhealthy({}, down, now=100.0)
    assert since == {"a": 100.0}
    assert track_unhealthy(since, down, now=160.0) == {"a": 100.0}
    assert track_unhealthy(since, [ClusterView("a"), ClusterView("b")], now=170.0) == {}
    assert track_unhealthy({"gone": 5.0}, [], now=170.0) == {}


def test_eviction_falls_due_after_toleration_seconds() -> None:
    # §1.9: evicted once unhealthy for tolerationSeconds; §3.3 default 300.
    current = {"a": 2, "b": 3}
    since = {"a": 100.0}
    assert due_evictions(current, since, 159.0, failover(60)) == frozenset()
    assert due_evictions(current, since, 160.0, failover(60)) == {"a"}
    assert due_evictions(current, since, 399.0, failover()) == frozenset()
    assert due_evictions(current, since, 400.0, failover()) == {"a"}
    assert due_evictions(current, since, 100.0, failover(0)) == {"a"}  # 0 = at once
    assert next_deadline(current, since, failover(60)) == 160.0
    assert next_deadline({"b": 3}, since, failover(60)) is None


def test_no_failover_section_means_no_eviction() -> None:
    # §1.10: "Without eviction (default in v1.14+): replicas stay where they are".
    assert due_evictions({"a": 2}, {"a": 0.0}, 1e9, None) == frozenset()
    assert due_evictions({"a": 2}, {"a": 0.0}, 1e9, FailoverBehavior()) == frozenset()
    assert next_deadline({"a": 2}, {"a": 0.0}, None) is None


def test_groups_without_replicas_are_never_evicted() -> None:
    assert due_evictions({"a": 0}, {"a": 0.0}, 1000.0, failover(1)) == frozenset()


def test_failover_moves_only_the_lost_replicas() -> None:
    # §1.10: "only the lost replicas are redistributed over remaining candidates
    # (weighted by free capacity for dynamic/aggregated); replicas on healthy clusters
    # are kept".
    p = placement({"replicaScheduling": DYNAMIC})
    clusters = [ClusterView("A", available_replicas=1), ClusterView("B", available_replicas=3),
                ClusterView("C", ready=False, available_replicas=0)]
    state = BindingState(replicas=12, current={"A": 2, "B": 4, "C": 6})
    # Before the toleration the down group keeps its replicas (sticky).
    assert schedule(p, clusters, state).clusters == {"A": 2, "B": 4, "C": 6}
    evicted = evict(state, due_evictions(state.current, {"C": 0.0}, 300.0, failover()))
    assert evicted.current == {"A": 2, "B": 4} and evicted.evicted == {"C"}
    # 6 lost replicas over free capacity A1:B3 -> ... only 4 fit.
    short = schedule(p, clusters, evicted)
    assert not short.scheduled and short.clusters == {"A": 2, "B": 4}
    roomy = [ClusterView("A", available_replicas=2), ClusterView("B", available_replicas=4),
             clusters[2]]
    decision = schedule(p, roomy, evicted)
    # Delta 6 over free 2:4 -> +2, +4: healthy groups keep their replicas and gain.
    assert decision.clusters == {"A": 4, "B": 8}


def test_failover_of_the_1_2_3_static_example() -> None:
    # The system scenario: 10 replicas at 1:2:3 run 2/3/5; group C goes down.
    # §1.10: "StaticWeight instead recomputes over the remaining candidates": 10 at 1:2
    # -> A3 B7, so the healthy groups only gain.
    p = placement({"replicaScheduling": STATIC_1_2_3})
    clusters = [ClusterView("A"), ClusterView("B"), ClusterView("C", ready=False)]
    state = BindingState(replicas=10, current={"A": 2, "B": 3, "C": 5})
    assert schedule(p, clusters, state).clusters == {"A": 2, "B": 3, "C": 5}
    evicted = evict(state, frozenset({"C"}))
    decision = schedule(p, clusters, evicted)
    assert decision.clusters == {"A": 3, "B": 7}
    assert all(decision.clusters[g] >= state.current[g] for g in ("A", "B"))


def test_evicted_group_is_not_a_candidate_even_if_tolerated() -> None:
    p = placement({"replicaScheduling": DYNAMIC, "clusterTolerations": [
        {"key": "nodegroup.edgefleet.io/not-ready", "operator": "Exists"}]})
    state = evict(BindingState(replicas=2, current={"C": 2}), frozenset({"C"}))
    decision = schedule(p, [ClusterView("C", ready=False, available_replicas=9)], state)
    assert not decision.scheduled
    assert decision.message == "0/1 node groups are available: 1 evicted by failover"


def test_failover_with_affinities_tries_the_current_term_then_later_ones() -> None:
    # §1.10: "With clusterAffinities, the reschedule first tries the current term, then
    # later terms."
    state = BindingState(replicas=4, current={"site-1": 4}, observed_affinity="on-prem")
    evicted = evict(state, frozenset({"site-1"}))
    decision = schedule(TERMS, fleet(on_prem_ready=False), evicted)
    assert decision.affinity_name == "rented"
    assert decision.clusters == {"cloud-a": 2, "cloud-b": 2}


# --- §1.10 reschedule triggers --------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "changed", "reason"),
    [
        (BindingState(replicas=4, current={"A": 4}), False, None),
        (BindingState(replicas=4, current={"A": 4}, reschedule_requested=True), False,
         "reschedule requested"),
        (BindingState(replicas=4, current={"A": 4}), True, "placement changed"),
        (BindingState(replicas=5, current={"A": 4}), False,
         "replicas changed: 4 placed, 5 wanted"),
        (BindingState(replicas=4), False, "replicas changed: 0 placed, 4 wanted"),
        (BindingState(replicas=4, current={"A": 2, "gone": 2}), False,
         "node group gone was deleted"),
    ],
)
def test_reschedule_triggers(state: BindingState, changed: bool, reason: str | None) -> None:
    p = placement({"replicaScheduling": DYNAMIC})
    down = [ClusterView("A", ready=False)]  # NotReady alone is not a trigger
    assert reschedule_reason(p, down, state, placement_changed=changed) == reason


def test_duplicated_is_reconciled_every_time() -> None:
    assert reschedule_reason(None, [ClusterView("A")], BindingState(replicas=1,
                             current={"A": 1})) is not None
