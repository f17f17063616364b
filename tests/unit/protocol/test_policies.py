"""PropagationPolicy and OverridePolicy validation at apply time: well-formed policies
(Karmada's field names, reference/placement-scheduling.md §1-§2) are accepted
unchanged; bad ones - unknown fields, negative weights, selectors that can never match,
contradictory spread constraints - are refused with the path of the offending field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

import protocol.kinds  # noqa: F401  (registers every kind)
from protocol.kinds.policies import (
    DEFAULT_SCHEDULER,
    OVERRIDE_POLICY,
    PROPAGATION_POLICY,
    ReplicaDivisionPreference,
    ReplicaSchedulingType,
    SpreadField,
    parse_propagation_spec,
)
from protocol.resources import REGISTRY, validate_object
from tests.unit.protocol.manifests import load, rejection

# The reference's examples (§1.1-§1.9), under our API group and aimed at Apps.
FULL_PP = """
apiVersion: policy.edgefleet.io/v1alpha1
kind: PropagationPolicy
metadata: {name: camera-ingest, namespace: vision}
spec:
  resourceSelectors:
    - apiVersion: apps.edgefleet.io/v1alpha1
      kind: App
      name: camera-ingest
    - apiVersion: apps.edgefleet.io/v1alpha1
      kind: App
      labelSelector:
        matchLabels: {tier: edge}
  priority: 10
  preemption: Always
  schedulerName: default-scheduler
  failover:
    application:
      decisionConditions: {tolerationSeconds: 60}
      purgeMode: Gracefully
      gracePeriodSeconds: 600
  placement:
    clusterAffinity:
      labelSelector: {matchLabels: {site: factory-a}}
      fieldSelector:
        matchExpressions:
          - {key: region, operator: In, values: [eu-west]}
      exclude: [group-07]
    clusterTolerations:
      - {key: nodegroup.edgefleet.io/not-ready, operator: Exists, effect: NoSchedule}
    spreadConstraints:
      - {spreadByField: region,  minGroups: 2, maxGroups: 2}
      - {spreadByField: cluster, minGroups: 2, maxGroups: 4}
    replicaScheduling:
      replicaSchedulingType: Divided
      replicaDivisionPreference: Weighted
      weightPreference:
        staticWeightList:
          - {targetCluster: {clusterNames: [edge-a]}, weight: 1}
          - {targetCluster: {labelSelector: {matchLabels: {size: big}}}, weight: 3}
"""

AFFINITIES_PP = """
apiVersion: policy.edgefleet.io/v1alpha1
kind: PropagationPolicy
metadata: {name: fallback}
spec:
  resourceSelectors:
    - {apiVersion: apps.edgefleet.io/v1alpha1, kind: App}
  placement:
    clusterAffinities:
      - affinityName: on-prem
        labelSelector: {matchLabels: {owner: us}}
      - affinityName: rented
        clusterNames: [cloud-a, cloud-b]
    replicaScheduling:
      replicaSchedulingType: Divided
      replicaDivisionPreference: Weighted
      weightPreference: {dynamicWeight: AvailableReplicas}
"""

FULL_OP = """
apiVersion: policy.edgefleet.io/v1alpha1
kind: OverridePolicy
metadata: {name: arm-edge, namespace: vision}
spec:
  resourceSelectors:
    - {apiVersion: apps.edgefleet.io/v1alpha1, kind: App, name: camera-ingest}
  overrideRules:
    - targetCluster: {labelSelector: {matchLabels: {arch: arm64}}}
      overriders:
        artifactOverrider:
          - name: model.bin
            operator: replace
            value: {sha256: "0000000000000000000000000000000000000000000000000000000000000000"}
        commandOverrider:
          - {operator: add, value: [--verbose]}
        argsOverrider:
          - {containerName: camera-ingest, operator: add, value: [--low-power]}
        envOverrider:
          - {operator: add, value: {LOG_LEVEL: debug}}
        labelsOverrider:
          - {operator: add, value: {arch: arm64}}
        annotationsOverrider:
          - {operator: remove, value: {note: ""}}
        plaintext:
          - {path: /spec/nodeSelector, operator: add, value: {edge: "true"}}
          - {path: /spec/workingDir, operator: remove}
    - overriders:
        labelsOverrider:
          - {operator: replace, value: {tier: edge}}
