"""The router's REST surface, on the API port behind the usual bearer token.

* ``/router/<node>/<namespace>/<path>`` (any of GET, POST, PUT, PATCH, DELETE) — KubeEdge's
  rule URL (``http://cloudcore:9443/<node>/<namespace>/<path>``) moved under ``/router``
  on the authenticated API.  Sending through a rule needs the right to create rules
  (operator or admin).
* ``GET /router/messages[?node=&topic=&rule=]`` — the stream of messages from the
  edges, one JSON object per line; needs the right to watch rules (any role).

:func:`kubeedge_compatible_app` serves the rule URL exactly where KubeEdge does
(``http://HOST:9443/<node>/<namespace>/<path>``: plain HTTP, no token) for scripts
written against KubeEdge.  It is off unless ``router.kubeedgeListen`` is set, and it
should stay on loopback or behind something that authenticates.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from cloudcore.api.authn import principal_of
from cloudcore.api.body import BodyLimitMiddleware
from cloudcore.api.errors import ErrorMiddleware, http_exception_handler
from cloudcore.auth import Verb, authorize
from cloudcore.router.service import Router
from cloudcore.router.stream import StreamFilter
from protocol.errors import BadRequest
from protocol.resources import REGISTRY

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def router_routes(router: Router) -> list[BaseRoute]:
    rule_kind = REGISTRY.by_kind("Rule")

    async def messages(request: Request) -> Response:
        authorize(principal_of(request), Verb.WATCH, rule_kind)
        query = request.query_params
        filt = StreamFilter(node=query.get("node"), topic=query.get("topic"),
                            rule=query.get("rule"))
        return StreamingResponse(
            router.stream.lines(filt), media_type="application/x-ndjson",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def ingress(request: Request) -> Response:
        authorize(principal_of(request), Verb.CREATE, rule_kind)
        if not request.path_params["path"]:
            raise BadRequest("the URL needs a path after /router/<node>/<namespace>/",
                             field="path")
        return await _relay(router, request)

    return [
        Route("/router/messages", messages, methods=["GET"]),
        Route("/router/{node}/{namespace}/{path:path}", ingress, methods=METHODS),
    ]


async def _relay(router: Router, request: Request) -> Response:
    params = request.path_params
    reply = await router.rest_ingress(
        params["node"], params["namespace"], "/" + params["path"], request.method,
        await request.body(), request.headers.get("content-type"),
    )
    return Response(reply.body, status_code=reply.status, media_type=reply.content_type)


def kubeedge_compatible_app(router: Router, max_body_bytes: int) -> Starlette:
    async def ingress(request: Request) -> Response:
        return await _relay(router, request)

    return Starlette(
        routes=[Route("/{node}/{namespace}/{path:path}", ingress, methods=METHODS)],
        middleware=[Middleware(ErrorMiddleware),
                    Middleware(BodyLimitMiddleware, max_body_bytes=max_body_bytes)],
        exception_handlers={HTTPException: http_exception_handler},
    )
