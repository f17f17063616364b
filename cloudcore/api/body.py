"""Request bodies: a size cap enforced while reading, and JSON decoding.

The cap is checked twice: against ``Content-Length`` before anything is read (so a
client announcing a huge body is refused at once), and against the bytes actually
received (so a chunked or lying client cannot get past it).  A path mapped to None in
``path_limits`` is left to its endpoint, which streams the body to disk and enforces a
larger limit of its own (artifact uploads).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocol.errors import BadRequest, TooLarge
from protocol.jsondepth import (
    MAX_DEPTH,
    lone_surrogate,
    may_be_too_deep,
    may_hold_surrogates,
    too_deep,
)


def _too_large(limit: int) -> TooLarge:
    return TooLarge(f"request body is larger than the limit of {limit} bytes")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int,
                 path_limits: Mapping[str, int | None] | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.path_limits = dict(path_limits or {})  # exact path -> its limit, or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.path_limits.get(scope["path"], self.max_body_bytes)
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise BadRequest(f"Content-Length {declared!r} is not a number") from None
            if size > limit:
                raise _too_large(limit)
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(limit)
            return message

        await self.app(scope, counting_receive, send)


async def read_json(request: Request, *, required: bool = True) -> Any:
    """The request body decoded as JSON; :class:`BadRequest` if it is not JSON.
    An empty body is ``None`` when not ``required``."""
    raw = await request.body()
    if not raw.strip():
        if required:
            raise BadRequest("request body is empty; expected a JSON object")
        return None
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise BadRequest("request body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"request body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal with thousands of digits
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if may_be_too_deep(raw) and too_deep(body):  # stored, it could not be sent on to a node
        raise BadRequest(f"request body is nested more than {MAX_DEPTH} levels deep")
    if may_hold_surrogates(raw) and lone_surrogate(body):
        raise BadRequest("request body holds a lone UTF-16 surrogate (\\uD800-\\uDFFF), "
                         "which is not text")
    return body


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; accepting them would store objects that no
    # strict JSON client can read back.
    raise ValueError(f"{name} is not a JSON value")


async def read_json_object(request: Request, *, required: bool = True) -> dict[str, Any] | None:
    raw = await request.body()
    body = await read_json(request, required=required)
    if body is None and not (required and raw.strip()):
        return None  # no body where none is needed (a JSON null body is still refused)
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body
