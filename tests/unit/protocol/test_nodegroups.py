"""KubeEdge NodeGroup manifests validate here exactly as under KubeEdge's
apps.kubeedge.io/v1alpha1 CRD schema - valid ones unchanged, invalid ones refused with
the field path - plus edgefleet's optional region/zone/provider and status additions."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

import protocol.kinds  # noqa: F401  (registers every kind)
from protocol.kinds.nodegroups import (
    NODE_GROUP,
    NodeGroupSpec,
    NodeGroupStatus,
    group_member_names,
)
from protocol.resources import REGISTRY, validate_object
from tests.harness import kubeedge_crds_dir
from tests.unit.protocol.crdwalk import (
    Place,
    crd_schema,
    minimal,
    model_fields,
    places,
    setter,
    wrong_values,
)
from tests.unit.protocol.manifests import load, rejection

API_VERSION = "apps.kubeedge.io/v1alpha1"

# The shape of KubeEdge's own NodeGroup examples (docs "Edge Application" guide).
KUBEEDGE_EXAMPLE = """
apiVersion: apps.kubeedge.io/v1alpha1
kind: NodeGroup
metadata:
  name: beijing
spec:
  nodes:
    - node-1
    - node-2
  matchLabels:
    location: beijing
status:
  nodeStatuses:
    - nodeName: node-1
      readyStatus: Ready
      selectionStatus: Succeeded
    - nodeName: node-3
      readyStatus: NotReady
      selectionStatus: Failed
      selectionStatusReason: node is already in nodegroup shanghai
"""

WITH_EXTENSIONS = """
apiVersion: apps.kubeedge.io/v1alpha1
kind: NodeGroup
metadata: {name: factory-a, labels: {site: factory-a}}
spec:
  matchLabels: {site: factory-a}
  topologyEnabled: true
  region: eu-west
  zone: eu-west-1a
  provider: on-prem
status:
  readyNodes: 2
  allocatable: {cpu: "12", memory: 48Gi, pods: 330}
