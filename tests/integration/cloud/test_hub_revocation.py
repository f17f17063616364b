"""The hub and the revocation list together, in-process, over real mTLS websockets on
127.0.0.1: a revoked certificate is refused at accept, a live session is cut, renewal
with a revoked certificate is refused, and only certificates issued after the
revocation get in."""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from certs.ca import CertAuthority, ensure_server_cert, load_or_create_ca
from certs.csr import new_node_key_and_csr
from certs.keyfiles import write_private, write_public
from certs.tls import client_context, server_context
from cloudcore.dispatch import Dispatcher
from cloudcore.hub import CLOSE_REVOKED, CLOSE_UNKNOWN_NODE, REVOKED_REASON, Hub, HubConfig
from cloudcore.revocation import NodeRevoker, RevocationList, certificate_serial, serial_hex
from cloudcore.store.base import node_exists_in
from cloudcore.store.sqlite import SqliteStore
from protocol import envelope as wire
from protocol.envelope import Envelope, Op
from protocol.errors import NotFound

NODE = "edge-a"


@dataclass
class Cloud:
    hub: Hub
    ca: CertAuthority
    pki: Path
    revocations: RevocationList
    revoker: NodeRevoker

    def issue(self, name: str, *, record: bool = True) -> tuple[ssl.SSLContext, int]:
        """A client context with a fresh certificate for ``name``, and its serial
        (recorded as issued, as join and renewal do, unless ``record`` is False: as an
        older cloudcore signed them)."""
        key_pem, csr_pem = new_node_key_and_csr(name)
        cert_pem = self.ca.sign_node_csr(csr_pem, name, timedelta(hours=1))
        if record:
            self.revocations.record_issued(name, cert_pem)
        serial = certificate_serial(cert_pem)[0]
        stem = f"{name}-{serial_hex(serial)}"
        write_public(self.pki / f"{stem}.crt", cert_pem)
        write_private(self.pki / f"{stem}.key", key_pem)
        return client_context(self.pki / "ca.crt", self.pki / f"{stem}.crt",
                              self.pki / f"{stem}.key"), serial

    @property
    def url(self) -> str:
        return f"wss://127.0.0.1:{self.hub.port}"


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    pki = tmp_path / "pki"
    ca = load_or_create_ca(pki)
    crt, key = ensure_server_cert(pki, ca, ["127.0.0.1"])
    store = SqliteStore.open(tmp_path / "store.db")
    await store.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})
    dispatcher = Dispatcher(store)
    await dispatcher.start()
    revocations = RevocationList.open(tmp_path / "revocations.db")

    async def heartbeat(_node: str, _hb: wire.HeartbeatBody) -> None:
        return None

    node_exists = node_exists_in(store)

    def sign(csr: bytes, node: str) -> bytes:
        cert = ca.sign_node_csr(csr, node, timedelta(hours=1))
        revocations.record_issued(node, cert)
        return cert

    hub = Hub(HubConfig(host="127.0.0.1", port=0),
              server_context(crt, key, pki / "ca.crt", require_client_cert=True),
              store, dispatcher, on_heartbeat=heartbeat, sign_csr=sign,
              is_node_allowed=node_exists, is_cert_revoked=revocations.is_revoked)
    await hub.start()
    try:
        yield Cloud(hub, ca, pki, revocations, NodeRevoker(revocations, node_exists, hub.cut_off))
    finally:
        await hub.stop()
        await dispatcher.stop()
        await store.close()
        revocations.close()


async def sync(ws: ClientConnection) -> None:
    await ws.send(wire.encode(wire.make(Op.SYNC, ts=0, body={"holdings": {}})))
    assert await answer_to(ws, None, Op.SYNC_DONE)


async def answer_to(ws: ClientConnection, parent: str | None, op: Op) -> Envelope:
    while True:
        env = wire.decode(await ws.recv())
        if env.op is op and (parent is None or env.parent_id == parent):
            return env


async def refused(url: str, ctx: ssl.SSLContext) -> ConnectionClosed:
    """Connect and try to sync; return how the hub closed the link."""
    async with connect(url, ssl=ctx) as ws:
        with pytest.raises(ConnectionClosed) as info:
            await sync(ws)
    return info.value


async def test_a_live_session_is_cut_and_the_certificate_refused_from_then_on(
    cloud: Cloud,
) -> None:
    old, _ = cloud.issue(NODE)
    async with connect(cloud.url, ssl=old) as ws:
        await sync(ws)
        assert NODE in cloud.hub.sessions
        started = time.monotonic()
        revocation, disconnected = await cloud.revoker.revoke(NODE, "alice")
        assert disconnected
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
        assert time.monotonic() - started < 5
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (CLOSE_REVOKED, REVOKED_REASON)
    assert revocation.node == NODE and revocation.revoked_by == "alice"
    assert len(revocation.serials) == 1

    closed = await refused(cloud.url, old)
    assert closed.rcvd is not None and closed.rcvd.code == CLOSE_REVOKED
    assert NODE not in cloud.hub.sessions


async def test_renewal_with_a_revoked_certificate_is_forbidden(cloud: Cloud) -> None:
    async with connect(cloud.url, ssl=cloud.issue(NODE)[0]) as ws:
        await sync(ws)
        # The window between recording a revocation and closing the link: the hub must
        # not hand out a fresh certificate in it.
        cloud.revocations.revoke(NODE, "alice")
        _key, csr = new_node_key_and_csr(NODE)
        request = wire.make(Op.CSR, ts=0, body={"csr": csr.decode()})
        await ws.send(wire.encode(request))
        error = wire.decode_body(await answer_to(ws, request.id, Op.ERROR), wire.ErrorBody)
        assert error.code == 403
        assert "revoked" in error.message and "re-join" in error.message
        assert await cloud.hub.cut_off(NODE)


async def test_only_certificates_issued_after_the_revocation_get_in(
    cloud: Cloud, tmp_path: Path,
) -> None:
    # As signed by a cloudcore that did not record serials yet.
    unrecorded, unrecorded_serial = cloud.issue(NODE, record=False)
    old, old_serial = cloud.issue(NODE)
    revocation = await cloud.revoker.revoke(NODE, "alice")
    assert revocation[0].serials == (serial_hex(old_serial),)
    new, new_serial = cloud.issue(NODE)  # a re-join with a new token

    async with connect(cloud.url, ssl=new) as ws:
        await sync(ws)
    for ctx in (old, unrecorded):
        closed = await refused(cloud.url, ctx)
        assert closed.rcvd is not None and closed.rcvd.code == CLOSE_REVOKED
    # Another node is not affected (it is refused only for not being registered).
    closed = await refused(cloud.url, cloud.issue("edge-b", record=False)[0])
    assert closed.rcvd is not None and closed.rcvd.code == CLOSE_UNKNOWN_NODE

    # The list is on disk: a restarted cloud gives the same answers.
    reopened = RevocationList.open(tmp_path / "revocations.db")
    try:
        assert reopened.is_revoked(NODE, old_serial)
        assert reopened.is_revoked(NODE, unrecorded_serial)
        assert not reopened.is_revoked(NODE, new_serial)
        assert not reopened.is_revoked("edge-b", unrecorded_serial + 1)
    finally:
        reopened.close()


async def test_revoking_an_unknown_node_is_not_found(cloud: Cloud) -> None:
    with pytest.raises(NotFound, match="node ghost does not exist"):
        await cloud.revoker.revoke("ghost", "alice")
