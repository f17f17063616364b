"""Which node groups a policy may use: clusterAffinity (§1.2), clusterTolerations and
the not-ready taint with its sticky exception (§1.4, §1.10), spreadConstraints (§1.5)
- reference/placement-scheduling.md."""

from __future__ import annotations

from typing import Any

import pytest

from cloudcore.placement import (
    BindingState,
    ClusterView,
    Taint,
    affinity_matches,
    estimate_replicas,
    schedule,
)
from protocol.kinds.policies import (
    ClusterAffinity,
    Placement,
    TaintEffect,
    parse_propagation_spec,
)

APP = {"apiVersion": "apps.edgefleet.io/v1alpha1", "kind": "App"}


def placement(body: dict[str, Any]) -> Placement:
    spec = parse_propagation_spec({"spec": {"resourceSelectors": [APP], "placement": body}})
    assert spec.placement is not None
    return spec.placement


def affinity(body: dict[str, Any]) -> ClusterAffinity:
    p = placement({"clusterAffinity": body})
    assert p.clusterAffinity is not None
    return p.clusterAffinity


FACTORY_A = ClusterView("group-01", labels={"site": "factory-a"}, region="eu-west",
                        zone="eu-west-1a", provider="on-prem")
FACTORY_A_US = ClusterView("group-02", labels={"site": "factory-a"}, region="us-east")
EXCLUDED = ClusterView("group-07", labels={"site": "factory-a"}, region="eu-west")
FACTORY_B = ClusterView("group-03", labels={"site": "factory-b"}, region="eu-west")


# --- §1.2 clusterAffinity -------------------------------------------------------------


def test_reference_example_affinity() -> None:
    # §1.2 example: label site=factory-a AND region In [eu-west], excluding group-07.
    aff = affinity({
        "labelSelector": {"matchLabels": {"site": "factory-a"}},
        "fieldSelector": {"matchExpressions": [
            {"key": "region", "operator": "In", "values": ["eu-west"]}]},
        "exclude": ["group-07"],
    })
    assert affinity_matches(aff, FACTORY_A)
    assert not affinity_matches(aff, FACTORY_A_US)  # region fails
    assert not affinity_matches(aff, EXCLUDED)  # exclude wins
    assert not affinity_matches(aff, FACTORY_B)  # labels fail


def test_exclude_wins_even_over_cluster_names() -> None:
    # §1.2 rule 1: a name in exclude never matches.
    aff = affinity({"clusterNames": ["group-01", "group-07"], "exclude": ["group-07"]})
    assert affinity_matches(aff, FACTORY_A)
    assert not affinity_matches(aff, EXCLUDED)


def test_all_criteria_empty_match_everything() -> None:
    # §1.2 rule 3, and "if neither clusterAffinity nor clusterAffinities is set, all
    # clusters are candidates".
    for group in (FACTORY_A, FACTORY_A_US, EXCLUDED, FACTORY_B):
        assert affinity_matches(affinity({}), group)
        assert affinity_matches(None, group)
    assert affinity_matches(affinity({"clusterNames": []}), FACTORY_B)


def test_cluster_names_and_labels_must_both_hold() -> None:
    # §1.2 rule 2: every non-empty criterion holds (logical AND).
    aff = affinity({"clusterNames": ["group-03", "group-01"],
                    "labelSelector": {"matchLabels": {"site": "factory-b"}}})
    assert affinity_matches(aff, FACTORY_B)
    assert not affinity_matches(aff, FACTORY_A)


@pytest.mark.parametrize(
    ("key", "operator", "values", "matches"),
    [
        ("zone", "In", ["eu-west-1a"], True),
        ("zone", "NotIn", ["eu-west-1a"], False),
        ("provider", "In", ["on-prem", "aws"], True),
        ("provider", "NotIn", ["aws"], True),
        ("region", "NotIn", ["eu-west"], False),
    ],
)
def test_field_selector_keys(key: str, operator: str, values: list[str], matches: bool) -> None:
    # §1.2: fieldSelector keys provider, region, zone with In / NotIn.
    aff = affinity({"fieldSelector": {"matchExpressions": [
        {"key": key, "operator": operator, "values": values}]}})
    assert affinity_matches(aff, FACTORY_A) is matches


