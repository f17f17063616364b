"""Rendering an App for one node group with OverridePolicies, in Karmada's documented
order (reference/placement-scheduling.md §2): across policies least specific first,
rules in list order for matching targetClusters, overriders in a fixed order within a
rule; plaintext is an RFC 6902 patch; an overrider that cannot apply aborts."""

from __future__ import annotations

from typing import Any

import pytest

from cloudcore.placement import (
    ClusterView,
    OverrideError,
    OverridePolicyView,
    render_for_group,
)

API = "apps.edgefleet.io/v1alpha1"
SHA_A = "a" * 64
SHA_B = "b" * 64


def app() -> dict[str, Any]:
    return {
        "apiVersion": API, "kind": "App",
        "metadata": {"name": "camera-ingest", "namespace": "vision",
                     "labels": {"tier": "edge"}, "annotations": {"note": "x"}},
        "spec": {
            "command": ["python3", "ingest.py"],
            "args": ["--fps", "30", "--debug"],
            "env": [{"name": "MODE", "value": "fast"}, {"name": "KEEP", "value": "1"}],
            "artifacts": [{"name": "model.bin", "sha256": SHA_A, "path": "models/m.bin"}],
            "workingDir": "run",
            "replicas": 3,
        },
    }


ARM = ClusterView("arm-group", labels={"arch": "arm64"})
X86 = ClusterView("x86-group", labels={"arch": "amd64"})


def op(name: str, rules: list[dict[str, Any]], *selectors: dict[str, Any]) -> OverridePolicyView:
    spec: dict[str, Any] = {"overrideRules": rules}
    if selectors:
        spec["resourceSelectors"] = list(selectors)
    return OverridePolicyView.from_object({
        "apiVersion": "policy.edgefleet.io/v1alpha1", "kind": "OverridePolicy",
        "metadata": {"name": name, "namespace": "vision"}, "spec": spec,
    })


ARM_ONLY = {"labelSelector": {"matchLabels": {"arch": "arm64"}}}
BY_NAME = {"apiVersion": API, "kind": "App", "name": "camera-ingest"}
BY_LABEL = {"apiVersion": API, "kind": "App", "labelSelector": {"matchLabels": {"tier": "edge"}}}


def test_reference_example_for_the_targeted_group_only() -> None:
    # §2 example, adapted: args get --low-power and the nodeSelector is added, only on
    # arm64 groups.
    policy = op("arm-edge", [{"targetCluster": ARM_ONLY, "overriders": {
        "argsOverrider": [{"containerName": "camera-ingest", "operator": "add",
                           "value": ["--low-power"]}],
        "plaintext": [{"path": "/spec/nodeSelector", "operator": "add",
                       "value": {"edge": "true"}}],
    }}], BY_NAME)
    original = app()
    arm = render_for_group(original, [policy], ARM)
    assert arm["spec"]["args"] == ["--fps", "30", "--debug", "--low-power"]
    assert arm["spec"]["nodeSelector"] == {"edge": "true"}
    assert render_for_group(original, [policy], X86) == original
    assert original == app()  # the input is never modified


def test_overriders_within_a_rule_apply_in_the_fixed_order() -> None:
    # §2: within one rule the kinds apply in a fixed order, plaintext last - so the
    # plaintext replace sees (and overwrites) what argsOverrider appended, and a
    # labelsOverrider add is visible to a plaintext remove.
    policy = op("ordered", [{"overriders": {
        "plaintext": [{"path": "/spec/args/3", "operator": "replace", "value": "--late"},
                      {"path": "/metadata/labels/added", "operator": "remove"}],
        "labelsOverrider": [{"operator": "add", "value": {"added": "yes"}}],
        "argsOverrider": [{"operator": "add", "value": ["--early"]}],
    }}])
    out = render_for_group(app(), [policy], ARM)
    assert out["spec"]["args"] == ["--fps", "30", "--debug", "--late"]
    assert "added" not in out["metadata"]["labels"]


