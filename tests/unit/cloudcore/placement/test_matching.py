"""Which PropagationPolicy governs an App and in what order OverridePolicies apply:
implicit priority (§1.1), explicit priority, name order and preemption (§1.7),
schedulerName (§1.8), override ordering (§2) - reference/placement-scheduling.md."""

from __future__ import annotations

from typing import Any

from cloudcore.placement import (
    ImplicitPriority,
    OverridePolicyView,
    PropagationPolicyView,
    handled_by,
    override_policies_for,
    propagation_policy_for,
)
from cloudcore.placement.matching import resource_priority

API = "apps.edgefleet.io/v1alpha1"

APP = {
    "apiVersion": API, "kind": "App",
    "metadata": {"name": "camera-ingest", "namespace": "vision", "labels": {"tier": "edge"}},
    "spec": {"command": ["python3", "ingest.py"]},
}

BY_NAME = {"apiVersion": API, "kind": "App", "name": "camera-ingest"}
BY_LABEL = {"apiVersion": API, "kind": "App", "labelSelector": {"matchLabels": {"tier": "edge"}}}
BY_KIND = {"apiVersion": API, "kind": "App"}


def pp(name: str, *selectors: dict[str, Any], namespace: str = "vision",
       **spec: Any) -> PropagationPolicyView:
    return PropagationPolicyView.from_object({
        "apiVersion": "policy.edgefleet.io/v1alpha1", "kind": "PropagationPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"resourceSelectors": list(selectors), **spec},
    })


def op(name: str, *selectors: dict[str, Any], namespace: str = "vision") -> OverridePolicyView:
    spec: dict[str, Any] = {"resourceSelectors": list(selectors)} if selectors else {}
    return OverridePolicyView.from_object({
        "apiVersion": "policy.edgefleet.io/v1alpha1", "kind": "OverridePolicy",
        "metadata": {"name": name, "namespace": namespace}, "spec": spec,
    })


def names(policies: list[OverridePolicyView]) -> list[str]:
    return [p.name for p in policies]


def chosen(*policies: PropagationPolicyView, claimed_by: str | None = None) -> str | None:
    found = propagation_policy_for(APP, policies, claimed_by=claimed_by)
    return found.name if found else None


# --- §1.1 implicit priority -----------------------------------------------------------


def test_implicit_priority_of_each_selector_kind() -> None:
    # §1.1: name match > labelSelector match > apiVersion/kind-only match.
    def prio(sel: dict[str, Any]) -> ImplicitPriority:
        return resource_priority(APP, pp("p", sel).spec.resourceSelectors)

    assert prio(BY_NAME) is ImplicitPriority.NAME
    assert prio(BY_LABEL) is ImplicitPriority.LABEL_SELECTOR
    assert prio(BY_KIND) is ImplicitPriority.KIND
    assert prio({**BY_NAME, "name": "other"}) is ImplicitPriority.MISMATCH
    assert prio({**BY_LABEL, "labelSelector": {"matchLabels": {"tier": "core"}}}) is (
        ImplicitPriority.MISMATCH)
    assert prio({**BY_KIND, "namespace": "other"}) is ImplicitPriority.MISMATCH
    assert prio({**BY_KIND, "kind": "Device", "apiVersion": "devices.kubeedge.io/v1beta1"}) is (
        ImplicitPriority.MISMATCH)
    # "labelSelector (ignored when name is set)"
    assert prio({**BY_NAME, "labelSelector": {"matchLabels": {"tier": "core"}}}) is (
        ImplicitPriority.NAME)


def test_any_matching_selector_counts_and_the_best_one_decides() -> None:
    # §1.1: "A resource matches a policy if it matches any selector"; the reference's
    # example policy has a name selector and a label selector.
    selectors = pp("p", {**BY_NAME, "name": "other"}, BY_LABEL).spec.resourceSelectors
    assert resource_priority(APP, selectors) is ImplicitPriority.LABEL_SELECTOR


def test_name_match_beats_label_match_beats_kind_match() -> None:
    # §1.7: equal explicit priority -> higher implicit priority wins.
    assert chosen(pp("a-kind", BY_KIND), pp("b-label", BY_LABEL), pp("c-name", BY_NAME)) == (
        "c-name")
    assert chosen(pp("a-kind", BY_KIND), pp("b-label", BY_LABEL)) == "b-label"


def test_explicit_priority_comes_first() -> None:
    # §1.7: "highest explicit priority -> if equal, higher implicit priority -> if equal,
    # alphabetically smaller policy name".
    assert chosen(pp("by-name", BY_NAME), pp("by-kind", BY_KIND, priority=5)) == "by-kind"


def test_alphabetical_name_breaks_ties() -> None:
    assert chosen(pp("zeta", BY_LABEL), pp("alpha", BY_LABEL)) == "alpha"


def test_only_policies_in_the_resource_namespace_count() -> None:
    # §1.7: a namespaced PropagationPolicy applies in its own namespace.
    assert chosen(pp("elsewhere", BY_NAME, namespace="other")) is None
    assert chosen() is None


def test_a_claimed_resource_keeps_its_policy() -> None:
    # §1.7: "once claimed by a policy ... keeps that policy; later policies do not steal it
    # unless preemption applies".
    assert chosen(pp("old", BY_KIND), pp("new", BY_NAME, priority=9), claimed_by="old") == "old"


def test_preemption_always_takes_over_from_a_lower_priority_policy() -> None:
    # §1.7: with preemption Always a PP takes a resource from a lower-priority PP.
    new = pp("new", BY_KIND, priority=9, preemption="Always")
    assert chosen(pp("old", BY_NAME, priority=1), new, claimed_by="old") == "new"
    equal = pp("new", BY_NAME, priority=1, preemption="Always")
    assert chosen(pp("old", BY_KIND, priority=1), equal, claimed_by="old") == "old"


def test_a_claim_by_a_policy_that_no_longer_matches_is_dropped() -> None:
    gone = pp("old", {**BY_NAME, "name": "renamed"})
    assert chosen(gone, pp("new", BY_KIND), claimed_by="old") == "new"
    assert chosen(pp("new", BY_KIND), claimed_by="deleted") == "new"


# --- §1.8 schedulerName ---------------------------------------------------------------


def test_scheduler_name_leaves_other_schedulers_policies_alone() -> None:
    # §1.8: a scheduler handles only bindings whose schedulerName matches; empty means the
    # default scheduler.
    assert handled_by(pp("p", BY_KIND).spec)
    assert handled_by(pp("p", BY_KIND, schedulerName="default-scheduler").spec)
    custom = pp("p", BY_KIND, schedulerName="edge-batch").spec
    assert not handled_by(custom)
    assert handled_by(custom, "edge-batch")


# --- §2 override order ----------------------------------------------------------------


def test_overrides_apply_from_least_to_most_specific() -> None:
    # §2: "sort ascending by implicit priority ... empty selectors / kind-only <
    # labelSelector < name; ties by policy name ascending".
    policies = [op("z-name", BY_NAME), op("a-name", BY_NAME), op("m-label", BY_LABEL),
                op("b-kind", BY_KIND), op("x-all"), op("miss", {**BY_NAME, "name": "x"}),
                op("other-ns", BY_NAME, namespace="default")]
    assert names(override_policies_for(APP, policies)) == [
        "b-kind", "x-all", "m-label", "a-name", "z-name"]
