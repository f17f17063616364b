"""The resource endpoints: list, watch, create, get, apply, delete and /status.

One handler serves every kind: the path says which kind and object (see
:mod:`cloudcore.api.paths`), the HTTP method says which verb, the role table in
:mod:`cloudcore.auth` says whether the caller may.  Authorisation comes before the
body is read, so a caller who may not write learns nothing from a malformed body.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cloudcore.api.authn import principal_of
from cloudcore.api.body import read_json_object
from cloudcore.api.errors import MethodNotAllowed
from cloudcore.api.paths import Scope, Target, parse_resource_path
from cloudcore.api.watch import watch_response
from cloudcore.auth import Principal, Verb, authorize
from cloudcore.store.base import Store
from protocol.errors import BadRequest, Forbidden, InvalidObject, NotFound
from protocol.resources import KindInfo, resource_version, validate_object, validate_status
from protocol.selectors import Selector, parse_selector

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]


def json_response(body: Any, status_code: int = 200) -> Response:
    return Response(json.dumps(body), status_code=status_code, media_type="application/json")


def _query_int(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name, "")
    if raw == "":
        return None
    # isdigit() alone also passes "²", which int() refuses (a 500, found by tests/fuzz).
    if not (raw.isascii() and raw.isdigit()):
        raise BadRequest(f"query parameter {name}={raw!r} must be a non-negative integer",
                         field=name)
    return int(raw)


def _query_bool(request: Request, name: str) -> bool:
    raw = request.query_params.get(name, "").lower()
    if raw in ("", "false", "0"):
        return False
    if raw in ("true", "1"):
        return True
    raise BadRequest(f"query parameter {name}={raw!r} must be true or false", field=name)


def _selector(request: Request) -> Selector | None:
    text = request.query_params.get("labelSelector", "")
    return parse_selector(text) if text.strip() else None


def _refuse_system_created(principal: Principal, kind: KindInfo) -> Forbidden:
    return Forbidden(
        f"{kind.plural} are created by the system (Nodes by edgecore join, AppReplicas by "
        "the apps controller), not through the API; "
        f"user {principal.name!r} may only update or delete existing ones"
    )


def prepare_object(body: dict[str, Any], target: Target) -> dict[str, Any]:
    """Validate a create/apply body against the path it was sent to.  ``status`` is
    dropped: only the system writes it, through the /status subresource."""
    kind = target.kind
    if isinstance(body.get("kind"), str) and body["kind"] != kind.kind:
        raise BadRequest(
            f"this path serves {kind.kind} objects, the body is a {body['kind']}", field="kind"
        )
    body = {k: v for k, v in body.items() if k != "status"}
    meta = body.get("metadata")
    if (isinstance(meta, dict) and kind.namespaced and target.namespace is not None
            and meta.get("namespace") in (None, "")):
        body["metadata"] = {**meta, "namespace": target.namespace}
    _, obj = validate_object(body)
    meta = obj["metadata"]
    if target.name is not None and meta["name"] != target.name:
        raise BadRequest(
            f"metadata.name {meta['name']!r} does not match the name {target.name!r} in the path",
            field="metadata.name",
        )
    if kind.namespaced and target.namespace is not None and meta["namespace"] != target.namespace:
        raise BadRequest(
            f"metadata.namespace {meta['namespace']!r} does not match the namespace "
            f"{target.namespace!r} in the path",
            field="metadata.namespace",
        )
    return obj


class ObjectRoutes:
    def __init__(self, store: Store) -> None:
        self.store = store

    def routes(self) -> list[Route]:
        return [
            Route("/api/{rest:path}", self.handle_core, methods=METHODS),
            Route("/apis/{rest:path}", self.handle_groups, methods=METHODS),
        ]

    # The resource path is rebuilt from the route's own prefix rather than taken from
    # the URL, so the API works unchanged when mounted under a root path.
    async def handle_core(self, request: Request) -> Response:
        return await self.handle(request, f"/api/{request.path_params['rest']}")

    async def handle_groups(self, request: Request) -> Response:
        return await self.handle(request, f"/apis/{request.path_params['rest']}")

    async def handle(self, request: Request, path: str) -> Response:
        target = parse_resource_path(path)
        principal = principal_of(request)
        method = request.method
        if target.scope is Scope.COLLECTION:
            if method == "GET":
                return await self._list_or_watch(request, principal, target)
            if method == "POST":
                return await self._create(request, principal, target)
        elif target.scope is Scope.OBJECT:
            if method == "GET":
                authorize(principal, Verb.GET, target.kind)
                return json_response(await self._get(target))
            if method == "PUT":
                return await self._apply(request, principal, target)
            if method == "DELETE":
                return await self._delete(request, principal, target)
        else:
            if method == "GET":
                authorize(principal, Verb.GET, target.kind)
                return json_response(await self._get(target))
            if method == "PUT":
                return await self._put_status(request, principal, target)
        raise MethodNotAllowed(f"{method} is not supported on {path}")

    async def _get(self, target: Target) -> dict[str, Any]:
        assert target.name is not None
        return await self.store.get(target.kind.kind, target.namespace, target.name)

    async def _list_or_watch(
        self, request: Request, principal: Principal, target: Target,
    ) -> Response:
        kind = target.kind
        selector = _selector(request)
        # Checked with or without watch: a malformed parameter is refused, never ignored.
        from_rv = _query_int(request, "resourceVersion")
        if _query_bool(request, "watch"):
            authorize(principal, Verb.WATCH, kind)
            # resourceVersion=0 means "from the current state", as in Kubernetes.
            return watch_response(self.store, kind, target.namespace, selector, from_rv or None)
        authorize(principal, Verb.LIST, kind)
        items, rv = await self.store.list(kind.kind, target.namespace, selector)
        return json_response({
            "apiVersion": kind.api_version,
            "kind": f"{kind.kind}List",
            "metadata": {"resourceVersion": str(rv)},
            "items": items,
        })

    async def _create(self, request: Request, principal: Principal, target: Target) -> Response:
        kind = target.kind
        authorize(principal, Verb.CREATE, kind)
        if kind.system_created:
            raise _refuse_system_created(principal, kind)
        if kind.namespaced and target.namespace is None:
            raise MethodNotAllowed(
                f"create {kind.plural} under {kind.collection_path('NAMESPACE')}"
            )
        body = await read_json_object(request)
        assert body is not None
        created = await self.store.create(prepare_object(body, target))
        return json_response(created, 201)

    async def _apply(self, request: Request, principal: Principal, target: Target) -> Response:
        kind = target.kind
        # Apply creates or updates; it is authorised as an update (every role that may
        # update a kind may also create it, except where creation is the system's).
        authorize(principal, Verb.UPDATE, kind)
        body = await read_json_object(request)
        assert body is not None
        obj = prepare_object(body, target)
        if kind.system_created:
            try:
                await self._get(target)
            except NotFound:
                raise _refuse_system_created(principal, kind) from None
        stored, created = await self.store.apply(obj)
        return json_response(stored, 201 if created else 200)

    async def _delete(self, request: Request, principal: Principal, target: Target) -> Response:
        authorize(principal, Verb.DELETE, target.kind)
        assert target.name is not None
        expected = _query_int(request, "resourceVersion")
        last = await self.store.delete(target.kind.kind, target.namespace, target.name, expected)
        return json_response(last)

    async def _put_status(
        self, request: Request, principal: Principal, target: Target,
    ) -> Response:
        kind = target.kind
        authorize(principal, Verb.UPDATE_STATUS, kind)
        assert target.name is not None
        body = await read_json_object(request)
        assert body is not None
        if body.get("status") is None:
            raise InvalidObject("required field is missing", field="status")
        status = validate_status(kind, body["status"])
        meta = body.get("metadata")
        expected: int | None = None
        if isinstance(meta, dict):
            if meta.get("name") not in (None, target.name):
                raise BadRequest(
                    f"metadata.name {meta.get('name')!r} does not match the name "
                    f"{target.name!r} in the path",
                    field="metadata.name",
                )
            expected = resource_version(body) or None
        stored = await self.store.update_status(
            kind.kind, target.namespace, target.name, status, expected,
        )
        return json_response(stored)