def test_rules_apply_in_list_order_and_later_writes_win() -> None:
    # §2 step 3: rules in list order for every rule whose targetCluster matches.
    policy = op("rules", [
        {"overriders": {"envOverrider": [{"operator": "add", "value": {"MODE": "first"}}]}},
        {"targetCluster": {"clusterNames": ["x86-group"]},
         "overriders": {"envOverrider": [{"operator": "add", "value": {"MODE": "x86"}}]}},
        {"targetCluster": ARM_ONLY,
         "overriders": {"envOverrider": [{"operator": "add", "value": {"MODE": "arm"}}]}},
    ])
    assert render_for_group(app(), [policy], ARM)["spec"]["env"][0] == {
        "name": "MODE", "value": "arm"}
    assert render_for_group(app(), [policy], X86)["spec"]["env"][0] == {
        "name": "MODE", "value": "x86"}


def test_most_specific_policy_wins_conflicts() -> None:
    # §2 step 2: kind-only < labelSelector < name, ties by name; applied in that order,
    # so "the most specific, alphabetically-last policy wins conflicts".
    def setting(value: str) -> list[dict[str, Any]]:
        return [{"overriders": {"envOverrider": [{"operator": "add", "value": {"MODE": value}}]}}]

    policies = [op("b-name", setting("b-name"), BY_NAME), op("a-name", setting("a-name"), BY_NAME),
                op("label", setting("label"), BY_LABEL), op("everything", setting("all"))]
    out = render_for_group(app(), policies, ARM)
    assert out["spec"]["env"][0]["value"] == "b-name"
    out = render_for_group(app(), policies[2:], ARM)
    assert out["spec"]["env"][0]["value"] == "label"


def test_command_and_args_add_and_remove() -> None:
    # §2: "add appends, remove deletes matching items".
    policy = op("cmd", [{"overriders": {
        "commandOverrider": [{"operator": "add", "value": ["--trace"]}],
        "argsOverrider": [{"operator": "remove", "value": ["--debug", "--absent"]}],
    }}])
    out = render_for_group(app(), [policy], ARM)
    assert out["spec"]["command"] == ["python3", "ingest.py", "--trace"]
    assert out["spec"]["args"] == ["--fps", "30"]


def test_container_name_must_be_the_app_to_apply() -> None:
    policy = op("cmd", [{"overriders": {
        "argsOverrider": [{"containerName": "sidecar", "operator": "add", "value": ["--x"]}]}}])
    assert render_for_group(app(), [policy], ARM)["spec"]["args"] == ["--fps", "30", "--debug"]


def test_labels_and_annotations_add_replace_remove() -> None:
    # Karmada: replace and remove only touch keys that exist; add always sets.
    policy = op("meta", [{"overriders": {
        "labelsOverrider": [
            {"operator": "replace", "value": {"tier": "core", "missing": "x"}},
            {"operator": "add", "value": {"arch": "arm64"}},
        ],
        "annotationsOverrider": [{"operator": "remove", "value": {"note": "", "nope": ""}}],
    }}])
    out = render_for_group(app(), [policy], ARM)
    assert out["metadata"]["labels"] == {"tier": "core", "arch": "arm64"}
    assert out["metadata"]["annotations"] == {}


def test_env_overrider_keeps_the_list_shape() -> None:
    policy = op("env", [{"overriders": {"envOverrider": [
        {"operator": "replace", "value": {"MODE": "slow", "ABSENT": "x"}},
        {"operator": "add", "value": {"NEW": "1"}},
        {"operator": "remove", "value": {"KEEP": ""}},
    ]}}])
    out = render_for_group(app(), [policy], ARM)
    assert out["spec"]["env"] == [{"name": "MODE", "value": "slow"}, {"name": "NEW", "value": "1"}]
    bare = app()
    del bare["spec"]["env"]
    added = render_for_group(bare, [op("e", [{"overriders": {"envOverrider": [
        {"operator": "add", "value": {"A": "1"}}]}}])], ARM)
    assert added["spec"]["env"] == [{"name": "A", "value": "1"}]


