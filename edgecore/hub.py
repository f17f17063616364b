"""The edge end of the link.

Connects to ``wss://cloud:10000`` with the node's certificate, and on every
connection:

* reports what its cache holds (``sync``) — the cloud answers with exactly the
  difference;
* applies each ``upsert``/``delete`` durably in the meta cache and only then acks it
  (a version older than the one held is acked but not applied);
* drains the outbox upstream in order, removing each entry when the cloud acks it,
  resending everything unacked after the ack timeout;
* sends a heartbeat with the node's status every ``heartbeatSeconds``, and a websocket
  ping as often: a link whose pong is 3 heartbeats late (at most 20 s) is given up and
  reconnected, so a half-open connection does not hold the edge (:func:`keepalive`);
* renews the node certificate over the link at 70-90 % of its lifetime;
* carries out ``publish`` requests of the router (:attr:`HubClient.on_publish`) in the
  background and answers each with ``ack`` (and the result) or ``error``.

Reconnects use exponential backoff with jitter, capped (30 s by default).  A node whose
certificate the cloud revoked, or that has expired (allowing for the tolerated clock
skew), says so once and then retries at the cap only: the
certificate is re-read on every attempt, so ``edgecore join`` with a new token brings
the running edgecore back without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidMessage, InvalidURI

from certs.clock import ClockSkewError, check_clock_skew
from certs.tls import client_context
from edgecore.certstate import (
    CertState,
    NodeCertExpired,
    check_expiry,
    install_certificate,
    load_state,
    rejoin_command,
)
from edgecore.config import EdgeConfig, EdgePaths
from edgecore.meta import MetaCache
from edgecore.nodeinfo import node_status
from edgecore.outbox import Outbox, OutboxEntry
from protocol import envelope as wire
from protocol.backoff import reconnect_delay
from protocol.envelope import Envelope, Op
from protocol.errors import (
    TRANSIENT_CODES,
    EdgefleetError,
    FrameDecodeError,
    TooLarge,
    Unavailable,
)

log = logging.getLogger(__name__)

CLOSE_REPLACED = 4000
CLOSE_REVOKED = 4001
CLOSE_UNKNOWN_NODE = 4003


STATUSES_FRAME_BYTES = 65_536
"""A ``statuses`` frame is at most this long (or ``link.maxFrameBytes``, if smaller).  A
cloud whose frame limit is smaller still answers 413 naming the frame, and the edge
halves this bound, down to ``_MIN_STATUSES_FRAME_BYTES``, and sends the statuses again."""
_MIN_STATUSES_FRAME_BYTES = 1024
_BATCHES_REMEMBERED = 1024
"""``statuses`` frames whose ack is awaited, at most (older ones are resent anyway)."""


def now_ms() -> int:
    return int(time.time() * 1000)


KEEPALIVE_CAP = 20.0


def keepalive(heartbeat: float) -> tuple[float, float]:
    """(ping interval, pong timeout) of the link: a ping every heartbeat, and the link
    given up when its pong is 3 heartbeats late (each at most 20 s).  Our heartbeats only
    go up, and a half-open connection (no FIN, no RST: a NAT or firewall that forgot it)
    swallows them without an error, so without this the edge would sit on a dead link
    for as long as TCP takes to give up while the cloud already counts it gone."""
    return min(heartbeat, KEEPALIVE_CAP), min(3 * heartbeat, KEEPALIVE_CAP)


class HubClient:
    def __init__(self, cfg: EdgeConfig, paths: EdgePaths, cache: MetaCache, outbox: Outbox,
                 *, rand: Callable[[], float] = random.random) -> None:
        self.cfg = cfg
        self.paths = paths
        self.cache = cache
        self.outbox = outbox
        self._rand = rand
        self.connected = asyncio.Event()
        self.synced = asyncio.Event()
        self._outbox_wake = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._csr: tuple[str, bytes] | None = None  # (envelope id, key PEM) awaiting a cert
        self.renewals = 0
        # Called after every completed resync (the twin re-queues all device statuses).
        self.on_synced: list[Callable[[], None]] = []
        # Carries out a routed message from the cloud; returns the ack's body.
        self.on_publish: Callable[[wire.PublishBody], Awaitable[dict[str, Any] | None]] | None = (
            None)
        self._deliveries: set[asyncio.Task[None]] = set()
        # ``statuses`` frames sent and not yet answered: frame id -> the entries it holds.
        self._batches: dict[str, tuple[str, ...]] = {}
        # Longest ``statuses`` frame to send; halved when the cloud finds one too large.
        self._statuses_frame_bytes = min(cfg.link.maxFrameBytes, STATUSES_FRAME_BYTES)
        # The cloud refused our certificate as revoked (until a session syncs again).
        self.revoked = False
        # Our certificate has expired (until a session syncs again, after a re-join).
        self.cert_expired = False
        self._tolerance = timedelta(seconds=cfg.clockSkewSeconds)

    # ---- public -------------------------------------------------------------------------

    def notify_outbox(self) -> None:
        """Something was put in the outbox: drain it now if connected."""
        self._outbox_wake.set()

    async def run(self) -> None:
        attempt = 0
        last_error = ""
        while True:
            try:
                ctx = self._tls()
                ping_interval, ping_timeout = keepalive(self.cfg.link.heartbeatSeconds)
                async with connect(
                    self.cfg.hub, ssl=ctx, max_size=self.cfg.link.maxFrameBytes * 4,
                    compression=None, ping_interval=ping_interval, ping_timeout=ping_timeout,
                    open_timeout=10, close_timeout=5,
                ) as ws:
                    last_error = ""
                    await self._session(ws)
            except asyncio.CancelledError:
                raise
            except NodeCertExpired as exc:
                self._on_expired(str(exc))
                last_error = "expired"
            except ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code == CLOSE_REVOKED:
                    self._on_revoked()
                    last_error = "revoked"
                else:
                    last_error = self._describe_close(exc)
                    log.warning("link to %s closed: %s", self.cfg.hub, last_error)
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError, ssl.SSLError,
                    EdgefleetError) as exc:
                message = self._describe_failure(exc)
                if isinstance(exc, InvalidMessage) and self._past_not_after():
                    # The cloud hung up before any HTTP answer, which is how a refused
                    # client certificate looks from here (the server sends no alert),
                    # and notAfter has passed: expired by the cloud's clock, which decides.
                    self._on_expired(self._expired_message())
                    message = "expired"
                elif message != last_error:
                    log.warning("cannot reach the cloud at %s: %s (retrying with backoff)",
                                self.cfg.hub, message)
                last_error = message
            finally:
                if self.synced.is_set():
                    attempt = 0  # a session that got as far as a resync was healthy
                self._ws = None
                self.connected.clear()
                self.synced.clear()
            # Revoked or expired: nothing changes until someone re-joins the node, so
            # wait the longest (the cap), not the shortest.
            delay = reconnect_delay(32 if self.revoked or self.cert_expired else attempt,
                                    self._rand(),
                                    base=self.cfg.link.reconnectBaseSeconds,
                                    cap=self.cfg.link.reconnectCapSeconds)
            attempt += 1
            await asyncio.sleep(delay)

    # ---- connection ---------------------------------------------------------------------

    def _tls(self) -> ssl.SSLContext:
        """A context with the current certificate (re-read every time: a re-join while we
        run replaces it); NodeCertExpired instead of a connection that must fail."""
        state = load_state(self.paths.pki)
        check_expiry(state, datetime.now(UTC), self._tolerance, self._rejoin())
        pki = self.paths.pki
        return client_context(self.paths.ca, pki / state.cert, pki / state.key)

    def _rejoin(self) -> str:
        return rejoin_command(self.cfg.server, self.cfg.nodeName, self.paths.root)

    def _past_not_after(self) -> bool:
        return load_state(self.paths.pki).not_after <= datetime.now(UTC)

    def _expired_message(self) -> str:
        state = load_state(self.paths.pki)
        return str(NodeCertExpired(state.not_after, datetime.now(UTC), self._rejoin()))

    def _on_expired(self, message: str) -> None:
        """Said once, at ERROR, without a traceback; then retried at the cap only, so a
        re-join brings the link back without a restart.  The cache keeps serving."""
        if self.cert_expired:
            log.debug("the node certificate is still expired; waiting for a re-join")
            return
        self.cert_expired = True
        log.error("%s (retrying every %g s or so meanwhile)", message,
                  self.cfg.link.reconnectCapSeconds)

    def _on_revoked(self) -> None:
        if self.revoked:
            log.debug("the cloud still refuses the revoked node certificate")
            return
        self.revoked = True
        log.error(
            "node certificate revoked by the cloud; re-join with a new token: edgecore join "
            "--server %s --token <new token from efctl token create> --node-name %s "
            "--data-dir %s (retrying every %g s or so meanwhile)",
            self.cfg.server, self.cfg.nodeName, self.paths.root,
            self.cfg.link.reconnectCapSeconds,
        )

    def _describe_close(self, exc: ConnectionClosed) -> str:
        rcvd = exc.rcvd
        if rcvd is not None and rcvd.code == CLOSE_UNKNOWN_NODE:
            return f"the cloud refused this node: {rcvd.reason}"
        if rcvd is not None and rcvd.code == CLOSE_REPLACED:
            return "another edgecore connected with this node's identity"
        return str(exc)

    def _describe_failure(self, exc: BaseException) -> str:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return f"the cloud's certificate did not verify against our CA: {exc.verify_message}"
        return f"{type(exc).__name__}: {exc}"

    async def _session(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._batches.clear()  # the drain sends everything unacked again
        self.connected.set()
        log.info("connected to %s as node %s", self.cfg.hub, self.cfg.nodeName)
        holdings = self.cache.holdings()
        await self._send(wire.make(Op.SYNC, ts=now_ms(), body={"holdings": holdings}))
        tasks = [
            asyncio.create_task(self._heartbeats(ws), name="edge-heartbeat"),
            asyncio.create_task(self._drain_outbox(), name="edge-outbox"),
            asyncio.create_task(self._renewal(), name="edge-cert-renewal"),
        ]
        try:
            async for frame in ws:
                await self._on_frame(frame)
        finally:
            for task in [*tasks, *self._deliveries]:
                task.cancel()
            # gather, not suppress(CancelledError): if *we* are being cancelled while
            # waiting here, that cancellation must propagate, or SIGTERM is lost.
            await asyncio.gather(*tasks, *self._deliveries, return_exceptions=True)

    async def _send(self, env: Envelope) -> None:
        await self._send_text(wire.encode(env))

    async def _send_text(self, frame: str) -> None:
        if self._ws is None:
            raise ConnectionError("not connected")
        await self._ws.send(frame)

    # ---- downstream ---------------------------------------------------------------------

    async def _on_frame(self, frame: str | bytes) -> None:
        try:
            env = wire.decode(frame)
        except FrameDecodeError as exc:
            log.warning("malformed frame from the cloud ignored: %s", exc)
            return
        try:
            if env.op is Op.UPSERT:
                self._apply_upsert(env)
                await self._send(wire.make(Op.ACK, ts=now_ms(), parent_id=env.id))
            elif env.op is Op.DELETE:
                if env.ref is None:
                    raise FrameDecodeError("delete without ref", field="ref")
                evict = wire.decode_body(env, wire.DeleteBody).evict
                self.cache.delete(env.ref.kind, env.ref.namespace, env.ref.name, env.rv,
                                  evict=evict)
                await self._send(wire.make(Op.ACK, ts=now_ms(), parent_id=env.id))
            elif env.op is Op.SYNC_DONE:
                done = wire.decode_body(env, wire.SyncDoneBody)
                self.cache.prune_tombstones()
                log.info("resync with the cloud: %d upserts and %d deletes to apply",
                         done.upserts, done.deletes)
                self.synced.set()
                self.revoked = False
                self.cert_expired = False
                for hook in self.on_synced:
                    hook()
            elif env.op is Op.ACK:
                batch = self._batches.pop(env.parent_id or "", None)
                if batch is not None:
                    self._on_statuses_ack(env, batch)
                elif env.parent_id and self.outbox.remove(env.parent_id):
                    self._outbox_wake.set()
            elif env.op is Op.ERROR:
                self._on_error(env)
            elif env.op is Op.CERT:
                await self._on_cert(env)
            elif env.op is Op.PUBLISH:
                self._start_delivery(env)
            else:
                raise FrameDecodeError(f"unexpected operation {env.op.value!r} from the cloud",
                                       field="op")
        except EdgefleetError as exc:
            log.warning("refused %s from the cloud: %s", env.op.value, exc)
            await self._send_error(env, exc)

    async def _send_error(self, env: Envelope, exc: EdgefleetError) -> None:
        error = wire.ErrorBody(code=exc.code, reason=exc.reason, message=exc.message,
                               field=exc.field)
        await self._send(wire.make(Op.ERROR, ts=now_ms(), parent_id=env.id,
                                   body=error.model_dump(exclude_none=True)))

    def _start_delivery(self, env: Envelope) -> None:
        """A routed message may wait on a local service for many seconds; the link keeps
        reading meanwhile, so it runs as a task of its own."""
        body = wire.decode_body(env, wire.PublishBody)
        handler = self.on_publish
        if handler is None:
            raise Unavailable("this edgecore does not route messages")

        async def deliver() -> None:
            try:
                result = await handler(body)
            except EdgefleetError as exc:
                log.warning("routed message for rule %s not delivered: %s", body.rule, exc)
                await self._send_error(env, exc)
                return
            except Exception as exc:
                log.exception("routed message for rule %s failed", body.rule)
                await self._send_error(env, EdgefleetError(f"{type(exc).__name__}: {exc}"))
                return
            await self._send(wire.make(Op.ACK, ts=now_ms(), parent_id=env.id, body=result))

        task = asyncio.create_task(deliver(), name=f"route-{body.rule}")
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    def _apply_upsert(self, env: Envelope) -> None:
        obj = env.body
        if env.ref is None or not isinstance(obj, dict):
            raise FrameDecodeError("upsert needs ref and an object body", field="body")
        meta = obj.get("metadata") or {}
        if (obj.get("kind"), meta.get("namespace"), meta.get("name")) != (
            env.ref.kind, env.ref.namespace, env.ref.name
        ) or str(meta.get("resourceVersion")) != env.resource_version:
            raise FrameDecodeError("upsert body does not match its ref", field="body")
        self.cache.upsert(obj)

    def _on_error(self, env: Envelope) -> None:
        try:
            body = wire.decode_body(env, wire.ErrorBody)
        except FrameDecodeError:
            log.warning("the cloud sent an unreadable error: %r", env.body)
            return
        batch = self._batches.pop(env.parent_id or "", None)
        if batch is not None and body.code == TooLarge.code \
                and self._statuses_frame_bytes > _MIN_STATUSES_FRAME_BYTES:
            # The cloud takes smaller frames than ours: send these again in smaller ones.
            self._statuses_frame_bytes = max(_MIN_STATUSES_FRAME_BYTES,
                                             self._statuses_frame_bytes // 2)
            log.warning("the cloud refused %d statuses as one frame (%s); sending statuses "
                        "in frames of at most %d bytes from now on", len(batch), body.message,
                        self._statuses_frame_bytes)
            return
        if env.parent_id and body.code in TRANSIENT_CODES:
            # Rate limited, or the cloud's store is full or unavailable: not a refusal
            # of the message itself, so the entry stays in the outbox and is resent later.
            # Being rate limited is routine under a burst: not worth a line each time.
            log.log(logging.DEBUG if body.code == 429 else logging.WARNING,
                    "the cloud could not take an upstream message yet (%s): %s",
                    body.reason, body.message)
            return
        entries = batch if batch is not None else (env.parent_id,) if env.parent_id else ()
        removed = sum(self.outbox.remove(entry) for entry in entries)
        if removed:
            log.error("the cloud refused %s (%s): %s",
                      "an upstream message" if batch is None else f"{removed} statuses",
                      body.reason, body.message)
            self._outbox_wake.set()
        else:
            log.warning("error from the cloud: %s: %s", body.reason, body.message)

    def _on_statuses_ack(self, env: Envelope, batch: tuple[str, ...]) -> None:
        """The cloud wrote a ``statuses`` frame: its entries leave the outbox, and those
        it refused (gone, not ours, invalid: resending cannot help) are logged.  One
        refused only for now (a transient code) stays, to be sent again."""
        try:
            refused = wire.decode_body(env, wire.StatusesAckBody).refused
        except FrameDecodeError as exc:
            refused = []
            log.warning("the cloud acked %d statuses with an unreadable body: %s",
                        len(batch), exc)
        kept = {item.id for item in refused if item.code in TRANSIENT_CODES}
        for item in refused:
            if item.id not in kept:
                log.error("the cloud refused an upstream message (%s): %s", item.reason,
                          item.message)
        if sum(self.outbox.remove(entry) for entry in batch if entry not in kept):
            self._outbox_wake.set()

    # ---- upstream -----------------------------------------------------------------------

    async def _heartbeats(self, ws: ClientConnection) -> None:
        local_ip = ws.local_address[0] if ws.local_address else None
        while True:
            status = node_status(self.paths.root, local_ip)
            await self._send(wire.make(
                Op.HEARTBEAT, ts=now_ms(),
                body={"status": status.model_dump(exclude_none=True)},
            ))
            await asyncio.sleep(self.cfg.link.heartbeatSeconds)

    async def _drain_outbox(self) -> None:
        """Send outbox entries in order, at most ``outboxWindow`` unacked at a time.
        After an ack timeout everything still in the outbox is sent again (status
        writes are idempotent, so a duplicate is harmless, a loss is not)."""
        timeout = self.cfg.link.ackTimeoutSeconds
        window = self.cfg.link.outboxWindow
        loop = asyncio.get_running_loop()
        last_seq = 0
        oldest_unacked: float | None = None
        prev_inflight = 0
        while True:
            self._outbox_wake.clear()
            if oldest_unacked is not None and loop.time() - oldest_unacked >= timeout:
                last_seq, oldest_unacked = 0, None  # resend from the start
            inflight = self.outbox.count_upto(last_seq)
            if inflight < prev_inflight:  # acks arrived: progress, restart the ack timer
                oldest_unacked = loop.time() if inflight else None
            entries = self.outbox.peek(last_seq, window - inflight) if inflight < window else []
            for frame, last in self._frames(entries):
                await self._send_text(frame)
                last_seq = last
                if oldest_unacked is None:
                    oldest_unacked = loop.time()
            prev_inflight = self.outbox.count_upto(last_seq)
            if prev_inflight == 0:
                oldest_unacked = None
            wait = None if oldest_unacked is None else max(
                0.05, oldest_unacked + timeout - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox_wake.wait(), wait)

    def _frames(self, entries: Sequence[OutboxEntry]) -> Iterator[tuple[str, int]]:
        """The frames that carry ``entries``, in order, each with the sequence number of
        its last entry.  Consecutive statuses go up together in ``statuses`` frames (one
        frame, one ack and one cloud transaction for all of them: per status, that was
        most of the cost of an upload); anything else goes alone."""
        run: list[OutboxEntry] = []
        for entry in entries:
            batchable = entry.op is Op.STATUS and entry.ref is not None \
                and isinstance(entry.body, dict) and "status" in entry.body
            if batchable and len(run) < wire.MAX_STATUS_BATCH:
                run.append(entry)
                continue
            yield from self._status_frames(run)
            run = []
            if batchable:
                run.append(entry)
            else:
                yield wire.encode(entry.envelope(now_ms())), entry.seq
        yield from self._status_frames(run)

    def _status_frames(self, run: list[OutboxEntry]) -> Iterator[tuple[str, int]]:
        if len(run) == 1:
            yield wire.encode(run[0].envelope(now_ms())), run[0].seq
        if len(run) <= 1:
            return
        frame_id = wire.new_id()
        frame = wire.encode_statuses(frame_id, now_ms(), [
            (entry.envelope_id, entry.ref, entry.body["status"])
            for entry in run if entry.ref is not None])
        if len(frame.encode()) > self._statuses_frame_bytes:
            half = len(run) // 2  # too big for one frame (large statuses): split it
            yield from self._status_frames(run[:half])
            yield from self._status_frames(run[half:])
            return
        if len(self._batches) >= _BATCHES_REMEMBERED:
            del self._batches[next(iter(self._batches))]
        self._batches[frame_id] = tuple(entry.envelope_id for entry in run)
        yield frame, run[-1].seq

    # ---- certificate renewal -------------------------------------------------------------

    async def _renewal(self) -> None:
        state = load_state(self.paths.pki)
        delay = (state.renew_at - datetime.now(UTC)).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)
        from certs.csr import new_node_key_and_csr  # loaded only when renewing

        key_pem, csr_pem = await asyncio.to_thread(new_node_key_and_csr, self.cfg.nodeName)
        env = wire.make(Op.CSR, ts=now_ms(), body={"csr": csr_pem.decode()})
        self._csr = (env.id, key_pem)
        log.info("renewing the node certificate (valid until %s)", state.notAfter)
        await self._send(env)

    async def _on_cert(self, env: Envelope) -> None:
        if self._csr is None or env.parent_id != self._csr[0]:
            raise FrameDecodeError("certificate without a pending request", field="parent_id")
        body = wire.decode_body(env, wire.CertBody)
        from certs.csr import cert_validity

        cert_pem = body.certificate.encode()
        not_before, not_after = cert_validity(cert_pem)
        try:
            check_clock_skew(datetime.now(UTC), datetime.fromtimestamp(env.ts / 1000, UTC),
                             self._tolerance)
        except ClockSkewError as exc:
            # Installed all the same: refusing it would only let the old one expire.
            log.error("renewal: %s", exc)
        state: CertState = install_certificate(self.paths.pki, cert_pem, self._csr[1],
                                               not_before, not_after,
                                               tolerance=self._tolerance)
        self._csr = None
        self.renewals += 1
        log.info("installed a renewed node certificate valid until %s (next renewal %s); "
                 "reconnecting with it", state.notAfter, state.renewAt)
        if self._ws is not None:
            await self._ws.close(1000, "certificate renewed")

    # ---- used by components that report upstream --------------------------------------

    def send_message(self, body: dict[str, Any]) -> None:
        """Queue an MQTT message for the cloud's router (durable; in order)."""
        self.outbox.put(Op.MESSAGE, None, body)
        self.notify_outbox()

    def report_status(self, ref: wire.ObjectRef, status: dict[str, Any]) -> None:
        """Queue the latest status of an object for the cloud (coalesced per object)."""
        self.report_statuses([(ref, status)])

    def report_statuses(self, statuses: Sequence[tuple[wire.ObjectRef, dict[str, Any]]]) -> None:
        """Queue the latest statuses of several objects in one outbox transaction (all
        or none: :class:`~protocol.errors.StoreFull` queues nothing)."""
        self.outbox.put_many([(Op.STATUS, ref, {"status": status}, f"status/{ref.key}")
                              for ref, status in statuses])
        self.notify_outbox()