def test_group_without_the_field_fails_in_and_passes_not_in() -> None:
    bare = ClusterView("bare")
    assert not affinity_matches(affinity({"fieldSelector": {"matchExpressions": [
        {"key": "region", "operator": "In", "values": ["eu-west"]}]}}), bare)
    assert affinity_matches(affinity({"fieldSelector": {"matchExpressions": [
        {"key": "region", "operator": "NotIn", "values": ["eu-west"]}]}}), bare)


def test_nothing_matching_explains_itself() -> None:
    p = placement({"clusterAffinity": {"labelSelector": {"matchLabels": {"site": "factory-z"}}}})
    decision = schedule(p, [FACTORY_A, FACTORY_B], BindingState(replicas=1))
    assert not decision.scheduled
    assert decision.clusters == {}
    assert decision.message == (
        "0/2 node groups are available: 2 not selected by the cluster affinity"
    )


# --- §1.4 taints, tolerations, the sticky exception -----------------------------------


def test_not_ready_group_gets_no_new_replicas() -> None:
    # §1.9 (v1.14+): a NotReady cluster is tainted NoSchedule; new placements avoid it.
    clusters = [ClusterView("a"), ClusterView("b", ready=False), ClusterView("c", ready=False)]
    decision = schedule(placement({}), clusters, BindingState(replicas=2))
    assert decision.clusters == {"a": 2}
    down = schedule(placement({}), clusters[1:], BindingState(replicas=2))
    assert down.message == "0/2 node groups are available: 2 not ready"


def test_sticky_exception_keeps_a_not_ready_group_already_in_the_result() -> None:
    # §1.4: "a cluster that is already in the binding's current result is never
    # filtered by taints"; §1.10: "Even Duplicated keeps the unreachable cluster".
    clusters = [ClusterView("a"), ClusterView("b", ready=False)]
    decision = schedule(placement({}), clusters,
                        BindingState(replicas=2, current={"a": 2, "b": 2}))
    assert decision.clusters == {"a": 2, "b": 2}


def test_toleration_lets_new_replicas_onto_a_tainted_group() -> None:
    p = placement({"clusterTolerations": [
        {"key": "nodegroup.edgefleet.io/not-ready", "operator": "Exists"}]})
    decision = schedule(p, [ClusterView("b", ready=False)], BindingState(replicas=1))
    assert decision.clusters == {"b": 1}


@pytest.mark.parametrize(
    ("toleration", "tolerated"),
    [
        ({"key": "gpu", "operator": "Equal", "value": "busy", "effect": "NoSchedule"}, True),
        ({"key": "gpu", "value": "busy"}, True),  # Equal is the default; any effect
        ({"key": "gpu", "operator": "Exists"}, True),
        ({"operator": "Exists"}, True),  # empty key with Exists tolerates everything
        ({"key": "gpu", "value": "idle"}, False),
        ({"key": "gpu", "operator": "Exists", "effect": "NoExecute"}, False),
        ({"key": "other", "operator": "Exists"}, False),
    ],
)
def test_toleration_matching(toleration: dict[str, Any], tolerated: bool) -> None:
    group = ClusterView("g", taints=(Taint("gpu", TaintEffect.NO_SCHEDULE, "busy"),))
    p = placement({"clusterTolerations": [toleration]})
    decision = schedule(p, [group], BindingState(replicas=1))
    assert decision.scheduled is tolerated
    if not tolerated:
        assert "untolerated taint gpu=busy:NoSchedule" in decision.message


def test_prefer_no_schedule_never_blocks() -> None:
    # §1.4: "PreferNoSchedule is ignored by the filter".
    group = ClusterView("g", taints=(Taint("slow", TaintEffect.PREFER_NO_SCHEDULE),))
    assert schedule(placement({}), [group], BindingState(replicas=1)).clusters == {"g": 1}


def test_no_execute_taint_blocks_new_placements() -> None:
    # §1.4: the filter considers NoSchedule and NoExecute.
    group = ClusterView("g", taints=(Taint("drain", TaintEffect.NO_EXECUTE),))
    assert not schedule(placement({}), [group], BindingState(replicas=1)).scheduled


# --- §1.5 spreadConstraints ---------------------------------------------------------


def spread(*constraints: dict[str, Any], divided: bool = False) -> Placement:
    body: dict[str, Any] = {"spreadConstraints": list(constraints)}
    if divided:
        body["replicaScheduling"] = {
            "replicaSchedulingType": "Divided", "replicaDivisionPreference": "Weighted",
            "weightPreference": {"dynamicWeight": "AvailableReplicas"}}
    return placement(body)


