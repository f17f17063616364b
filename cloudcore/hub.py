"""The cloud end of the link: ``wss://:10000`` with mutual TLS.

One websocket per node.  The node's identity is the CN of the client certificate the
TLS layer verified; nothing the node says overrides it.  A session:

1. waits for the edge's ``sync`` (what it holds) and hands it to the dispatcher, which
   queues exactly the difference;
2. writes due envelopes from the node's :class:`~protocol.downstream.DownstreamQueue`
   (new versions, and resends of unacked ones) and feeds ``ack`` frames back to it;
3. handles upstream frames — heartbeats, status writes the node is allowed to make,
   certificate renewals, routed messages — each answered with ``ack`` or ``error``;
4. carries requests that expect an answer from the edge (:meth:`Hub.request`, used by
   the router to deliver a message): the edge's ``ack`` or ``error`` naming the request
   resolves it.

A malformed, oversized or rate-limited frame gets an ``error`` envelope and a log line;
the link stays up.  A node that connects again replaces its old session.

A certificate on the revocation list (:mod:`cloudcore.revocation`) is refused at
accept, before any sync, and may not be renewed; revoking a node closes its live
session with :data:`CLOSE_REVOKED`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from certs.tls import peer_common_name
from cloudcore.dispatch import Dispatcher
from cloudcore.revocation import peer_serial
from cloudcore.store.base import Store, UpdateStatus
from protocol import envelope as wire
from protocol.downstream import DownstreamQueue
from protocol.envelope import Envelope, Op
from protocol.errors import (
    TRANSIENT_CODES,
    BadRequest,
    EdgefleetError,
    Forbidden,
    FrameDecodeError,
    GatewayTimeout,
    NotFound,
    RateLimited,
    TooLarge,
    Unavailable,
)
from protocol.ratelimit import TokenBucket
from protocol.resources import REGISTRY, validate_status

log = logging.getLogger(__name__)

CLOSE_REPLACED = 4000
CLOSE_REVOKED = 4001
CLOSE_UNKNOWN_NODE = 4003
# Close reasons are limited to 123 bytes: no node name in it.
REVOKED_REASON = "node certificate revoked; re-join with a new token"

# (node, certificate serial) -> whether that certificate is revoked.
RevocationCheck = Callable[[str, int | None], bool]


@dataclass(frozen=True)
class HubConfig:
    host: str = "0.0.0.0"
    port: int = 10000
    max_frame_bytes: int = 1_048_576
    messages_per_second: float = 50.0
    message_burst: int = 200
    ack_timeout: float = 5.0
    window: int = 256
    sync_timeout: float = 30.0


def shrink_tls_read_buffers(size: int = 16 * 1024) -> None:
    """asyncio allocates a zero-filled 256 KiB read buffer for every TLS connection
    (``SSLProtocol.max_size``): ~300 KB of RSS per connected node.  16 KiB holds a
    full TLS record and cut it to ~64 KB per node with no functional change
    (shared/reference/libcheck.md, gotcha 5).  The attribute is private, hence the
    guard: on an asyncio without it nothing changes."""
    import asyncio.sslproto as sslproto

    if hasattr(sslproto.SSLProtocol, "max_size"):
        sslproto.SSLProtocol.max_size = size


def now_ms() -> int:
    return int(time.time() * 1000)


# Status writes a node may make: the kind, and whether the object belongs to it.
StatusOwnership = Callable[[str, dict[str, Any]], bool]
STATUS_OWNERS: dict[str, StatusOwnership] = {
    "Node": lambda node, obj: obj["metadata"]["name"] == node,
    "Device": lambda node, obj: (obj.get("spec") or {}).get("nodeName") == node,
    "AppReplica": lambda node, obj: (obj.get("spec") or {}).get("nodeName") == node,
}


HttpHook = Callable[[ServerConnection, Request], Awaitable[Response | None]]


class NodeSession:
    def __init__(self, node: str, ws: ServerConnection, cfg: HubConfig,
                 serial: int | None = None) -> None:
        self.node = node
        self.ws = ws
        self.serial = serial  # of the client certificate this session presented
        self.queue = DownstreamQueue(ack_timeout=cfg.ack_timeout, window=cfg.window)
        self._wake = asyncio.Event()
        self.bucket = TokenBucket(cfg.messages_per_second, cfg.message_burst)
        self.synced = asyncio.Event()
        self._requests: dict[str, asyncio.Future[Envelope]] = {}

    def wake(self) -> None:
        self._wake.set()

    async def send(self, env: Envelope) -> None:
        await self.ws.send(wire.encode(env))

    async def error(self, exc: EdgefleetError, parent: str | None) -> None:
        body = wire.ErrorBody(code=exc.code, reason=exc.reason, message=exc.message,
                              field=exc.field)
        await self.send(wire.make(Op.ERROR, ts=now_ms(), parent_id=parent,
                                  body=body.model_dump(exclude_none=True)))

    async def request(self, env: Envelope, wait: float) -> Envelope:
        """Send ``env`` and wait for the edge's ``ack`` or ``error`` naming it."""
        future: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._requests[env.id] = future
        try:
            await self.send(env)
            return await asyncio.wait_for(future, wait)
        finally:
            self._requests.pop(env.id, None)

    def answer(self, env: Envelope) -> bool:
        """An ``ack``/``error`` arrived: resolve the request it names, if any."""
        future = self._requests.get(env.parent_id or "")
        if future is None or future.done():
            return False
        future.set_result(env)
        return True

    def abandon_requests(self) -> None:
        for future in self._requests.values():
            if not future.done():
                future.set_exception(ConnectionError(f"node {self.node} disconnected"))

    async def write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            now = loop.time()
            for env in self.queue.due(now, now_ms()):
                await self.send(env)
            deadline = self.queue.next_deadline()
            timeout = None if deadline is None else max(0.05, deadline - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)


