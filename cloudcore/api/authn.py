"""Bearer-token authentication for every route that is not explicitly public.

Public routes (health, the OpenAPI document, and the join/CA routes the composition
root adds) are matched first; everything else needs a valid token before routing, so
an anonymous caller learns nothing about which paths exist.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from cloudcore.api.throttle import TokenThrottle
from cloudcore.auth import Principal, TokenAuth

_PRINCIPAL = "edgefleet.principal"


class BearerAuthMiddleware:
    def __init__(self, app: ASGIApp, auth: TokenAuth, public_routes: Sequence[BaseRoute],
                 throttle: TokenThrottle | None = None) -> None:
        self.app = app
        self.auth = auth
        self.public_routes = tuple(public_routes)
        self.throttle = throttle

    def _is_public(self, scope: Scope) -> bool:
        for route in self.public_routes:
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._is_public(scope):
            principal = self.auth.authenticate(Headers(scope=scope).get("authorization"))
            scope.setdefault("state", {})[_PRINCIPAL] = principal
            if self.throttle is not None:
                self.throttle.check(principal)
        await self.app(scope, receive, send)


def principal_in(scope: Scope) -> Principal | None:
    """The authenticated caller of this request, or None (public route, or refused)."""
    principal = scope.get("state", {}).get(_PRINCIPAL)
    return principal if isinstance(principal, Principal) else None


def principal_of(request: Request) -> Principal:
    principal = principal_in(request.scope)
    # Only reachable for a non-public route, which the middleware has authenticated.
    assert isinstance(principal, Principal), "route is not behind BearerAuthMiddleware"
    return principal