def test_artifact_overrider_swaps_a_model_per_group() -> None:
    policy = op("model", [{"targetCluster": ARM_ONLY, "overriders": {"artifactOverrider": [
        {"name": "model.bin", "operator": "replace", "value": {"sha256": SHA_B}},
        {"operator": "add", "value": {"name": "arm.so", "sha256": SHA_A}},
    ]}}])
    out = render_for_group(app(), [policy], ARM)
    assert out["spec"]["artifacts"] == [
        {"name": "model.bin", "sha256": SHA_B, "path": "models/m.bin"},
        {"name": "arm.so", "sha256": SHA_A},
    ]
    removed = render_for_group(app(), [op("rm", [{"overriders": {"artifactOverrider": [
        {"name": "model.bin", "operator": "remove"}]}}])], ARM)
    assert removed["spec"]["artifacts"] == []


@pytest.mark.parametrize(
    ("patch", "check"),
    [
        ({"path": "/spec/args/0", "operator": "add", "value": "--first"},
         lambda o: o["spec"]["args"][:2] == ["--first", "--fps"]),
        ({"path": "/spec/args/-", "operator": "add", "value": "--last"},
         lambda o: o["spec"]["args"][-1] == "--last"),
        ({"path": "/spec/args/1", "operator": "replace", "value": "60"},
         lambda o: o["spec"]["args"] == ["--fps", "60", "--debug"]),
        ({"path": "/spec/args/2", "operator": "remove"},
         lambda o: o["spec"]["args"] == ["--fps", "30"]),
        ({"path": "/spec/workingDir", "operator": "remove"},
         lambda o: "workingDir" not in o["spec"]),
        ({"path": "/spec/replicas", "operator": "replace", "value": 5},
         lambda o: o["spec"]["replicas"] == 5),
        ({"path": "/metadata/annotations/a~1b", "operator": "add", "value": "slash"},
         lambda o: o["metadata"]["annotations"]["a/b"] == "slash"),
    ],
)
def test_plaintext_is_a_json_patch(patch: dict[str, Any], check: Any) -> None:
    out = render_for_group(app(), [op("p", [{"overriders": {"plaintext": [patch]}}])], ARM)
    assert check(out)


@pytest.mark.parametrize(
    "patch",
    [
        {"path": "/spec/absent/x", "operator": "add", "value": 1},
        {"path": "/spec/absent", "operator": "replace", "value": 1},
        {"path": "/spec/absent", "operator": "remove"},
        {"path": "/spec/args/9", "operator": "replace", "value": "x"},
        {"path": "/spec/args/x", "operator": "add", "value": "x"},
        {"path": "/spec/replicas/x", "operator": "add", "value": 1},
    ],
)
def test_plaintext_that_cannot_apply_aborts_with_where(patch: dict[str, Any]) -> None:
    # §2 step 4: "Any overrider error aborts rendering of that Work".
    with pytest.raises(OverrideError, match=r"OverridePolicy vision/p overrideRules\[0\]"):
        render_for_group(app(), [op("p", [{"overriders": {"plaintext": [patch]}}])], ARM)


def test_replacing_a_missing_artifact_aborts() -> None:
    policy = op("a", [{"overriders": {"artifactOverrider": [
        {"name": "nope", "operator": "replace", "value": {"sha256": SHA_B}}]}}])
    with pytest.raises(OverrideError, match="no artifact named 'nope'"):
        render_for_group(app(), [policy], ARM)


def test_values_are_copied_not_shared() -> None:
    policy = op("p", [{"overriders": {"plaintext": [
        {"path": "/spec/nodeSelector", "operator": "add", "value": {"edge": "true"}}]}}])
    first = render_for_group(app(), [policy], ARM)
    first["spec"]["nodeSelector"]["edge"] = "changed"
    assert render_for_group(app(), [policy], ARM)["spec"]["nodeSelector"] == {"edge": "true"}
