"""Replica division strategies reproduce the reference's numbers
(reference/placement-scheduling.md §1.6): Duplicated, static weights with Webster
remainders, dynamic weights by available replicas (fresh, scale-up, scale-down) and
Aggregated."""

from __future__ import annotations

from typing import Any

from cloudcore.placement import BindingState, ClusterView, schedule
from protocol.kinds.policies import Placement, parse_propagation_spec

APP = {"apiVersion": "apps.edgefleet.io/v1alpha1", "kind": "App"}


def placement(body: dict[str, Any]) -> Placement:
    spec = parse_propagation_spec({"spec": {"resourceSelectors": [APP], "placement": body}})
    assert spec.placement is not None
    return spec.placement


def groups(**available: int) -> list[ClusterView]:
    return [ClusterView(name, available_replicas=n) for name, n in available.items()]


DIVIDED_STATIC = {
    "replicaScheduling": {
        "replicaSchedulingType": "Divided",
        "replicaDivisionPreference": "Weighted",
        "weightPreference": {"staticWeightList": [
            {"targetCluster": {"clusterNames": ["A"]}, "weight": 1},
            {"targetCluster": {"clusterNames": ["B"]}, "weight": 2},
            {"targetCluster": {"clusterNames": ["C"]}, "weight": 3},
        ]},
    }
}
DYNAMIC = {"replicaScheduling": {
    "replicaSchedulingType": "Divided", "replicaDivisionPreference": "Weighted",
    "weightPreference": {"dynamicWeight": "AvailableReplicas"}}}
AGGREGATED = {"replicaScheduling": {
    "replicaSchedulingType": "Divided", "replicaDivisionPreference": "Aggregated"}}


# --- Duplicated ------------------------------------------------------------------------


def test_duplicated_gives_every_group_all_replicas() -> None:
    # §1.6 strategy table: "every selected cluster gets spec.replicas".
    p = placement({"replicaScheduling": {"replicaSchedulingType": "Duplicated"}})
    decision = schedule(p, groups(A=0, B=0, C=0), BindingState(replicas=3))
    assert decision.scheduled
    assert decision.clusters == {"A": 3, "B": 3, "C": 3}


def test_no_replica_scheduling_means_duplicated() -> None:
    # §1.6: "If replicaScheduling is nil the placement is treated as Duplicated".
    decision = schedule(placement({}), groups(A=0, B=0), BindingState(replicas=2))
    assert decision.clusters == {"A": 2, "B": 2}
    assert schedule(None, groups(A=0), BindingState(replicas=2)).clusters == {"A": 2}


# --- static weights ------------------------------------------------------------------


def test_static_weights_10_at_1_2_3_give_2_3_5() -> None:
    # §1.6 worked numbers: N=10, A:1 B:2 C:3 -> Webster A2 B3 C5.
    decision = schedule(placement(DIVIDED_STATIC), groups(A=0, B=0, C=0),
                        BindingState(replicas=10))
    assert decision.clusters == {"A": 2, "B": 3, "C": 5}


def test_static_weights_9_at_1_3_give_2_7() -> None:
    # §1.6 worked numbers: N=9, A:1 B:3 -> A2 B7.
    body = {"replicaScheduling": {
        "replicaSchedulingType": "Divided",
        "weightPreference": {"staticWeightList": [
            {"targetCluster": {"clusterNames": ["A"]}, "weight": 1},
            {"targetCluster": {"labelSelector": {"matchLabels": {"size": "big"}}},
             "weight": 3},
        ]}}}
    clusters = [ClusterView("A"), ClusterView("B", labels={"size": "big"})]
    assert schedule(placement(body), clusters, BindingState(replicas=9)).clusters == {
        "A": 2, "B": 7}


def test_static_weight_is_the_largest_matching_entry_and_unmatched_groups_are_dropped() -> None:
    # §1.6 StaticWeight: "max weight among entries whose targetCluster matches";
    # "candidates matching no entry are dropped".
    body = {"replicaScheduling": {
        "replicaSchedulingType": "Divided",
        "weightPreference": {"staticWeightList": [
            {"targetCluster": {"clusterNames": ["A", "B"]}, "weight": 1},
            {"targetCluster": {"clusterNames": ["B"]}, "weight": 3},
        ]}}}
    decision = schedule(placement(body), groups(A=0, B=0, C=0), BindingState(replicas=8))
    assert decision.clusters == {"A": 2, "B": 6}


def test_static_weights_matching_nothing_fall_back_to_equal_weights() -> None:
    # §1.6: "If no candidate matches any entry, all candidates get weight 1."
    body = {"replicaScheduling": {
        "replicaSchedulingType": "Divided",
        "weightPreference": {"staticWeightList": [
            {"targetCluster": {"clusterNames": ["Z"]}, "weight": 5}]}}}
    decision = schedule(placement(body), groups(a=0, b=0, c=0), BindingState(replicas=6))
    assert decision.clusters == {"a": 2, "b": 2, "c": 2}


def test_divided_without_preference_is_equal_weights_with_the_uid_tie_break() -> None:
    # §1.6: Divided defaults to Weighted with equal weights; 4 at 1:1:1 is a2 b1 c1,
    # or c2 with the descending tie-break, chosen per workload from its UID.
    body = {"replicaScheduling": {"replicaSchedulingType": "Divided"}}
    ascending = schedule(placement(body), groups(a=0, b=0, c=0),
                         BindingState(replicas=4, uid="uid-2"))
    descending = schedule(placement(body), groups(a=0, b=0, c=0),
                          BindingState(replicas=4, uid="uid-1"))
    assert ascending.clusters == {"a": 2, "b": 1, "c": 1}
    assert descending.clusters == {"a": 1, "b": 1, "c": 2}


