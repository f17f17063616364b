"""The router's REST surface, on the API port behind the usual bearer token.

* ``/router/<node>/<namespace>/<path>`` (any of GET, POST, PUT, PATCH, DELETE) — KubeEdge's
  rule URL (``http://cloudcore:9443/<node>/<namespace>/<path>``) moved under ``/router``
  on the authenticated API.  Sending through a rule needs the right to create rules
  (operator or admin).
* ``GET /router/messages[?node=&topic=&rule=]`` — the stream of messages from the
  edges, one JSON object per line; needs the right to watch rules (any role).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from cloudcore.api.authn import principal_of
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
        params = request.path_params
        path = params["path"]
        if not path:
            raise BadRequest("the URL needs a path after /router/<node>/<namespace>/",
                             field="path")
        reply = await router.rest_ingress(
            params["node"], params["namespace"], "/" + path, request.method,
            await request.body(), request.headers.get("content-type"),
        )
        return Response(reply.body, status_code=reply.status, media_type=reply.content_type)

    return [
        Route("/router/messages", messages, methods=["GET"]),
        Route("/router/{node}/{namespace}/{path:path}", ingress, methods=METHODS),
    ]