def sized(**available: int) -> list[ClusterView]:
    return [ClusterView(n, available_replicas=a) for n, a in available.items()]


def test_by_cluster_takes_the_best_max_groups() -> None:
    # §1.5 by cluster: n = min(#feasible, maxGroups), ordered by available replicas
    # desc, then name.
    p = spread({"spreadByField": "cluster", "minGroups": 1, "maxGroups": 2})
    decision = schedule(p, sized(a=1, b=5, c=3), BindingState(replicas=1))
    assert decision.clusters == {"b": 1, "c": 1}


def test_by_cluster_fails_below_min_groups() -> None:
    # §1.5: "fail if feasible clusters < minGroups".
    p = spread({"spreadByField": "cluster", "minGroups": 3, "maxGroups": 3})
    decision = schedule(p, sized(a=1, b=5), BindingState(replicas=1))
    assert not decision.scheduled
    assert "at least 3" in decision.message


def test_current_groups_are_preferred_over_bigger_ones() -> None:
    # §1.5: ClusterLocality scores the current result 100, so it sorts first.
    p = spread({"spreadByField": "cluster", "minGroups": 1, "maxGroups": 1})
    decision = schedule(p, sized(a=1, b=5), BindingState(replicas=1, current={"a": 1}))
    assert decision.clusters == {"a": 1}


def test_by_cluster_swaps_in_capacity_for_divided_workloads() -> None:
    # §1.5: when the picks cannot hold the replicas, picks are swapped, from the last one
    # forwards, for remaining groups with more available replicas.  Ranking: a (current,
    # 0 free + 2 held), c 8, b 3, d 1; picks a, c hold 10 < 11.  c is not beaten by b,
    # a is: the picks become b, c (11), and the 11 replicas go 8:3.
    p = spread({"spreadByField": "cluster", "minGroups": 1, "maxGroups": 2}, divided=True)
    decision = schedule(p, sized(a=0, b=3, c=8, d=1), BindingState(replicas=11,
                                                                   current={"a": 2}))
    assert decision.clusters == {"b": 3, "c": 8}


def test_by_cluster_swap_replaces_a_current_group_that_is_too_small() -> None:
    p = spread({"spreadByField": "cluster", "minGroups": 1, "maxGroups": 1}, divided=True)
    # a is current (ranked first) but can hold only 3 in all; d can hold 9.
    decision = schedule(p, sized(a=1, d=9), BindingState(replicas=6, current={"a": 2}))
    assert decision.clusters == {"d": 6}


def test_by_cluster_without_enough_capacity_is_unschedulable() -> None:
    p = spread({"spreadByField": "cluster", "minGroups": 1, "maxGroups": 2}, divided=True)
    decision = schedule(p, sized(a=1, b=2, c=3), BindingState(replicas=10))
    assert not decision.scheduled
    assert "can take 5 of 10 replicas" in decision.message


def test_duplicated_spread_ignores_capacity() -> None:
    # §1.5: "For Duplicated, capacity is ignored."
    p = spread({"spreadByField": "cluster", "minGroups": 1, "maxGroups": 2})
    assert schedule(p, sized(a=0, b=0, c=0), BindingState(replicas=5)).clusters == {
        "a": 5, "b": 5}


def test_static_weights_ignore_spread_constraints() -> None:
    # §1.5: "Spread constraints are ignored entirely for Divided + Weighted with a static
    # weight list (or weighted with no weightPreference)."
    p = placement({
        "spreadConstraints": [{"spreadByField": "cluster", "minGroups": 1, "maxGroups": 1}],
        "replicaScheduling": {"replicaSchedulingType": "Divided"},
    })
    assert schedule(p, sized(a=0, b=0, c=0), BindingState(replicas=3)).clusters == {
        "a": 1, "b": 1, "c": 1}


def regions() -> list[ClusterView]:
    return [
        ClusterView("eu-1", region="eu", available_replicas=5),
        ClusterView("eu-2", region="eu", available_replicas=4),
        ClusterView("us-1", region="us", available_replicas=3),
        ClusterView("us-2", region="us", available_replicas=9),
        ClusterView("ap-1", region="ap", available_replicas=1),
        ClusterView("nowhere", available_replicas=50),
    ]


