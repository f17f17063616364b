"""The join endpoints on :10002 (no bearer token: a new node has only its join token).

``GET /ca.crt``  the CA certificate (PEM).  The edge fetches it without verification and
                 checks its sha256 against the hash inside the join token.
``POST /join``   ``Authorization: Bearer <join token>``, body ``{nodeName, csr, labels}``:
                 verifies the token (signature, expiry, CA hash), signs the CSR with
                 CN = nodeName and creates (or, on re-join, updates) the Node object.
                 A node that sends ``nodeTime`` (its clock, RFC 3339) is refused when
                 that is off by more than ``nodes.clockSkewSeconds``; the answer carries
                 the tolerance (``clockSkewSeconds``) for the node's own expiry checks.
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
from certs.clock import ClockSkewError, check_clock_skew
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
    nodeTime: datetime | None = None  # the node's clock when it sent the request


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class JoinService:
    ca: CertAuthority
    token_secret: bytes
    store: Store
    hub_port: int
    node_cert_validity: timedelta
    clock_skew: timedelta
    on_joined: Callable[[str], None] = lambda _node: None
    # Every certificate signed for a node, before it is handed out (the revocation list
    # needs its serial).
    on_issued: Callable[[str, bytes], None] = lambda _node, _cert: None
    clock: Callable[[], datetime] = _utc_now  # the cloud's clock (tests move it)

    def issue(self, ttl: timedelta) -> tuple[str, datetime]:
        now = datetime.now(UTC)
        return make_join_token(self.ca.ca_hash, self.token_secret, ttl, now), now + ttl

    def sign_renewal(self, csr_pem: bytes, node: str) -> bytes:
        """A node renewing over its authenticated link: no token, same identity."""
        try:
            cert = self.ca.sign_node_csr(csr_pem, node, self.node_cert_validity,
                                         skew=self.clock_skew)
        except CSRRejected as exc:
            raise BadRequest(str(exc), field="body.csr") from None
        self.on_issued(node, cert)
        return cert

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
                              secret=self.token_secret, now=self.clock(),
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
        if req.nodeTime is not None:
            node_time = req.nodeTime if req.nodeTime.tzinfo else req.nodeTime.replace(tzinfo=UTC)
            try:
                check_clock_skew(node_time, self.clock(), self.clock_skew)
            except ClockSkewError as exc:
                raise BadRequest(str(exc), field="nodeTime") from None
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
        self.on_issued(req.nodeName, cert)
        await self.store.apply(node_obj)
        self.on_joined(req.nodeName)
        log.info("node %s %s", req.nodeName, "re-joined" if existing else "joined")
        return JSONResponse(
            {"nodeName": req.nodeName, "certificate": cert.decode(), "hubPort": self.hub_port,
             "clockSkewSeconds": self.clock_skew.total_seconds()},
            status_code=201,
        )

    def routes(self) -> list[Route]:
        return [
            Route("/ca.crt", self.ca_cert, methods=["GET"]),
            Route("/join", self.join, methods=["POST"]),
        ]
