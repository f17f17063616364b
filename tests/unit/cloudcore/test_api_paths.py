"""Parsing Kubernetes-style REST paths into kind, namespace, name and subresource."""

from __future__ import annotations

import pytest

import protocol.kinds  # noqa: F401  (registers every kind)
from cloudcore.api.paths import Scope, parse_resource_path
from protocol.errors import NotFound

DEV = "/apis/devices.kubeedge.io/v1beta1"


@pytest.mark.parametrize(("path", "kind", "scope", "namespace", "name"), [
    ("/api/v1/nodes", "Node", Scope.COLLECTION, None, None),
    ("/api/v1/nodes/edge-1", "Node", Scope.OBJECT, None, "edge-1"),
    ("/api/v1/nodes/edge-1/status", "Node", Scope.STATUS, None, "edge-1"),
    (f"{DEV}/devices", "Device", Scope.COLLECTION, None, None),
    (f"{DEV}/namespaces/default/devices", "Device", Scope.COLLECTION, "default", None),
    (f"{DEV}/namespaces/default/devices/d1", "Device", Scope.OBJECT, "default", "d1"),
    (f"{DEV}/namespaces/ns/devicemodels/m/status", "DeviceModel", Scope.STATUS, "ns", "m"),
    # A namespace literally called "namespaces" is still just a namespace.
    (f"{DEV}/namespaces/namespaces/devices", "Device", Scope.COLLECTION, "namespaces", None),
])
def test_paths_name_what_they_address(
    path: str, kind: str, scope: Scope, namespace: str | None, name: str | None,
) -> None:
    target = parse_resource_path(path)
    assert (target.kind.kind, target.scope, target.namespace, target.name) == (
        kind, scope, namespace, name)


@pytest.mark.parametrize("path", [
    "/api/v1",
    "/api/v1/",
    "/api/v1//nodes",
    "/api/v2/nodes",
    "/api/v1/namespaces/default",
    "/api/v1/namespaces/default/nodes",  # Node is cluster-scoped
    "/api/v1/nodes/edge-1/logs",
    "/api/v1/nodes/edge-1/status/extra",
    f"{DEV}/devices/d1",  # namespaced kind addressed without a namespace
    f"{DEV}/namespaces/default/widgets",
    "/apis/devices.kubeedge.io",
    "/apis/devices.kubeedge.io/v1beta1",
    "/other/v1/nodes",
])
def test_paths_that_name_nothing_are_not_found(path: str) -> None:
    with pytest.raises(NotFound):
        parse_resource_path(path)