def test_static_weights_ignore_capacity() -> None:
    # §1.6: "Cluster capacity is not consulted".
    decision = schedule(placement(DIVIDED_STATIC), groups(A=0, B=0, C=1),
                        BindingState(replicas=10))
    assert decision.clusters == {"A": 2, "B": 3, "C": 5}


def test_static_weights_are_recomputed_from_scratch() -> None:
    # §1.6: StaticWeight is stateless - a previous result does not matter.
    decision = schedule(placement(DIVIDED_STATIC), groups(A=0, B=0, C=0),
                        BindingState(replicas=10, current={"A": 7, "C": 3}))
    assert decision.clusters == {"A": 2, "B": 3, "C": 5}


# --- dynamic weights ------------------------------------------------------------------


def test_dynamic_weight_12_at_6_12_18_gives_2_4_6() -> None:
    # §1.6 worked numbers: N=12 with dynamic weights 6:12:18 -> A2 B4 C6.
    decision = schedule(placement(DYNAMIC), groups(A=6, B=12, C=18),
                        BindingState(replicas=12))
    assert decision.clusters == {"A": 2, "B": 4, "C": 6}


def test_dynamic_weight_scale_up_adds_only_the_delta_by_free_capacity() -> None:
    # §1.6 Scale up: existing replicas stay; the delta (18 - 12 = 6) is divided by free
    # capacity (A:6, B:0, C:3 -> A4 C2) and added on: A6 B4 C8.
    decision = schedule(placement(DYNAMIC), groups(A=6, B=0, C=3),
                        BindingState(replicas=18, current={"A": 2, "B": 4, "C": 6}))
    assert decision.clusters == {"A": 6, "B": 4, "C": 8}


def test_dynamic_weight_scale_down_shrinks_proportionally() -> None:
    # §1.6 Scale down: the desired count re-divided by the current replicas as weights:
    # A2 B4 C6 down to 6 -> A1 B2 C3, whatever the free capacity says.
    decision = schedule(placement(DYNAMIC), groups(A=100, B=0, C=0),
                        BindingState(replicas=6, current={"A": 2, "B": 4, "C": 6}))
    assert decision.clusters == {"A": 1, "B": 2, "C": 3}


def test_dynamic_weight_steady_state_keeps_the_previous_result() -> None:
    # §1.6: "assigned == desired -> keep the previous result unchanged".
    decision = schedule(placement(DYNAMIC), groups(A=50, B=0, C=0),
                        BindingState(replicas=12, current={"A": 2, "B": 4, "C": 6}))
    assert decision.clusters == {"A": 2, "B": 4, "C": 6}


def test_dynamic_weight_scale_up_beyond_free_capacity_is_unschedulable() -> None:
    # §1.6: "fail with Unschedulable if sum free < delta"; the old result is kept.
    state = BindingState(replicas=20, current={"A": 2, "B": 4, "C": 6})
    decision = schedule(placement(DYNAMIC), groups(A=1, B=1, C=1), state)
    assert not decision.scheduled
    assert decision.clusters == {"A": 2, "B": 4, "C": 6}
    assert "room for 3 more replica(s), 8 needed" in decision.message


def test_fresh_division_weighs_free_plus_current() -> None:
    # §1.6 Fresh (explicit reschedule): weights = free capacity + replicas already there:
    # A 0+2, B 4+4, C 0+6, so 12 over 2:8:6 (quotas 1.5, 6, 4.5).  The last seat is a tie
    # between A's second (2/3) and C's fifth (6/9); fewer seats wins: A2 B6 C4.
    state = BindingState(replicas=12, current={"A": 2, "B": 4, "C": 6},
                         reschedule_requested=True)
    decision = schedule(placement(DYNAMIC), groups(A=0, B=4, C=0), state)
    assert decision.clusters == {"A": 2, "B": 6, "C": 4}


# --- Aggregated ----------------------------------------------------------------------


def test_aggregated_20_over_18_12_6_uses_the_two_biggest() -> None:
    # §1.6: "target 20 with capacities C=18, B=12, A=6 -> prefix {C,B} -> C12, B8".
    decision = schedule(placement(AGGREGATED), groups(A=6, B=12, C=18),
                        BindingState(replicas=20))
    assert decision.clusters == {"B": 8, "C": 12}


def test_aggregated_12_fits_in_the_biggest_alone() -> None:
    # §1.6: "target 12 -> C alone -> C12".
    decision = schedule(placement(AGGREGATED), groups(A=6, B=12, C=18),
                        BindingState(replicas=12))
    assert decision.clusters == {"C": 12}


def test_aggregated_scale_up_prefers_groups_already_holding_replicas() -> None:
    # §1.6: holders come first in the Aggregated order, even if smaller.
    decision = schedule(placement(AGGREGATED), groups(A=6, B=12, C=2),
                        BindingState(replicas=14, current={"C": 12}))
    # Delta 2 fits in C's 2 free: C14; nothing spills to the bigger B.
    assert decision.clusters == {"C": 14}


def test_aggregated_beyond_total_capacity_is_unschedulable() -> None:
    decision = schedule(placement(AGGREGATED), groups(A=6, B=12, C=18),
                        BindingState(replicas=40))
    assert not decision.scheduled
    assert decision.clusters == {}
    assert "room for 36 more replica(s), 40 needed" in decision.message


def test_zero_replicas_place_nothing() -> None:
    decision = schedule(placement(DIVIDED_STATIC), groups(A=0, B=0, C=0),
                        BindingState(replicas=0))
    assert decision.scheduled and decision.clusters == {}
