"""/openapi.json: generated from the kind registry, public, self-consistent."""

from __future__ import annotations

from typing import Any

import protocol.kinds  # noqa: F401  (registers every kind)
from protocol.resources import REGISTRY
from tests.integration.api.api_harness import RunningApi


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    cur: Any = doc
    for part in ref[2:].split("/"):
        cur = cur[part.replace("~1", "/").replace("~0", "~")]
    return cur


def test_openapi_lists_every_kind_with_its_verbs(api: RunningApi) -> None:
    with api.client() as anonymous:
        r = anonymous.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert doc["security"] == [{"bearerAuth": []}]
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    paths = doc["paths"]
    kinds = REGISTRY.all()
    assert {"Node", "Device", "DeviceModel"} <= {k.kind for k in kinds}
    for kind in kinds:
        ns = "{namespace}" if kind.namespaced else None
        collection = kind.collection_path(ns)
        item = f"{collection}/{{name}}"
        assert "get" in paths[collection], collection
        assert {"get", "put", "delete"} <= set(paths[item]), item
        assert {"get", "put"} <= set(paths[f"{item}/status"])
        assert ("post" in paths[collection]) == (not kind.system_created)
        if kind.namespaced:
            assert "get" in paths[kind.collection_path(None)]
        schema = resolve(doc, paths[item]["get"]["responses"]["200"]["content"]
                         ["application/json"]["schema"]["$ref"])
        assert schema["properties"]["kind"]["const"] == kind.kind
        assert schema["properties"]["apiVersion"]["const"] == kind.api_version
        # The spec schema comes from the kind's own pydantic model.
        if kind.spec_model is not None:
            spec = resolve(doc, schema["properties"]["spec"]["$ref"])
            assert set(spec["properties"]) == set(kind.spec_model.model_fields)
    assert "/auth/users" in paths and "/auth/jointokens" in paths
    assert "post" in paths["/auth/nodes/{name}/revoke"]


def test_openapi_references_all_resolve_and_errors_are_status(api: RunningApi) -> None:
    with api.client() as anonymous:
        doc = anonymous.get("/openapi.json").json()
    for ref in set(refs(doc)):
        assert resolve(doc, ref) is not None
    for path, ops in doc["paths"].items():
        for verb, op in ops.items():
            if verb == "parameters":
                continue
            status = op["responses"].get("default") or op["responses"].get("404")
            if path not in ("/healthz", "/openapi.json"):
                assert status is not None, f"{verb} {path} documents no error"
                content = resolve(doc, status["$ref"])["content"]["application/json"]
                assert resolve(doc, content["schema"]["$ref"])["properties"]["kind"]["const"] \
                    == "Status"
    ids = [op["operationId"] for ops in doc["paths"].values()
           for verb, op in ops.items() if verb != "parameters"]
    assert len(ids) == len(set(ids))
