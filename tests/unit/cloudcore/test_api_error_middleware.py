"""A bug in a handler becomes a 500 Status, logged once with its traceback.

A bug cannot be caused for real through the real routes, so this mounts a route
that raises behind the same ErrorMiddleware the API uses.
"""

from __future__ import annotations

import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cloudcore.api.errors import ErrorMiddleware
from protocol.errors import Conflict


async def broken(request: Request) -> Response:
    raise RuntimeError("secret internal detail")


async def conflicted(request: Request) -> Response:
    raise Conflict("stale", field="metadata.resourceVersion")


APP = Starlette(
    routes=[Route("/broken", broken), Route("/conflict", conflicted)],
    middleware=[Middleware(ErrorMiddleware)],
)


async def test_unexpected_exception_is_a_logged_500_status(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = httpx.ASGITransport(app=APP)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        with caplog.at_level(logging.ERROR, logger="cloudcore.api.errors"):
            r = await client.get("/broken")
    assert r.status_code == 500
    body = r.json()
    assert body["kind"] == "Status" and body["code"] == 500
    assert "secret internal detail" not in r.text
    records = [rec for rec in caplog.records if rec.name == "cloudcore.api.errors"]
    assert len(records) == 1 and records[0].exc_info is not None
    assert "GET /broken" in records[0].getMessage()


async def test_typed_errors_keep_their_code_and_field() -> None:
    transport = httpx.ASGITransport(app=APP)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        r = await client.get("/conflict")
    assert r.status_code == 409
    assert r.json()["details"] == {"field": "metadata.resourceVersion"}
