"""The OpenAPI 3.1 document, generated from the kind registry.

Every registered kind gets its paths and verbs, and an object schema assembled from
ObjectMeta and the kind's own pydantic spec/status models, so the document cannot
drift from what the server validates.  Every error is documented as a Status body.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from cloudcore.api.auth_routes import (
    JoinTokenCreated,
    JoinTokenRequest,
    NodeRevoked,
    UserCreated,
    UserRequest,
)
from cloudcore.api.watch import WATCH_MEDIA_TYPE
from protocol.resources import REGISTRY, KindInfo, KindRegistry, ObjectMeta

REF = "#/components/schemas/"
JSON = "application/json"
STATUS = "meta.v1.Status"  # qualified like the kinds' schemas, so no model name can clash

STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Why a request failed (Kubernetes Status).",
    "required": ["kind", "apiVersion", "status", "reason", "message", "code"],
    "properties": {
        "kind": {"type": "string", "const": "Status"},
        "apiVersion": {"type": "string", "const": "v1"},
        "status": {"type": "string", "const": "Failure"},
        "reason": {"type": "string"},
        "message": {"type": "string"},
        "code": {"type": "integer"},
        "details": {
            "type": "object",
            "properties": {"field": {"type": "string", "description": "path of the bad field"}},
        },
    },
}

_ERRORS = {
    "400": "malformed request (bad JSON, bad query parameter, path/body mismatch)",
    "401": "missing or unknown bearer token",
    "403": "the caller's role does not allow this",
    "404": "no such resource",
    "409": "already exists, or a stale resourceVersion",
    "413": "request body too large",
    "422": "invalid object; details.field names the offending field",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


def _json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*codes: str) -> dict[str, Any]:
    out: dict[str, Any] = {code: {"$ref": f"#/components/responses/Error{code}"}
                           for code in codes}
    out["default"] = {"$ref": "#/components/responses/Error"}
    return out


def _schema_name(kind: KindInfo, suffix: str = "") -> str:
    # Group-qualified, as Kubernetes names its definitions: never clashes with a
    # pydantic model name.
    return f"{kind.group or 'core'}.{kind.version}.{kind.kind}{suffix}"


def _model_schemas(
    models: list[type[BaseModel]],
) -> tuple[dict[type[BaseModel], Any], dict[str, Any]]:
    unique = list(dict.fromkeys(models))
    mode: JsonSchemaMode = "validation"
    refs, top = models_json_schema([(m, mode) for m in unique], ref_template=REF + "{model}")
    return {m: refs[(m, mode)] for m in unique}, dict(top.get("$defs", {}))


def _constrain_metadata(meta: dict[str, Any]) -> None:
    """Add the name and label rules to the ObjectMeta schema pydantic generated (the
    model itself takes any string; :func:`protocol.resources.validate_object` checks)."""
    props = meta["properties"]
    props["name"] = {**props["name"], **NAME_SCHEMA}
    props["namespace"] = {**props["namespace"], "anyOf": [NAMESPACE_SCHEMA, {"type": "null"}]}
    props["labels"] = {**props["labels"], "anyOf": [
        {"type": "object", "propertyNames": LABEL_KEY_SCHEMA,
         "additionalProperties": LABEL_VALUE_SCHEMA},
        {"type": "null"},
    ]}


def _object_schema(kind: KindInfo, refs: dict[type[BaseModel], Any], *,
                   request: bool = False) -> dict[str, Any]:
    """The kind's objects as the API answers them or, with ``request``, as a create or
    apply body: there ``status`` may be anything, because it is dropped unread (only the
    system writes status, through ``/status``), as Kubernetes does."""
    spec = refs[kind.spec_model] if kind.spec_model else {"type": "object"}
    status = refs[kind.status_model] if kind.status_model else {"type": "object"}
    if request:
        status = {"description": "ignored: status is written through the /status "
                                 "subresource"}
    props: dict[str, Any] = {
        "apiVersion": {"type": "string", "const": kind.api_version},
        "kind": {"type": "string", "const": kind.kind},
        "metadata": refs[ObjectMeta],
        "spec": spec,
        "status": status,
    }
    for extra in kind.extra_top_level:
        props[extra] = {}
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata"],
        "properties": props,
        "additionalProperties": False,
    }


def _list_schema(kind: KindInfo) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "items"],
        "properties": {
            "apiVersion": {"type": "string", "const": kind.api_version},
            "kind": {"type": "string", "const": f"{kind.kind}List"},
            "metadata": {
                "type": "object",
                "properties": {"resourceVersion": {"type": "string"}},
            },
            "items": {"type": "array", "items": _ref(_schema_name(kind))},
        },
    }


def _watch_event_schema(kind: KindInfo) -> dict[str, Any]:
    return {
        "type": "object",
        "description": "One line of a watch stream.  ERROR carries a Status (410: the "
                       "requested resourceVersion is too old; list again).",
        "required": ["type", "object"],
        "properties": {
            "type": {"type": "string", "enum": ["ADDED", "MODIFIED", "DELETED", "ERROR"]},
            "object": {"oneOf": [_ref(_schema_name(kind)), _ref(STATUS)]},
        },
    }


# The name rules protocol.resources enforces, as JSON Schema, so that clients (and the
# API fuzzer) know them without a round trip.  Never stricter than the server: a name
# the schema refuses must be refused by the server too (tests/fuzz checks both ways).
NAME_SCHEMA: dict[str, Any] = {
    "type": "string", "maxLength": 253,
    "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    "description": "a DNS subdomain: lower-case letters, digits, '-' and '.'",
}
NAMESPACE_SCHEMA: dict[str, Any] = {
    "type": "string", "maxLength": 63, "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    "description": "a DNS label: lower-case letters, digits and '-'",
}
LABEL_KEY_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
               r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$",
}
LABEL_VALUE_SCHEMA: dict[str, Any] = {
    "type": "string", "maxLength": 63, "pattern": r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$",
}
USER_NAME_SCHEMA: dict[str, Any] = {
    "type": "string", "pattern": r"^[A-Za-z0-9]([-A-Za-z0-9_.@]{0,61}[A-Za-z0-9])?$",
}

_NAME = {"name": "name", "in": "path", "required": True, "schema": NAME_SCHEMA}
_NAMESPACE = {"name": "namespace", "in": "path", "required": True,
              "schema": NAMESPACE_SCHEMA}
_SELECTOR = {
    "name": "labelSelector", "in": "query", "required": False, "schema": {"type": "string"},
    "description": "only objects whose labels match, e.g. `app=x,tier!=db,env in (a,b)`",
}
_WATCH = {
    "name": "watch", "in": "query", "required": False, "schema": {"type": "boolean"},
    "description": "stream changes, one JSON event per line, instead of listing",
}
_RV_WATCH = {
    "name": "resourceVersion", "in": "query", "required": False,
    "schema": {"type": "string", "pattern": "^[0-9]*$"},
    "description": "with watch: every change after this version (without: the current "
                   "objects as ADDED events first)",
}
_RV_DELETE = {
    "name": "resourceVersion", "in": "query", "required": False,
    "schema": {"type": "string", "pattern": "^[0-9]*$"},
    "description": "delete only if the object is still at this version",
}


def _kind_paths(kind: KindInfo, status_schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    obj, lst, evt = _schema_name(kind), _schema_name(kind, "List"), _schema_name(kind, "WatchEvent")
    ns_params = [_NAMESPACE] if kind.namespaced else []
    collection = kind.collection_path("{namespace}" if kind.namespaced else None)
    item = f"{collection}/{{name}}"
    list_responses = {
        "200": {
            "description": f"the {kind.plural} (or, with watch=true, a stream of changes)",
            "content": {JSON: {"schema": _ref(lst)}, WATCH_MEDIA_TYPE: {"schema": _ref(evt)}},
        },
        **_errors("400", "401", "403", "404"),
    }
    paths: dict[str, dict[str, Any]] = {}
    collection_ops: dict[str, Any] = {
        "parameters": ns_params,
        "get": {
            "operationId": f"list{kind.kind}",
            "summary": f"list or watch {kind.plural}",
            "parameters": [_SELECTOR, _WATCH, _RV_WATCH],
            "responses": list_responses,
        },
    }
    if not kind.system_created:
        collection_ops["post"] = {
            "operationId": f"create{kind.kind}",
            "summary": f"create a {kind.kind}",
            "requestBody": {"required": True,
                            "content": {JSON: {"schema": _ref(_schema_name(kind, "Apply"))}}},
            "responses": {
                "201": _json_body(_ref(obj), "created"),
                **_errors("400", "401", "403", "404", "409", "413", "422"),
            },
        }
    paths[collection] = collection_ops
    if kind.namespaced:
        paths[kind.collection_path(None)] = {
            "get": {
                "operationId": f"list{kind.kind}ForAllNamespaces",
                "summary": f"list or watch {kind.plural} in every namespace",
                "parameters": [_SELECTOR, _WATCH, _RV_WATCH],
                "responses": list_responses,
            },
        }
    paths[item] = {
        "parameters": [*ns_params, _NAME],
        "get": {
            "operationId": f"read{kind.kind}",
            "responses": {"200": _json_body(_ref(obj), "the object"),
                          **_errors("401", "403", "404")},
        },
        "put": {
            "operationId": f"apply{kind.kind}",
            "summary": "create or update; a non-empty metadata.resourceVersion is a "
                       "precondition",
            "requestBody": {"required": True,
                            "content": {JSON: {"schema": _ref(_schema_name(kind, "Apply"))}}},
            "responses": {
                "200": _json_body(_ref(obj), "updated (or unchanged)"),
                "201": _json_body(_ref(obj), "created"),
                **_errors("400", "401", "403", "404", "409", "413", "422"),
            },
        },
        "delete": {
            "operationId": f"delete{kind.kind}",
            "parameters": [_RV_DELETE],
            "responses": {"200": _json_body(_ref(obj), "the object's last state"),
                          **_errors("400", "401", "403", "404", "409")},
        },
    }
    status_body = {
        "type": "object",
        "required": ["status"],
        "properties": {
            "metadata": {
                "type": "object",
                "properties": {"name": {"type": "string"},
                               "resourceVersion": {"type": "string"}},
            },
            "status": status_schema,
        },
    }
    paths[f"{item}/status"] = {
        "parameters": [*ns_params, _NAME],
        "get": {
            "operationId": f"read{kind.kind}Status",
            "responses": {"200": _json_body(_ref(obj), "the object"),
                          **_errors("401", "403", "404")},
        },
        "put": {
            "operationId": f"replace{kind.kind}Status",
            "summary": "system-written status (admin only)",
            "requestBody": {"required": True, "content": {JSON: {"schema": status_body}}},
            "responses": {
                "200": _json_body(_ref(obj), "the object with its new status"),
                **_errors("400", "401", "403", "404", "409", "413", "422"),
            },
        },
    }
    return paths


def _auth_paths() -> dict[str, dict[str, Any]]:
    return {
        "/auth/users": {
            "post": {
                "operationId": "createUser",
                "summary": "make an API user and return its bearer token (admin only)",
                "requestBody": {"required": True,
                                "content": {JSON: {"schema": _ref("UserRequest")}}},
                "responses": {
                    "201": _json_body(_ref("UserCreated"), "the user and its token"),
                    **_errors("400", "401", "403", "409", "413", "422"),
                },
            },
        },
        "/auth/jointokens": {
            "post": {
                "operationId": "createJoinToken",
                "summary": "issue a join token for `edgecore join` (admin only)",
                "requestBody": {"required": False,
                                "content": {JSON: {"schema": _ref("JoinTokenRequest")}}},
                "responses": {
                    "201": _json_body(_ref("JoinTokenCreated"), "the token and its expiry"),
                    **_errors("400", "401", "403", "413", "422"),
                },
            },
        },
        "/auth/nodes/{name}/revoke": {
            "parameters": [_NAME],
            "post": {
                "operationId": "revokeNode",
                "summary": "revoke every certificate issued to the node and close its link "
                           "now; it may come back only by joining again with a new token "
                           "(admin only)",
                "responses": {
                    "200": _json_body(_ref("NodeRevoked"), "the revocation"),
                    **_errors("401", "403", "404"),
                },
            },
        },
    }


def _public_paths() -> dict[str, dict[str, Any]]:
    return {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "security": [],
                "responses": {"200": {"description": "serving",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}}},
            },
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "security": [],
                "responses": {"200": _json_body({"type": "object"}, "this document")},
            },
        },
    }


def build_openapi(registry: KindRegistry = REGISTRY, *, version: str = "0.1.0") -> dict[str, Any]:
    kinds = sorted(registry.all(), key=lambda k: (k.group, k.kind))
    models: list[type[BaseModel]] = [ObjectMeta, UserRequest, UserCreated, JoinTokenRequest,
                                     JoinTokenCreated, NodeRevoked]
    for kind in kinds:
        models += [m for m in (kind.spec_model, kind.status_model) if m is not None]
    refs, schemas = _model_schemas(models)
    _constrain_metadata(schemas[ObjectMeta.__name__])
    user_name = schemas[UserRequest.__name__]["properties"]["name"]
    user_name.update(USER_NAME_SCHEMA)
    schemas[STATUS] = STATUS_SCHEMA
    paths: dict[str, dict[str, Any]] = {**_public_paths(), **_auth_paths()}
    for kind in kinds:
        schemas[_schema_name(kind)] = _object_schema(kind, refs)
        schemas[_schema_name(kind, "Apply")] = _object_schema(kind, refs, request=True)
        schemas[_schema_name(kind, "List")] = _list_schema(kind)
        schemas[_schema_name(kind, "WatchEvent")] = _watch_event_schema(kind)
        status_schema = refs[kind.status_model] if kind.status_model else {"type": "object"}
        paths.update(_kind_paths(kind, status_schema))
    responses: dict[str, Any] = {
        "Error": _json_body(_ref(STATUS), "the request failed"),
        **{f"Error{code}": _json_body(_ref(STATUS), text) for code, text in _ERRORS.items()},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "edgefleet API",
            "version": version,
            "description": "Kubernetes-style REST API of edgefleet's cloudcore.",
        },
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": responses,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer",
                               "description": "an API token from `efctl user create`"},
            },
        },
    }