"""


@pytest.mark.parametrize("text", [FULL_PP, AFFINITIES_PP, FULL_OP])
def test_well_formed_policy_is_accepted_unchanged(text: str) -> None:
    obj = load(text)
    _, out = validate_object(copy.deepcopy(obj))
    expected = copy.deepcopy(obj)
    expected["metadata"].setdefault("namespace", "default")
    assert out == expected


def test_kinds_are_registered_with_karmada_short_names() -> None:
    assert REGISTRY.resolve("pp") is PROPAGATION_POLICY
    assert REGISTRY.resolve("propagationpolicies") is PROPAGATION_POLICY
    assert REGISTRY.resolve("op") is OVERRIDE_POLICY
    assert REGISTRY.resolve("overridepolicies") is OVERRIDE_POLICY
    assert PROPAGATION_POLICY.namespaced and OVERRIDE_POLICY.namespaced
    assert PROPAGATION_POLICY.api_version == "policy.edgefleet.io/v1alpha1"
    assert PROPAGATION_POLICY.object_path("vision", "x") == (
        "/apis/policy.edgefleet.io/v1alpha1/namespaces/vision/propagationpolicies/x"
    )
    assert PROPAGATION_POLICY.columns[0].header == "PRIORITY"


def test_karmada_defaults() -> None:
    # §1.6: no replicaScheduling means Duplicated; Divided with no preference is
    # Weighted.  §1.8: the default scheduler.  §1.5: minGroups 0 counts as 1.
    bare = parse_propagation_spec({"spec": {
        "resourceSelectors": [{"apiVersion": "apps.edgefleet.io/v1alpha1", "kind": "App"}],
        "placement": {"spreadConstraints": [{"maxGroups": 2}]},
    }})
    assert bare.placement is not None
    assert bare.placement.replica_scheduling_type is ReplicaSchedulingType.DUPLICATED
    assert bare.scheduler_name == DEFAULT_SCHEDULER
    assert bare.explicit_priority == 0
    (spread,) = bare.placement.spreadConstraints or []
    assert (spread.field, spread.min_groups, spread.max_groups) == (SpreadField.CLUSTER, 1, 2)
    divided = parse_propagation_spec({"spec": {
        "resourceSelectors": [{"apiVersion": "apps.edgefleet.io/v1alpha1", "kind": "App"}],
        "placement": {"replicaScheduling": {}},
    }})
    assert divided.placement is not None and divided.placement.replicaScheduling is not None
    assert divided.placement.replica_scheduling_type is ReplicaSchedulingType.DIVIDED
    assert divided.placement.replicaScheduling.division is ReplicaDivisionPreference.WEIGHTED


def _set(path: list[str | int], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(obj: dict[str, Any]) -> None:
        cur: Any = obj
        for step in path[:-1]:
            cur = cur[step]
        cur[path[-1]] = value

    return mutate


PL = ["spec", "placement"]
AFF: list[str | int] = [*PL, "clusterAffinity"]
SPREAD: list[str | int] = [*PL, "spreadConstraints"]
WEIGHTS: list[str | int] = [*PL, "replicaScheduling", "weightPreference", "staticWeightList"]
IN_EMPTY = {"matchExpressions": [{"key": "site", "operator": "In", "values": []}]}


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        # unknown fields, including Karmada fields edgefleet does not implement
        (_set(["spec", "propagateDeps"], True), "spec.propagateDeps"),
        (_set([*AFF, "clusterName"], ["a"]), "spec.placement.clusterAffinity.clusterName"),
        (_set([*WEIGHTS, 0, "wieght"], 1),
         "spec.placement.replicaScheduling.weightPreference.staticWeightList[0].wieght"),
        # negative and zero weights
        (_set([*WEIGHTS, 0, "weight"], -1),
         "spec.placement.replicaScheduling.weightPreference.staticWeightList[0].weight"),
        (_set([*WEIGHTS, 1, "weight"], 0),
         "spec.placement.replicaScheduling.weightPreference.staticWeightList[1].weight"),
        # spread constraints (Karmada's webhook rules, and a maxGroups that selects nothing)
        (_set([*SPREAD, 1], {"spreadByField": "cluster", "minGroups": 3, "maxGroups": 2}),
         "spec.placement.spreadConstraints[1].maxGroups"),
        (_set([*SPREAD, 1], {"spreadByField": "cluster", "minGroups": -1, "maxGroups": 2}),
         "spec.placement.spreadConstraints[1].minGroups"),
        (_set([*SPREAD, 1], {"spreadByField": "cluster", "minGroups": 1}),
         "spec.placement.spreadConstraints[1].maxGroups"),
        (_set([*SPREAD, 0, "spreadByLabel"], "rack"),
         "spec.placement.spreadConstraints[0].spreadByLabel"),
        (_set([*SPREAD, 1, "spreadByField"], "region"),
         "spec.placement.spreadConstraints[1].spreadByField"),
        (_set([*SPREAD], [{"spreadByField": "region", "minGroups": 1, "maxGroups": 2}]),
         "spec.placement.spreadConstraints"),
        (_set([*SPREAD, 0], {"spreadByField": "region", "minGroups": 5, "maxGroups": 5}),
         "spec.placement.spreadConstraints[0].minGroups"),
        (_set([*SPREAD, 0, "spreadByField"], "planet"),
         "spec.placement.spreadConstraints[0].spreadByField"),
        # selectors that can never match
        (_set([*AFF, "labelSelector"], IN_EMPTY),
         "spec.placement.clusterAffinity.labelSelector.matchExpressions[0].values"),
        (_set([*AFF, "labelSelector"], {"matchLabels": {"site": "a"}, "matchExpressions": [
            {"key": "site", "operator": "NotIn", "values": ["a"]}]}),
         "spec.placement.clusterAffinity.labelSelector"),
        (_set([*AFF, "labelSelector"], {"matchExpressions": [
            {"key": "gpu", "operator": "Exists"}, {"key": "gpu", "operator": "DoesNotExist"}]}),
         "spec.placement.clusterAffinity.labelSelector"),
        (_set([*AFF, "fieldSelector"], {"matchExpressions": [
            {"key": "region", "operator": "In", "values": ["a"]},
            {"key": "region", "operator": "In", "values": ["b"]}]}),
         "spec.placement.clusterAffinity.fieldSelector.matchExpressions"),
        (_set([*AFF, "fieldSelector"], {"matchExpressions": [
            {"key": "region", "operator": "In", "values": []}]}),
         "spec.placement.clusterAffinity.fieldSelector.matchExpressions[0].values"),
        (_set([*AFF, "fieldSelector"], {"matchExpressions": [
            {"key": "city", "operator": "In", "values": ["x"]}]}),
         "spec.placement.clusterAffinity.fieldSelector.matchExpressions[0].key"),
        (_set([*AFF, "clusterNames"], ["group-07"]), "spec.placement.clusterAffinity.clusterNames"),
        (_set([*AFF, "labelSelector"], {"matchLabels": {"bad key!": "x"}}),
         "spec.placement.clusterAffinity.labelSelector.matchLabels.bad key!"),
        (_set([*WEIGHTS, 1, "targetCluster"], {"labelSelector": IN_EMPTY}),
         "spec.placement.replicaScheduling.weightPreference.staticWeightList[1].targetCluster"
         ".labelSelector.matchExpressions[0].values"),
        (_set(["spec", "resourceSelectors", 1, "labelSelector"], IN_EMPTY),
         "spec.resourceSelectors[1].labelSelector.matchExpressions[0].values"),
        (_set(["spec", "resourceSelectors", 0, "kind"], "Deployment"),
         "spec.resourceSelectors[0].kind"),
        (_set(["spec", "resourceSelectors", 0, "apiVersion"], "apps/v1"),
         "spec.resourceSelectors[0].apiVersion"),
        (_set(["spec", "resourceSelectors"], []), "spec.resourceSelectors"),
        # affinity terms
        (_set([*PL, "clusterAffinities"], [{"affinityName": "a"}]),
         "spec.placement.clusterAffinities"),
        # settings that would be silently ignored, and bad enums
        (_set([*PL, "replicaScheduling", "replicaDivisionPreference"], "Aggregated"),
         "spec.placement.replicaScheduling.weightPreference"),
        (_set([*PL, "replicaScheduling", "replicaSchedulingType"], "Split"),
         "spec.placement.replicaScheduling.replicaSchedulingType"),
        (_set(["spec", "preemption"], "Sometimes"), "spec.preemption"),
        (_set(["spec", "priority"], 2**31), "spec.priority"),
        (_set(["spec", "failover", "application", "decisionConditions",
               "tolerationSeconds"], -5),
         "spec.failover.application.decisionConditions.tolerationSeconds"),
        (_set(["spec", "failover", "application", "purgeMode"], "Directly"),
         "spec.failover.application.gracePeriodSeconds"),
        (_set([*PL, "clusterTolerations", 0, "value"], "x"),
         "spec.placement.clusterTolerations[0].value"),
        (_set(["status"], {"phase": "x"}), "status.phase"),
    ],
)
def test_bad_propagation_policy_names_the_field(
    mutate: Callable[[dict[str, Any]], None], field: str
) -> None:
    obj = load(FULL_PP)
    mutate(obj)
    assert rejection(obj).field == field


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (_set([*PL, "clusterAffinities", 1, "affinityName"], "on-prem"),
         "spec.placement.clusterAffinities[1].affinityName"),
        (_set([*PL, "clusterAffinities", 1, "affinityName"], "x" * 33),
         "spec.placement.clusterAffinities[1].affinityName"),
        (_set([*PL, "clusterAffinities", 1, "exclude"], ["cloud-a", "cloud-b"]),
         "spec.placement.clusterAffinities[1].clusterNames"),
        (_set([*PL, "replicaScheduling", "weightPreference", "dynamicWeight"], "Load"),
         "spec.placement.replicaScheduling.weightPreference.dynamicWeight"),
        (_set([*PL, "replicaScheduling", "replicaSchedulingType"], "Duplicated"),
         "spec.placement.replicaScheduling.replicaDivisionPreference"),
    ],
)
def test_bad_affinity_terms_name_the_field(
    mutate: Callable[[dict[str, Any]], None], field: str
) -> None:
    obj = load(AFFINITIES_PP)
    mutate(obj)
    assert rejection(obj).field == field


R0: list[str | int] = ["spec", "overrideRules", 0]
OV: list[str | int] = [*R0, "overriders"]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (_set([*OV, "imageOverrider"], []), "spec.overrideRules[0].overriders.imageOverrider"),
        (_set([*R0, "targetCluster", "labelSelector"], IN_EMPTY),
         "spec.overrideRules[0].targetCluster.labelSelector.matchExpressions[0].values"),
        (_set([*OV, "plaintext", 0, "path"], "spec/nodeSelector"),
         "spec.overrideRules[0].overriders.plaintext[0].path"),
        (_set([*OV, "plaintext", 0, "path"], "/metadata/name"),
         "spec.overrideRules[0].overriders.plaintext[0].path"),
        (_set([*OV, "plaintext", 1, "value"], "x"),
         "spec.overrideRules[0].overriders.plaintext[1].value"),
        (_set([*OV, "plaintext", 0], {"path": "/spec/args", "operator": "add"}),
         "spec.overrideRules[0].overriders.plaintext[0].value"),
        (_set([*OV, "plaintext", 0, "operator"], "move"),
         "spec.overrideRules[0].overriders.plaintext[0].operator"),
        (_set([*OV, "commandOverrider", 0, "operator"], "replace"),
         "spec.overrideRules[0].overriders.commandOverrider[0].operator"),
        (_set([*OV, "argsOverrider", 0, "value"], "--low-power"),
         "spec.overrideRules[0].overriders.argsOverrider[0].value"),
        (_set([*OV, "labelsOverrider", 0, "value"], {"arch": "arm 64"}),
         "spec.overrideRules[0].overriders.labelsOverrider[0].value.arch"),
        (_set([*OV, "envOverrider", 0, "value"], {"LOG LEVEL": "debug"}),
         "spec.overrideRules[0].overriders.envOverrider[0].value.LOG LEVEL"),
        (_set([*OV, "artifactOverrider", 0, "name"], None),
         "spec.overrideRules[0].overriders.artifactOverrider[0].name"),
        (_set([*OV, "artifactOverrider", 0, "operator"], "remove"),
         "spec.overrideRules[0].overriders.artifactOverrider[0].value"),
        (_set(["spec", "overrideRules", 1, "overriders"], None),
         "spec.overrideRules[1].overriders"),
        (_set(["spec", "targetCluster"], {}), "spec.targetCluster"),
    ],
)
def test_bad_override_policy_names_the_field(
    mutate: Callable[[dict[str, Any]], None], field: str
) -> None:
    obj = load(FULL_OP)
    mutate(obj)
    assert rejection(obj).field == field


def test_messages_say_what_is_wrong() -> None:
    obj = load(FULL_PP)
    obj["spec"]["placement"]["spreadConstraints"][1]["minGroups"] = 5
    assert "minGroups" in rejection(obj).message
    obj = load(FULL_PP)
    obj["spec"]["placement"]["clusterAffinity"]["labelSelector"] = IN_EMPTY
    assert "non-empty" in rejection(obj).message
    obj = load(FULL_PP)
    obj["spec"]["placement"]["clusterAffinity"]["clusterNames"] = ["group-07"]
    assert "never match" in rejection(obj).message
    obj = load(FULL_PP)
    obj["spec"]["resourceSelectors"][0]["kind"] = "Deployment"
    assert "Deployment" in rejection(obj).message


def test_override_policy_without_selectors_or_rules_is_valid() -> None:
    # Karmada: empty resourceSelectors select every resource (unlike PropagationPolicy).
    obj = {"apiVersion": "policy.edgefleet.io/v1alpha1", "kind": "OverridePolicy",
           "metadata": {"name": "noop"}, "spec": {}}
    assert validate_object(obj)[0] is OVERRIDE_POLICY