class Hub:
    def __init__(
        self,
        cfg: HubConfig,
        ssl_context: ssl.SSLContext,
        store: Store,
        dispatcher: Dispatcher,
        *,
        on_heartbeat: Callable[[str, wire.HeartbeatBody], Awaitable[None]],
        sign_csr: Callable[[bytes, str], bytes],
        is_node_allowed: Callable[[str], Awaitable[bool]],
        on_message: Callable[[NodeSession, Envelope], Awaitable[None]] | None = None,
        http_request: HttpHook | None = None,
        is_cert_revoked: RevocationCheck = lambda _node, _serial: False,
    ) -> None:
        self.cfg = cfg
        self._ssl = ssl_context
        self._store = store
        self._dispatcher = dispatcher
        self._on_heartbeat = on_heartbeat
        self._sign_csr = sign_csr
        self._is_node_allowed = is_node_allowed
        self._on_message = on_message
        # Answers plain HTTP GETs (artifact downloads) before any websocket upgrade;
        # returning None lets the handshake go on.
        self._http_request = http_request
        self._is_cert_revoked = is_cert_revoked
        self.sessions: dict[str, NodeSession] = {}
        self._server: Server | None = None
        self.frames_rejected = 0

    async def start(self) -> None:
        shrink_tls_read_buffers()
        self._server = await serve(
            self._handle,
            self.cfg.host,
            self.cfg.port,
            ssl=self._ssl,
            # Oversized frames are answered with an error envelope below; only frames
            # far beyond the limit make the websocket layer close the connection.
            max_size=self.cfg.max_frame_bytes * 4,
            compression=None,  # per-connection zlib state costs ~300 KB/node
            ping_interval=20,
            ping_timeout=20,
            close_timeout=5,
            process_request=self._http_request,
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        sock = next(iter(self._server.sockets))
        return int(sock.getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def request(self, node: str, env: Envelope, wait: float) -> Envelope:
        """Deliver ``env`` to a connected node and return its answer (``ack`` or
        ``error``).  Raises :class:`Unavailable` when the node is not connected (or
        drops during the wait) and :class:`GatewayTimeout` when it does not answer."""
        session = self.sessions.get(node)
        if session is None or not session.synced.is_set():
            raise Unavailable(f"node {node} is not connected")
        try:
            return await session.request(env, wait)
        except TimeoutError:
            raise GatewayTimeout(f"node {node} did not answer within {wait:g} s") from None
        except (ConnectionError, ConnectionClosed):
            raise Unavailable(f"node {node} disconnected before answering") from None

    async def disconnect(self, node: str, reason: str) -> None:
        session = self.sessions.get(node)
        if session is not None:
            await session.ws.close(CLOSE_UNKNOWN_NODE, reason)

    async def cut_off(self, node: str) -> bool:
        """Close ``node``'s session if its certificate is now revoked (called right after
        a revocation); True if a live session was closed."""
        session = self.sessions.get(node)
        if session is None or not self._is_cert_revoked(node, session.serial):
            return False
        log.warning("node %s: certificate revoked; closing its link", node)
        await session.ws.close(CLOSE_REVOKED, REVOKED_REASON)
        return True

    # ---- one connection ----------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        peercert = ws.transport.get_extra_info("peercert") if ws.transport else None
        node = peer_common_name(peercert) if peercert else None
        if not node:
            await ws.close(CLOSE_UNKNOWN_NODE, "client certificate has no common name")
            return
        serial = peer_serial(peercert)
        # A deleted node's certificates are revoked too; "not registered" tells its
        # owner more than "revoked", so that check comes first.
        if not await self._is_node_allowed(node):
            log.warning("refused link from %s: no such node (deleted or never joined)", node)
            await ws.close(CLOSE_UNKNOWN_NODE, f"node {node} is not registered; join again")
            return
        if self._is_cert_revoked(node, serial):
            log.warning("refused link from node %s: its certificate (serial %s) is revoked",
                        node, "unknown" if serial is None else f"{serial:X}")
            await ws.close(CLOSE_REVOKED, REVOKED_REASON)
            return
        old = self.sessions.get(node)
        session = NodeSession(node, ws, self.cfg, serial)
        self.sessions[node] = session
        if old is not None:
            log.info("node %s connected again; replacing its previous session", node)
            self._dispatcher.detach(old)
            await old.ws.close(CLOSE_REPLACED, "replaced by a newer session of this node")
        log.info("node %s connected from %s", node, ws.remote_address)
        writer: asyncio.Task[None] | None = None
        try:
            async for frame in ws:
                await self._on_frame(session, frame)
                if writer is None and session.synced.is_set():
                    writer = asyncio.create_task(session.write_loop(), name=f"hub-write-{node}")
        except ConnectionClosed:
            pass
        finally:
            session.abandon_requests()
            if writer is not None:
                writer.cancel()
                # gather keeps a cancellation of this handler itself propagating.
                await asyncio.gather(writer, return_exceptions=True)
            self._dispatcher.detach(session)
            if self.sessions.get(node) is session:
                del self.sessions[node]
            log.info("node %s disconnected", node)

    async def _on_frame(self, session: NodeSession, frame: str | bytes) -> None:
        parent: str | None = None
        try:
            if len(frame) > self.cfg.max_frame_bytes:
                # Not decoded (that is the point), but its id is named when it leads the
                # frame, as ours do: the edge then knows which message was too large.
                parent = wire.leading_id(frame)
                raise TooLarge(f"frame of {len(frame)} bytes exceeds the limit of "
                               f"{self.cfg.max_frame_bytes}")
            env = wire.decode(frame)
            parent = env.id
            if env.op is Op.ACK:
                if env.parent_id and not session.answer(env):
                    session.queue.ack(env.parent_id)
                    if session.queue.has_unsent():
                        session.wake()
                return
            if env.op is Op.ERROR:
                # Never answered (an error about an error would loop); it either
                # resolves a request or is logged.
                if not session.answer(env):
                    log.warning("node %s reported an error: %s", session.node, env.body)
                return
            # A statuses frame costs what its statuses would alone (at most the burst,
            # or a big one could never pass).
            cost = min(_items_in(env), session.bucket.burst)
            if not session.bucket.allow(asyncio.get_running_loop().time(), cost):
                raise RateLimited(f"node {session.node} exceeds "
                                  f"{self.cfg.messages_per_second:g} messages/s")
            await self._dispatch_upstream(session, env)
        except EdgefleetError as exc:
            self.frames_rejected += 1
            log.warning("node %s: rejected frame: %s", session.node, exc)
            await session.error(exc, parent)

    async def _dispatch_upstream(self, session: NodeSession, env: Envelope) -> None:
        if env.op is Op.SYNC:
            sync = wire.decode_body(env, wire.SyncBody)
            ups, dels = self._dispatcher.attach(session, sync.holdings)
            log.info("node %s resync: holds %d objects; sending %d upserts, %d deletes",
                     session.node, len(sync.holdings), ups, dels)
            session.synced.set()
            await session.send(wire.make(Op.SYNC_DONE, ts=now_ms(), parent_id=env.id,
                                         body={"upserts": ups, "deletes": dels}))
        elif env.op is Op.HEARTBEAT:
            await self._on_heartbeat(session.node, wire.decode_body(env, wire.HeartbeatBody))
        elif env.op is Op.STATUS:
            await self._write_status(session, env)
            await session.send(wire.make(Op.ACK, ts=now_ms(), parent_id=env.id))
        elif env.op is Op.STATUSES:
            refused = await self._write_statuses(session, env)
            body = None if not refused else wire.StatusesAckBody(refused=refused).model_dump(
                exclude_none=True)
            await session.send(wire.make(Op.ACK, ts=now_ms(), parent_id=env.id, body=body))
        elif env.op is Op.MESSAGE and self._on_message is not None:
            # The router answers (ack once delivered) when it has handled the message.
            await self._on_message(session, env)
        elif env.op is Op.CSR:
            if self._is_cert_revoked(session.node, session.serial):
                # Only reachable between a revocation and the close that follows it.
                raise Forbidden(f"the certificate of node {session.node} is revoked and "
                                "cannot be renewed; re-join with a new token")
            csr = wire.decode_body(env, wire.CsrBody)
            cert = self._sign_csr(csr.csr.encode(), session.node)
            log.info("renewed the certificate of node %s", session.node)
            await session.send(wire.make(Op.CERT, ts=now_ms(), parent_id=env.id,
                                         body={"certificate": cert.decode()}))
        else:
            raise BadRequest(f"operation {env.op.value!r} is not accepted from an edge",
                             field="op")

    async def _write_status(self, session: NodeSession, env: Envelope) -> None:
        if env.ref is None:
            raise BadRequest("a status write needs ref", field="ref")
        body = wire.decode_body(env, wire.StatusBody)
        write = await self._checked_status(session.node, env.ref, body.status)
        await self._store.update_status(write.kind, write.namespace, write.name, write.status)

    async def _write_statuses(self, session: NodeSession,
                              env: Envelope) -> list[wire.RefusedItem]:
        """Write the statuses of a ``statuses`` frame in one transaction; returns those
        refused one by one (the others are written).  A failure of the transaction itself
        (store full, unavailable) raises: nothing was written, the edge resends them."""
        items = wire.decode_body(env, wire.StatusesBody).items
        refused: list[wire.RefusedItem] = []
        writes: list[UpdateStatus] = []
        written: list[str] = []
        for i, item in enumerate(items):
            try:
                writes.append(await self._checked_status(session.node, item.ref, item.status))
                written.append(item.id)
            except EdgefleetError as exc:
                if exc.code in TRANSIENT_CODES:
                    raise  # not this item's fault: the whole frame waits and comes again
                refused.append(_refusal(item.id, exc, f"body.items[{i}]"))
        results = await self._store.write_many(writes) if writes else []
        for item_id, result in zip(written, results, strict=True):
            if isinstance(result, EdgefleetError):
                refused.append(_refusal(item_id, result, None))
        if refused:
            log.warning("node %s: %d of %d statuses refused, first: %s", session.node,
                        len(refused), len(items), refused[0].message)
        return refused

    async def _checked_status(self, node: str, ref: wire.ObjectRef,
                              status: dict[str, Any]) -> UpdateStatus:
        """The status write ``node`` asks for, once it may make it: the kind is one
        nodes write, the object exists and is the node's, and the status is valid."""
        owner = STATUS_OWNERS.get(ref.kind)
        if owner is None:
            raise Forbidden(f"nodes may not write the status of {ref.kind} objects",
                            field="ref.kind")
        info = REGISTRY.by_kind(ref.kind)
        try:
            obj = await self._store.get(info.kind, ref.namespace, ref.name)
        except NotFound:
            raise NotFound(f"{ref.key} does not exist", field="ref") from None
        if not owner(node, obj):
            raise Forbidden(f"node {node} may not write the status of {ref.key}",
                            field="ref")
        return UpdateStatus(info.kind, ref.namespace, ref.name, validate_status(info, status))


def _items_in(env: Envelope) -> int:
    """How many messages a frame stands for (a ``statuses`` frame: its items)."""
    if env.op is Op.STATUSES and isinstance(env.body, dict):
        items = env.body.get("items")
        if isinstance(items, list) and items:
            return len(items)
    return 1


def _refusal(item_id: str, exc: EdgefleetError, where: str | None) -> wire.RefusedItem:
    field = exc.field if where is None or exc.field is None else f"{where}.{exc.field}"
    return wire.RefusedItem(id=item_id, code=exc.code, reason=exc.reason,
                            message=exc.message, field=field or where)


__all__ = ["CLOSE_REPLACED", "CLOSE_REVOKED", "CLOSE_UNKNOWN_NODE", "FrameDecodeError", "Hub",
           "HubConfig"]
