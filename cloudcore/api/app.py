"""Assembles the REST API: routes, authentication, body limits and error rendering.

Layers, outermost first: AuditMiddleware (changes and refusals -> DIR/audit.log, when
an audit log is given), ErrorMiddleware (any escaped error -> Status body),
BodyLimitMiddleware (413 past ``max_body_bytes``), BearerAuthMiddleware (401 unless
the route is public), then Starlette's routing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

import protocol.kinds  # noqa: F401  (registers every kind before the routes are built)
from cloudcore.api.artifacts import COLLECTION as ARTIFACTS_PATH
from cloudcore.api.artifacts import artifact_routes
from cloudcore.api.audit import AuditLog, AuditMiddleware
from cloudcore.api.auth_routes import AuthRoutes, JoinTokenIssuer, NodeRevoker
from cloudcore.api.authn import BearerAuthMiddleware
from cloudcore.api.body import BodyLimitMiddleware
from cloudcore.api.errors import ErrorMiddleware, http_exception_handler
from cloudcore.api.objects import ObjectRoutes
from cloudcore.api.openapi import build_openapi
from cloudcore.api.throttle import TokenThrottle
from cloudcore.artifacts import ArtifactStore
from cloudcore.auth import TokenAuth
from cloudcore.store.base import Store


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


def build_api(
    store: Store,
    auth: TokenAuth,
    join_tokens: JoinTokenIssuer,
    *,
    extra_routes: Sequence[BaseRoute] = (),
    authenticated_routes: Sequence[BaseRoute] = (),
    max_body_bytes: int = 1_048_576,
    artifacts: ArtifactStore | None = None,
    audit: AuditLog | None = None,
    throttle: TokenThrottle | None = None,
    revoker: NodeRevoker | None = None,
) -> Starlette:
    """The API as an ASGI app.  ``extra_routes`` (join, CA download) are public: they
    are matched before the token check and before the resource routes.
    ``authenticated_routes`` (the router) sit behind the token like the resource routes.
    With ``artifacts``, ``/artifacts`` serves them too, with its own upload limit.
    With ``audit``, every change and every refusal is recorded there.
    With ``throttle``, each non-admin user gets its request budget (429 past it).
    With ``revoker``, admins may revoke nodes (``POST /auth/nodes/NAME/revoke``)."""
    openapi_body = json.dumps(build_openapi()).encode()

    async def openapi(request: Request) -> Response:
        return Response(openapi_body, media_type="application/json")

    public: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *extra_routes,
    ]
    routes: list[BaseRoute] = [
        *public,
        *AuthRoutes(auth, join_tokens, revoker).routes(),
        *authenticated_routes,
        *(artifact_routes(artifacts) if artifacts is not None else ()),
        *ObjectRoutes(store).routes(),
    ]
    return Starlette(
        routes=routes,
        middleware=[
            *([Middleware(AuditMiddleware, audit=audit)] if audit is not None else []),
            Middleware(ErrorMiddleware),
            Middleware(BodyLimitMiddleware, max_body_bytes=max_body_bytes,
                       # Uploads stream to disk and enforce artifacts.maxBytes themselves.
                       path_limits={ARTIFACTS_PATH: None} if artifacts is not None else None),
            Middleware(BearerAuthMiddleware, auth=auth, public_routes=public,
                       throttle=throttle),
        ],
        exception_handlers={HTTPException: http_exception_handler},
    )
