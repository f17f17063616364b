"""/auth/*: making API users and edge join tokens, revoking nodes (admin only)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol

from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from certs.tokens import parse_ttl
from cloudcore.api.authn import principal_of
from cloudcore.api.body import read_json_object
from cloudcore.api.objects import json_response
from cloudcore.auth import Role, TokenAuth, Verb, authorize
from cloudcore.revocation import Revocation
from protocol.errors import EdgefleetError, InvalidObject
from protocol.resources import run_model

DEFAULT_JOIN_TTL = "24h"


class JoinTokenIssuer(Protocol):
    def issue(self, ttl: timedelta) -> tuple[str, datetime]:
        """A new join token valid for ``ttl`` and the moment it expires."""
        ...


class NodeRevoker(Protocol):
    async def revoke(self, node: str, by: str) -> tuple[Revocation, bool]:
        """Revoke every certificate of ``node`` (NotFound if there is no such node) and
        close its live link; returns the revocation and whether a link was closed."""
        ...


class UserRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    role: Role


class UserCreated(BaseModel):
    name: str
    role: Role
    token: str


class JoinTokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ttl: str = DEFAULT_JOIN_TTL


class JoinTokenCreated(BaseModel):
    token: str
    expires: str  # RFC 3339, UTC


class NodeRevoked(BaseModel):
    node: str
    revokedAt: str  # RFC 3339, UTC
    revokedBy: str
    serials: list[str]  # certificates this call put on the revocation list (hex)
    disconnected: bool  # whether a live link of the node was closed


def rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class AuthRoutes:
    def __init__(self, auth: TokenAuth, join_tokens: JoinTokenIssuer,
                 revoker: NodeRevoker | None = None) -> None:
        self.auth = auth
        self.join_tokens = join_tokens
        self.revoker = revoker

    def routes(self) -> list[Route]:
        routes = [
            Route("/auth/users", self.create_user, methods=["POST"]),
            Route("/auth/jointokens", self.create_join_token, methods=["POST"]),
        ]
        if self.revoker is not None:
            routes.append(Route("/auth/nodes/{name}/revoke", self.revoke_node,
                                methods=["POST"]))
        return routes

    async def create_user(self, request: Request) -> Response:
        authorize(principal_of(request), Verb.CREATE, None, resource="users")
        body = run_model(UserRequest, await read_json_object(request), "")
        assert isinstance(body, UserRequest)
        # create() fsyncs the token file: keep that off the event loop.
        token = await asyncio.to_thread(self.auth.create, body.name, body.role)
        created = UserCreated(name=body.name, role=body.role, token=token)
        return json_response(created.model_dump(mode="json"), 201)

    async def create_join_token(self, request: Request) -> Response:
        authorize(principal_of(request), Verb.CREATE, None, resource="join tokens")
        raw = await read_json_object(request, required=False)
        body = run_model(JoinTokenRequest, raw or {}, "")
        assert isinstance(body, JoinTokenRequest)
        try:
            ttl = parse_ttl(body.ttl)
            token, expires = self.join_tokens.issue(ttl)
        except EdgefleetError as exc:
            raise InvalidObject(exc.message, field="ttl") from None
        except ValueError as exc:  # unparsable, non-positive or too long a ttl
            raise InvalidObject(str(exc), field="ttl") from None
        created = JoinTokenCreated(token=token, expires=rfc3339(expires))
        return json_response(created.model_dump(mode="json"), 201)

    async def revoke_node(self, request: Request) -> Response:
        principal = principal_of(request)
        authorize(principal, Verb.CREATE, None, resource="node revocations")
        assert self.revoker is not None  # the route exists only with a revoker
        revocation, disconnected = await self.revoker.revoke(
            request.path_params["name"], principal.name)
        body = NodeRevoked(node=revocation.node, revokedAt=revocation.revoked_at,
                           revokedBy=revocation.revoked_by, serials=list(revocation.serials),
                           disconnected=disconnected)
        return json_response(body.model_dump(mode="json"), 200)
