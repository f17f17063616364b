"""The artifact endpoints of the REST API (behind the bearer token).

* ``POST /artifacts[?name=NAME]`` — the raw body is the file; answers
  ``{"sha256", "size", "name", "created", "pushedBy"}``, 201 when new, 200 when the same
  content was already stored.  Operators and admins.
* ``GET /artifacts`` — ``{"items": [...]}``, oldest first.  Any role.
* ``GET /artifacts/<sha256>`` — the content.  Any role.
* ``DELETE /artifacts/<sha256>`` — admins only: Apps on the edges may still need it.

The upload is streamed to disk; its size limit is ``artifacts.maxBytes``, not the API's
1 MiB body limit (see :class:`~cloudcore.api.body.BodyLimitMiddleware`).
"""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from cloudcore.api.authn import principal_of
from cloudcore.artifacts import ArtifactStore, check_sha256, too_large
from cloudcore.auth import Verb, authorize
from protocol.errors import BadRequest
from protocol.resources import KindInfo

COLLECTION = "/artifacts"

# Artifacts are not a stored kind; this description only gives them a row of their own
# in the permission table (viewers read, operators also push, admins also delete).
ARTIFACTS = KindInfo(kind="Artifact", group="", version="v1", plural="artifacts",
                     namespaced=False)


def artifact_routes(store: ArtifactStore) -> list[BaseRoute]:
    async def push(request: Request) -> Response:
        principal = principal_of(request)
        authorize(principal, Verb.CREATE, ARTIFACTS)
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise BadRequest(f"Content-Length {declared!r} is not a number")
            if int(declared) > store.max_bytes:
                raise too_large(store.max_bytes)  # refused before a byte is read
        try:
            info, created = await store.put(request.stream(), name=request.query_params.get(
                "name"), pushed_by=principal.name)
        except ClientDisconnect:
            raise BadRequest("the client went away before the upload was complete") from None
        return JSONResponse(info.to_json(), status_code=201 if created else 200)

    async def listing(request: Request) -> Response:
        authorize(principal_of(request), Verb.LIST, ARTIFACTS)
        items = await asyncio.to_thread(store.list)
        return JSONResponse({"items": [a.to_json() for a in items]})

    async def download(request: Request) -> Response:
        authorize(principal_of(request), Verb.GET, ARTIFACTS)
        sha256 = check_sha256(request.path_params["sha256"])
        return FileResponse(store.path_of(sha256), media_type="application/octet-stream",
                            headers={"ETag": f'"{sha256}"'})

    async def remove(request: Request) -> Response:
        # Admins only (the permission table's Artifact row): Apps on the edges may
        # still need the content.
        authorize(principal_of(request), Verb.DELETE, ARTIFACTS)
        info = await asyncio.to_thread(store.delete,
                                       check_sha256(request.path_params["sha256"]))
        return JSONResponse(info.to_json())

    return [
        Route(COLLECTION, push, methods=["POST"]),
        Route(COLLECTION, listing, methods=["GET"]),
        Route(COLLECTION + "/{sha256}", download, methods=["GET"]),
        Route(COLLECTION + "/{sha256}", remove, methods=["DELETE"]),
    ]