def test_by_region_takes_the_best_group_of_each_region_then_fills() -> None:
    # §1.5 by region: 2 regions (ranked by capacity: us 12, eu 9), the best group of
    # each (us-2, eu-1), then up to cluster maxGroups 3 from the rest of those regions
    # by available replicas (eu-2 4 > us-1 3).  A group with no region is filtered out.
    p = spread({"spreadByField": "region", "minGroups": 2, "maxGroups": 2},
               {"spreadByField": "cluster", "minGroups": 2, "maxGroups": 3})
    decision = schedule(p, regions(), BindingState(replicas=1))
    assert decision.clusters == {"us-2": 1, "eu-1": 1, "eu-2": 1}


def test_by_region_grows_regions_until_cluster_min_groups_is_met() -> None:
    # §1.5: regions are chosen "starting at region minGroups regions, growing up to
    # maxGroups ... such that their total cluster count can satisfy the cluster minGroups".
    # One region (us, best) holds only 2 groups, so a second (eu) is added; a third (ap)
    # is not needed.  Then the best of each, filled by available replicas.
    p = spread({"spreadByField": "region", "minGroups": 1, "maxGroups": 3},
               {"spreadByField": "cluster", "minGroups": 3, "maxGroups": 3})
    decision = schedule(p, regions(), BindingState(replicas=1))
    assert set(decision.clusters) == {"us-2", "eu-1", "eu-2"}
    # With one region allowed the cluster minimum cannot be met.
    p = spread({"spreadByField": "region", "minGroups": 1, "maxGroups": 1},
               {"spreadByField": "cluster", "minGroups": 3, "maxGroups": 3})
    assert not schedule(p, regions(), BindingState(replicas=1)).scheduled


def test_by_region_fails_with_too_few_regions() -> None:
    # §1.5: "fail if #regions < region minGroups".
    p = spread({"spreadByField": "region", "minGroups": 4, "maxGroups": 4},
               {"spreadByField": "cluster", "minGroups": 1, "maxGroups": 6})
    decision = schedule(p, regions(), BindingState(replicas=1))
    assert not decision.scheduled
    assert "3 region(s)" in decision.message


def test_spread_by_zone_or_label_works_like_region() -> None:
    clusters = [ClusterView("a", labels={"rack": "r1"}), ClusterView("b", labels={"rack": "r1"}),
                ClusterView("c", labels={"rack": "r2"})]
    p = spread({"spreadByLabel": "rack", "minGroups": 2, "maxGroups": 2},
               {"spreadByField": "cluster", "minGroups": 2, "maxGroups": 2})
    decision = schedule(p, clusters, BindingState(replicas=1))
    assert set(decision.clusters) in ({"a", "c"}, {"b", "c"})
    assert len(decision.clusters) == 2


def test_groups_lacking_the_spread_field_are_explained() -> None:
    p = spread({"spreadByField": "region", "minGroups": 1, "maxGroups": 1},
               {"spreadByField": "cluster", "minGroups": 1, "maxGroups": 1})
    decision = schedule(p, [ClusterView("x")], BindingState(replicas=1))
    assert decision.message == "0/1 node groups are available: 1 no region to spread by"


# --- §3.2 the general estimator -------------------------------------------------------


def test_estimator_takes_the_tightest_resource() -> None:
    # §3.2 step 3: min over requested resources of floor(free / request).
    free = {"cpu": 3500, "memory": 8 * 2**30}
    assert estimate_replicas(free, {"cpu": 500, "memory": 2**30}) == 7
    assert estimate_replicas(free, {"cpu": 500, "memory": 3 * 2**30}) == 2
    assert estimate_replicas(free, {"gpu": 1}) == 0  # a resource the group lacks
    assert estimate_replicas({"cpu": -5}, {"cpu": 1}) == 0
    assert estimate_replicas(free, {}) == 2**31 - 1  # no request: not limited


def test_cluster_view_from_a_nodegroup_object() -> None:
    group = {"apiVersion": "apps.kubeedge.io/v1alpha1", "kind": "NodeGroup",
             "metadata": {"name": "factory-a", "labels": {"site": "a"}},
             "spec": {"region": "eu-west", "zone": "eu-west-1a"},
             "status": {"readyNodes": 0}}
    view = ClusterView.from_nodegroup(group, available_replicas=4)
    assert (view.name, view.region, view.zone, view.provider) == (
        "factory-a", "eu-west", "eu-west-1a", None)
    assert view.labels == {"site": "a"}
    assert not view.ready and view.available_replicas == 4
    assert ClusterView.from_nodegroup({**group, "status": {"readyNodes": 2}}).ready
