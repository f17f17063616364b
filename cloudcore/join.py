"""The join endpoints on :10002 (no bearer token: a new node has only its join token).

``GET /ca.crt``  the CA certificate (PEM).  The edge fetches it without verification and
                 checks its sha256 against the hash inside the join token.
``POST /join``   ``Authorization: Bearer <join token>``, body ``{nodeName, csr, labels}``:
                 verifies the token (signature, expiry, CA hash), signs the CSR with
                 CN = nodeName and creates (or, on re-join, updates) the Node object.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from certs.ca import CertAuthority
from certs.errors import CertError, CSRRejected, TokenError
from certs.tokens import make_join_token, verify_join_token
from cloudcore.store.base import Store
from protocol.errors import BadRequest, EdgefleetError, InvalidObject, TooLarge, Unauthorized
from protocol.resources import check_dns_subdomain, pydantic_path, validate_object

log = logging.getLogger(__name__)

MAX_JOIN_BODY = 64 * 1024


class JoinRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    nodeName: str = Field(min_length=1, max_length=253)
    csr: str = Field(min_length=1, max_length=16384)
    labels: dict[str, str] = {}


@dataclass
class JoinService:
    ca: CertAuthority
    token_secret: bytes
    store: Store
    hub_port: int
    node_cert_validity: timedelta
    clock_skew: timedelta
    on_joined: Callable[[str], None] = lambda _node: None

    def issue(self, ttl: timedelta) -> tuple[str, datetime]:
        now = datetime.now(UTC)
        return make_join_token(self.ca.ca_hash, self.token_secret, ttl, now), now + ttl

    def sign_renewal(self, csr_pem: bytes, node: str) -> bytes:
        """A node renewing over its authenticated link: no token, same identity."""
        try:
            return self.ca.sign_node_csr(csr_pem, node, self.node_cert_validity,
                                         skew=self.clock_skew)
        except CSRRejected as exc:
            raise BadRequest(str(exc), field="body.csr") from None

    async def ca_cert(self, _request: Request) -> Response:
        return Response(self.ca.cert_pem, media_type="application/x-pem-file")

    async def join(self, request: Request) -> Response:
        try:
            return await self._join(request)
        except EdgefleetError as exc:
            log.warning("join refused: %s", exc)
            return JSONResponse(exc.to_status(), status_code=exc.code)

    async def _join(self, request: Request) -> Response:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            raise Unauthorized("a join needs 'Authorization: Bearer <join token>'")
        try:
            verify_join_token(header[7:].strip(), ca_hash=self.ca.ca_hash,
                              secret=self.token_secret, now=datetime.now(UTC),
                              leeway=self.clock_skew)
        except TokenError as exc:
            raise Unauthorized(str(exc)) from None
        raw = await request.body()
        if len(raw) > MAX_JOIN_BODY:
            raise TooLarge(f"join request over {MAX_JOIN_BODY} bytes")
        try:
            req = JoinRequest.model_validate_json(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise InvalidObject(str(err["msg"]), field=pydantic_path(tuple(err["loc"]))) from None
        check_dns_subdomain(req.nodeName, "nodeName")
        node_obj: dict[str, Any] = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": req.nodeName, "labels": req.labels},
        }
        try:
            existing = await self.store.get("Node", None, req.nodeName)
            node_obj["metadata"]["labels"] = {
                **(existing["metadata"].get("labels") or {}), **req.labels}
            node_obj["spec"] = existing.get("spec") or {}
        except EdgefleetError:
            existing = None
        _, node_obj = validate_object(node_obj)
        try:
            cert = self.ca.sign_node_csr(req.csr.encode(), req.nodeName,
                                         self.node_cert_validity, skew=self.clock_skew)
        except CertError as exc:
            raise BadRequest(str(exc), field="csr") from None
        await self.store.apply(node_obj)
        self.on_joined(req.nodeName)
        log.info("node %s %s", req.nodeName, "re-joined" if existing else "joined")
        return JSONResponse(
            {"nodeName": req.nodeName, "certificate": cert.decode(), "hubPort": self.hub_port},
            status_code=201,
        )

    def routes(self) -> list[Route]:
        return [
            Route("/ca.crt", self.ca_cert, methods=["GET"]),
            Route("/join", self.join, methods=["POST"]),
        ]