"""


@pytest.mark.parametrize("text", [KUBEEDGE_EXAMPLE, WITH_EXTENSIONS])
def test_nodegroup_is_accepted_unchanged(text: str) -> None:
    obj = load(text)
    info, out = validate_object(copy.deepcopy(obj))
    assert info is NODE_GROUP
    assert out == obj  # cluster-scoped: no namespace is added


def test_registered_as_kubeedge_names_it() -> None:
    assert REGISTRY.resolve("ng") is NODE_GROUP
    assert REGISTRY.resolve("nodegroups") is NODE_GROUP
    assert REGISTRY.by_path("apps.kubeedge.io", "v1alpha1", "nodegroups") is NODE_GROUP
    assert not NODE_GROUP.namespaced
    assert NODE_GROUP.object_path(None, "beijing") == (
        "/apis/apps.kubeedge.io/v1alpha1/nodegroups/beijing"
    )
    assert [c.header for c in NODE_GROUP.columns][:2] == ["READY", "REGION"]


def test_cluster_scoped_refuses_a_namespace() -> None:
    obj = load(KUBEEDGE_EXAMPLE)
    obj["metadata"]["namespace"] = "default"
    assert rejection(obj).field == "metadata.namespace"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (setter(["spec", "nodeSelector"], {}), "spec.nodeSelector"),
        (setter(["spec", "region"], 5), "spec.region"),
        (setter(["spec", "zone"], ["a"]), "spec.zone"),
        (setter(["spec", "provider"], True), "spec.provider"),
        (setter(["status", "readyNodes"], -1), "status.readyNodes"),
        (setter(["status", "readyNodes"], "2"), "status.readyNodes"),
        (setter(["status", "allocatable", "cpu"], "12 cores"), "status.allocatable.cpu"),
        (setter(["status", "allocatable", "memory"], "-1Gi"), "status.allocatable.memory"),
        (setter(["status", "allocatable", "memory"], True), "status.allocatable.memory"),
        (setter(["status", "ready"], True), "status.ready"),
    ],
)
def test_bad_extension_names_the_field(
    mutate: Callable[[dict[str, Any]], None], field: str
) -> None:
    obj = load(WITH_EXTENSIONS)
    mutate(obj)
    err = rejection(obj)
    assert err.field == field


def test_bad_quantity_says_what_a_quantity_is() -> None:
    obj = load(WITH_EXTENSIONS)
    obj["status"]["allocatable"]["cpu"] = "lots"
    assert "500m" in rejection(obj).message


def test_members_are_listed_or_label_selected() -> None:
    group = load(KUBEEDGE_EXAMPLE)
    nodes: list[dict[str, Any]] = [
        {"metadata": {"name": "node-1"}},
        {"metadata": {"name": "node-4", "labels": {"location": "beijing", "x": "y"}}},
        {"metadata": {"name": "node-5", "labels": {"location": "shanghai"}}},
    ]
    # node-2 is listed but does not exist; node-4 matches the labels.
    assert group_member_names(group, nodes) == ["node-1", "node-4"]
    assert group_member_names({"spec": {}}, nodes) == []


# --- schema-driven: every CRD field accepted, every wrong type refused at its path ------

CRD_FILE = kubeedge_crds_dir() / "apps_v1alpha1_nodegroup.yaml"
needs_crd = pytest.mark.skipif(not CRD_FILE.is_file(), reason="KubeEdge CRDs not present")


def schema_cases() -> list[tuple[str, dict[str, Any], Place]]:
    if not CRD_FILE.is_file():
        return []
    top = crd_schema(CRD_FILE, "v1alpha1")["properties"]
    return [case for section in ("spec", "status") for case in places(top[section], section)]


CASES = schema_cases()
IDS = [c[0] for c in CASES]


def wrap(path: str, value: Any) -> dict[str, Any]:
    section = path.split(".", 1)[0]
    obj: dict[str, Any] = {"apiVersion": API_VERSION, "kind": "NodeGroup",
                           "metadata": {"name": "schema-case"}, "spec": {}}
    obj[section] = value
    return obj


@needs_crd
def test_schema_walk_reaches_every_field() -> None:
    paths = {path for path, _, _ in CASES}
    assert {"spec.nodes[0]", "spec.matchLabels.k", "spec.topologyEnabled",
            "status.nodeStatuses[0].selectionStatusReason"} <= paths


@needs_crd
@pytest.mark.parametrize(("path", "schema", "place"), CASES, ids=IDS)
def test_every_crd_field_is_accepted(path: str, schema: dict[str, Any], place: Place) -> None:
    obj = wrap(path, place(minimal(schema)))
    assert validate_object(copy.deepcopy(obj))[1] == obj


@needs_crd
@pytest.mark.parametrize(("path", "schema", "place"), CASES, ids=IDS)
def test_every_crd_field_refuses_the_wrong_type(
    path: str, schema: dict[str, Any], place: Place
) -> None:
    for bad in wrong_values(schema):
        assert rejection(wrap(path, place(bad))).field == path, f"{bad!r} at {path}"


@needs_crd
def test_required_status_fields_are_required() -> None:
    for missing in ("nodeName", "readyStatus", "selectionStatus"):
        entry = {"nodeName": "n", "readyStatus": "Ready", "selectionStatus": "Succeeded"}
        del entry[missing]
        err = rejection(wrap("status", {"nodeStatuses": [entry]}))
        assert err.field == f"status.nodeStatuses[0].{missing}"


@needs_crd
@pytest.mark.parametrize(
    ("model", "section", "additions"),
    [
        (NodeGroupSpec, "spec", {"region", "zone", "provider"}),
        (NodeGroupStatus, "status", {"readyNodes", "allocatable"}),
    ],
)
def test_models_add_only_the_documented_fields(
    model: type[BaseModel], section: str, additions: set[str]
) -> None:
    crd_paths = {path for path, _, _ in CASES}
    declared = set(model_fields(model, section))
    extra = {p.split(".")[1] for p in declared - crd_paths}
    assert extra == additions
