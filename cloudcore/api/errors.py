"""Every API error leaves as a Kubernetes ``Status`` body.

Typed errors (:class:`~protocol.errors.EdgefleetError`) carry their own code and
reason.  Routing misses (unknown path, method) come from Starlette as
``HTTPException`` and are rendered the same way.  Anything else is a bug: it is logged
once with its traceback and answered with a 500 Status, never with a stack trace.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocol.errors import EdgefleetError, NotFound

log = logging.getLogger(__name__)


class MethodNotAllowed(EdgefleetError):
    reason = "MethodNotAllowed"
    code = 405


class InternalError(EdgefleetError):
    reason = "InternalError"
    code = 500


def status_response(error: EdgefleetError, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(error.to_status()),
        status_code=error.code,
        media_type="application/json",
        headers=headers,
    )


def error_response(error: EdgefleetError) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="edgefleet"'} if error.code == 401 else None
    retry_after = getattr(error, "retry_after_header", None)
    if isinstance(retry_after, str):
        headers = {"Retry-After": retry_after}
    return status_response(error, headers)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (no route matched) as Status bodies."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(NotFound(f"the server has no resource at {request.url.path}"))
    if exc.status_code == 405:
        return error_response(MethodNotAllowed(f"{request.method} is not allowed here"))
    error = EdgefleetError(str(exc.detail))
    body: dict[str, Any] = error.to_status()
    body["code"] = exc.status_code
    return Response(json.dumps(body), status_code=exc.status_code, media_type="application/json")


class ErrorMiddleware:
    """Outermost layer: turns any exception that escaped the app into a Status body.

    Typed errors raised in other middleware (authentication, body limits) or in
    endpoints end here, as do bugs.  If the response had already started (a watch
    stream), there is nothing left to send: the error is logged and the stream ends.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except EdgefleetError as exc:
            if started:
                log.warning("error after the response started: %s", exc)
                return
            await error_response(exc)(scope, receive, send)
        except Exception:
            log.exception("unexpected error serving %s %s", scope.get("method"), scope.get("path"))
            if started:
                return
            error = InternalError("internal error; the server log has the details")
            await error_response(error)(scope, receive, send)
