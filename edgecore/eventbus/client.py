"""edgecore's own MQTT client for the EventBus: one connection to the embedded or an
external broker that survives broker restarts.

Library choice: **paho-mqtt 2.x**, not amqtt's ``MQTTClient``.

* Memory: paho costs about +4 MB RSS; amqtt's client package about +7.7 MB.  In
  external mode (mosquitto) edgecore then never imports amqtt at all (see
  ``edgecore.eventbus.start_eventbus``); in embedded mode amqtt is loaded anyway and
  paho adds its 4 MB.
* Throughput: bare paho pushed 38,900 QoS0 / 17,400 QoS1 msg/s through mosquitto in
  libcheck.  With the asyncio hand-offs below this client measured about 5,000 QoS1
  msg/s each way through mosquitto (about 3,000 publish-and-receive-back round trips/s),
  above amqtt's own QoS1 rate (4,900 msg/s), so the client is not the bottleneck.
* Reconnects: paho's connection handling is the long-serving reference (KubeEdge's Go
  edgecore uses the Go paho).  amqtt's client reconnect has a fixed 2**n delay, gives up
  after ``reconnect_retries`` and queues received messages without a bound.
* The cost is a thread.  Each connection gets a *fresh* paho client whose network loop
  runs in paho's own thread (``loop_start``), never on the asyncio thread that may also
  host the embedded broker (libcheck gotcha 8).  paho's callbacks only hand events to
  the loop with ``call_soon_threadsafe``; everything else happens on the loop.  A fresh
  client per connection means no paho state (its own retry queue, its own reconnect
  timer) survives a disconnect: reconnect timing is ``protocol.backoff`` with jitter,
  and redelivery is ours.

Delivery and memory bounds:

* ``publish`` puts the message on a pending queue of at most ``max_pending`` messages
  and ``max_pending_bytes`` payload bytes (defaults 1,000 and 4 MiB).  While connected,
  a full queue makes ``publish`` wait for room, so the broker sets the pace and nothing
  is lost.  While disconnected, a full queue drops its *oldest* message and
  ``dropped_publishes`` counts it.  The queue drains into at most ``max_inflight``
  (default 32) unacknowledged messages.  Those still unacknowledged when the connection
  drops go back to the head of the queue and are sent again after the reconnect (QoS 1
  is at-least-once: duplicates are possible).  ``stop`` waits up to ``drain`` seconds
  for the queue to empty.
* Received messages wait for the handlers in an inbox of at most ``max_inbox`` messages.
  paho's network thread never blocks on it: a message arriving while the inbox is full
  is dropped and counted in ``dropped_incoming``, so keep-alives and acks keep flowing
  and neither this process nor the broker accumulates a backlog for a slow handler.
* Handlers run one at a time on the asyncio loop, in arrival order.  A handler that
  raises is logged and counted in ``handler_errors``; the client carries on.

Subscriptions are kept in a table and re-subscribed (QoS 1, as KubeEdge) after every
reconnect; ``connected`` is set only once they are acknowledged, and only then does the
pending queue start to flush, so edgecore sees replies to what it sends.  Sessions are
clean, as in KubeEdge: what the broker receives for us while we are away is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edgecore.eventbus.bus import Handler, check_qos, check_topic_name
from protocol.backoff import reconnect_delay
from protocol.errors import Forbidden, TooLarge

logger = logging.getLogger(__name__)

__all__ = ["BusClient", "Handler", "parse_broker_url"]

DEFAULT_PORT = 1883


def parse_broker_url(url: str) -> tuple[str, int]:
    """``tcp://host:port`` (KubeEdge's form; ``mqtt://`` also accepted) -> (host, port)."""
    parts = urlsplit(url)
    if parts.scheme not in ("tcp", "mqtt") or not parts.hostname:
        raise ValueError(f"broker URL {url!r} must look like tcp://HOST:PORT")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise ValueError(f"broker URL {url!r} has a bad port") from exc
    return parts.hostname, port


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@dataclass(slots=True)
class _Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(eq=False)
class _Link:
    """One connection: a paho client plus what is in flight on it."""

    paho: mqtt.Client
    connack: asyncio.Future[ReasonCode | None]
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    inflight: dict[int, _Outgoing] = field(default_factory=dict)
    # A SUBACK waiter gets None when the link drops first, so a CancelledError always
    # means that the waiting task itself was cancelled.
    subacks: dict[int, asyncio.Future[list[ReasonCode] | None]] = field(default_factory=dict)
    opened: bool = False  # set by the worker thread once the socket exists


class BusClient:
    """MQTT client for edgecore's EventBus (see the module docstring for the guarantees)."""

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        username: str | None = None,
        password: str | None = None,
        keepalive: int = 30,
        max_pending: int = 1000,
        max_pending_bytes: int = 4 * 1024 * 1024,
        max_inflight: int = 32,
        max_inbox: int = 1000,
        reconnect_base: float = 0.5,
        reconnect_cap: float = 5.0,
    ) -> None:
        self.host, self.port = parse_broker_url(url)
        self.url = url
        self.client_id = client_id
        self._username = username
        self._password = password
        self._keepalive = keepalive
        self._max_pending = max_pending
        self._max_pending_bytes = max_pending_bytes
        self._max_inflight = max_inflight
        self._reconnect_base = reconnect_base
        # KubeEdge retries its local broker every 5 s; the cap keeps us at least as eager.
        self._reconnect_cap = reconnect_cap

        self.connected = asyncio.Event()
        self.dropped_publishes = 0
        self.dropped_incoming = 0
        self.handler_errors = 0
        self.last_error: str | None = None

        self._handlers: dict[str, Handler] = {}
        self._pending: deque[_Outgoing] = deque()
        self._pending_bytes = 0
        self._inbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        # Counts free inbox places; paho's thread takes one without ever waiting.
        self._inbox_slots = threading.Semaphore(max_inbox)
        self._wake = asyncio.Event()  # the pump has work: a publish, an ack, a lost link
        self._room = asyncio.Event()  # the pump made room in _pending, or the link dropped
        self._acked = asyncio.Event()  # a publish was acknowledged, or the link dropped
        self._link: _Link | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False

    # ----------------------------------------------------------------- public API

    @property
    def pending(self) -> int:
        """Messages accepted by ``publish`` and not yet handed to the broker."""
        return len(self._pending)

    async def start(self) -> None:
        """Start connecting in the background; returns at once (the broker may be down).

        Wait on ``connected`` to know when the link and its subscriptions are up.
        """
        if self._stopped:
            raise RuntimeError("a stopped BusClient cannot be started again")
        if self._tasks:
            return
        self._loop = asyncio.get_running_loop()
        self._tasks = [
            asyncio.create_task(self._supervise(), name=f"mqtt-link:{self.client_id}"),
            asyncio.create_task(self._dispatch(), name=f"mqtt-dispatch:{self.client_id}"),
        ]

    async def stop(self, drain: float = 2.0) -> None:
        """Disconnect and stop.

        While connected, first waits up to ``drain`` seconds for queued and in-flight
        publishes to be acknowledged; whatever is still unsent then is discarded (logged).
        """
        if self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + drain
        while self.connected.is_set() and self._unacknowledged():
            self._acked.clear()
            try:
                await asyncio.wait_for(self._acked.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.connected.clear()
        if self._pending:
            logger.warning("MQTT client %s stopped with %d unsent messages",
                           self.client_id, len(self._pending))

    async def subscribe(self, topic_filter: str, handler: Handler) -> None:
        """Deliver messages matching ``topic_filter`` to ``handler`` (replacing any
        handler already registered for exactly this filter), now and after every reconnect.

        When connected, returns once the broker has acknowledged the subscription and
        raises :class:`Forbidden` if it refused it (e.g. an ACL); otherwise the filter is
        subscribed as soon as the link comes up.
        """
        link = self._link
        self._handlers[topic_filter] = handler
        if link is None or not self.connected.is_set():
            return
        codes = await self._subscribe_on(link, [topic_filter])
        if codes is not None and codes[0].is_failure:
            self._handlers.pop(topic_filter, None)
            raise Forbidden(f"the MQTT broker refused the subscription to {topic_filter!r} "
                            f"({codes[0]})")

    async def unsubscribe(self, topic_filter: str) -> None:
        """Stop delivering ``topic_filter``; unknown filters are ignored."""
        if self._handlers.pop(topic_filter, None) is None:
            return
        link = self._link
        if link is not None and self.connected.is_set():
            link.paho.unsubscribe(topic_filter)

    def has_subscribers(self, topic: str) -> bool:
        """Always True: a remote broker's subscriptions are not known here."""
        return True

    async def publish(self, topic: str, payload: bytes, qos: int = 1,
                      retain: bool = False) -> None:
        """Queue ``payload`` for ``topic``; it is sent as soon as the link is up.

        Returns once queued, not once acknowledged.  While connected, a full queue makes
        this wait for room (the broker sets the pace); while disconnected the oldest
        pending message is dropped instead (``dropped_publishes``).
        """
        if self._stopped:
            raise RuntimeError("BusClient is stopped")
        check_topic_name(topic)
        check_qos(qos)
        if len(payload) > self._max_pending_bytes:
            raise TooLarge(f"an MQTT payload of {len(payload)} bytes exceeds the queue bound "
                           f"of {self._max_pending_bytes} bytes")
        while self.connected.is_set() and not self._has_room(len(payload)):
            self._room.clear()
            await self._room.wait()
        self._pending.append(_Outgoing(topic, bytes(payload), qos, retain))
        self._pending_bytes += len(payload)
        self._trim_pending()
        self._wake.set()

    # --------------------------------------------------------------- connection

    async def _supervise(self) -> None:
        attempt = 0
        while True:
            link = self._new_link()
            try:
                if await self._run_link(link):
                    attempt = 0
            except Exception:
                # A bug here must not leave edgecore without its bus: log, reconnect.
                logger.exception("MQTT client %s: link failed", self.client_id)
            finally:
                await self._close_link(link)
            delay = reconnect_delay(attempt, random.random(),
                                    base=self._reconnect_base, cap=self._reconnect_cap)
            attempt += 1
            logger.debug("MQTT client %s reconnects to %s:%d in %.2fs",
                         self.client_id, self.host, self.port, delay)
            await asyncio.sleep(delay)

    def _new_link(self) -> _Link:
        assert self._loop is not None
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             clean_session=True, protocol=mqtt.MQTTv311,
                             reconnect_on_failure=False)
        if self._username is not None:
            client.username_pw_set(self._username, self._password)
        # Our own window keeps paho's queue this short; the rest waits in _pending.
        client.max_inflight_messages_set(self._max_inflight)
        client.max_queued_messages_set(self._max_inflight)
        link = _Link(paho=client, connack=self._loop.create_future())
        self._wire_callbacks(link)
        return link

    def _wire_callbacks(self, link: _Link) -> None:
        """paho calls these on its network thread: hand everything to the loop."""
        post = self._post

        def on_connect(_c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
            post(self._on_connack, link, reason)

        def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode,
                          _p: Any) -> None:
            post(self._on_closed, link, reason)

        def on_publish(_c: mqtt.Client, _u: Any, mid: int, _r: ReasonCode, _p: Any) -> None:
            post(self._on_puback, link, mid)

        def on_subscribe(_c: mqtt.Client, _u: Any, mid: int, codes: list[ReasonCode],
                         _p: Any) -> None:
            post(self._on_suback, link, mid, codes)

        def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
            try:
                topic = message.topic
            except UnicodeDecodeError:
                logger.warning("MQTT client %s dropped a message with a non-UTF-8 topic",
                               self.client_id)
                return
            if not self._inbox_slots.acquire(blocking=False):
                self.dropped_incoming += 1
                if _is_power_of_two(self.dropped_incoming):
                    logger.warning("MQTT client %s: handlers are behind, inbox full; "
                                   "%d received messages dropped so far",
                                   self.client_id, self.dropped_incoming)
                return
            if not post(self._inbox.put_nowait, (topic, bytes(message.payload))):
                self._inbox_slots.release()

        client = link.paho
        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        client.on_subscribe = on_subscribe
        client.on_message = on_message

    def _post(self, fn: Callable[..., Any], *args: Any) -> bool:
        loop = self._loop
        if loop is None:
            return False
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop has been closed: nobody is listening any more
            return False
        return True

    async def _run_link(self, link: _Link) -> bool:
        """Connect, restore subscriptions, pump publishes until the link drops.

        Returns whether the broker accepted the connection."""
        opening = asyncio.ensure_future(asyncio.to_thread(self._open, link))
        try:
            await asyncio.shield(opening)
        except asyncio.CancelledError:
            # Let the connect finish so that closing the link does not race with it.
            with contextlib.suppress(Exception):
                await opening
            raise
        except (OSError, ValueError) as exc:
            self._note_error(f"cannot reach MQTT broker {self.host}:{self.port}: {exc}")
            return False
        try:
            reason = await asyncio.wait_for(link.connack, timeout=max(self._keepalive, 5))
        except TimeoutError:
            self._note_error(f"MQTT broker {self.host}:{self.port} sent no CONNACK")
            return False
        if reason is None or reason.is_failure:
            self._note_error(f"MQTT broker {self.host}:{self.port} refused the connection: "
                             f"{reason if reason is not None else 'connection closed'}")
            return False

        # Filters added by subscribe() while we wait are picked up by the next round.
        restored: set[str] = set()
        while todo := [f for f in self._handlers if f not in restored]:
            codes = await self._subscribe_on(link, todo)
            if codes is None:  # the link dropped before the SUBACK
                return True
            for topic_filter, code in zip(todo, codes, strict=False):
                if code.is_failure:
                    logger.error("MQTT broker refused the subscription to %r (%s)",
                                 topic_filter, code)
            restored.update(todo)
        if self.last_error is not None:
            logger.info("MQTT client %s connected to %s:%d", self.client_id, self.host,
                        self.port)
        self.last_error = None
        self.connected.set()
        try:
            while not link.closed.is_set():
                self._wake.clear()
                self._pump(link)
                await self._wake.wait()
        finally:
            self.connected.clear()
            self._room.set()  # publishers waiting for room now queue (and drop) instead
        logger.warning("MQTT client %s lost its broker %s:%d", self.client_id, self.host,
                       self.port)
        return True

    def _open(self, link: _Link) -> None:
        """Blocking TCP connect + CONNECT, then paho's network thread (worker thread)."""
        link.paho.connect(self.host, self.port, keepalive=self._keepalive)
        link.opened = True
        sock = link.paho.socket()
        if isinstance(sock, socket.socket):
            # paho leaves Nagle on: a PUBACK and a PUBLISH going out together then wait
            # for the peer's delayed ACK (~40 ms), which capped round trips at
            # max_inflight / 40 ms (about 800 msg/s) in our measurements.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link.paho.loop_start()

    async def _close_link(self, link: _Link) -> None:
        self.connected.clear()
        self._link = None if self._link is link else self._link
        self._requeue(link)
        self._release_waiters(link)
        if not link.opened:
            return

        def shut() -> None:
            link.paho.disconnect()
            link.paho.loop_stop()

        closing = asyncio.ensure_future(asyncio.to_thread(shut))
        try:
            await asyncio.shield(closing)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await closing
            raise

    def _note_error(self, message: str) -> None:
        if message != self.last_error:
            logger.warning("%s (client %s; retrying)", message, self.client_id)
        self.last_error = message

    async def _subscribe_on(self, link: _Link,
                            filters: list[str]) -> list[ReasonCode] | None:
        """SUBSCRIBE at QoS 1 and wait for the SUBACK; None if the link went down."""
        assert self._loop is not None
        result, mid = link.paho.subscribe([(f, 1) for f in filters])
        if result != mqtt.MQTT_ERR_SUCCESS or mid is None:
            return None
        waiter: asyncio.Future[list[ReasonCode] | None] = self._loop.create_future()
        link.subacks[mid] = waiter
        try:
            return await waiter
        finally:
            link.subacks.pop(mid, None)

    # -------------------------------------------- paho events, run on the loop

    def _on_connack(self, link: _Link, reason: ReasonCode) -> None:
        if not link.connack.done():
            link.connack.set_result(reason)
        if not reason.is_failure:
            self._link = link

    def _on_closed(self, link: _Link, _reason: ReasonCode) -> None:
        if not link.connack.done():
            link.connack.set_result(None)
        self._release_waiters(link)
        link.closed.set()
        self._acked.set()
        self._wake.set()

    @staticmethod
    def _release_waiters(link: _Link) -> None:
        for waiter in link.subacks.values():
            if not waiter.done():
                waiter.set_result(None)

    def _on_puback(self, link: _Link, mid: int) -> None:
        if link.inflight.pop(mid, None) is not None:
            self._wake.set()
            self._acked.set()

    def _on_suback(self, link: _Link, mid: int, codes: list[ReasonCode]) -> None:
        waiter = link.subacks.get(mid)
        if waiter is not None and not waiter.done():
            waiter.set_result(list(codes))

    # --------------------------------------------------------------- queues

    def _pump(self, link: _Link) -> None:
        """Hand pending messages to paho while the in-flight window has room."""
        while self._pending and len(link.inflight) < self._max_inflight:
            message = self._pending[0]
            info = link.paho.publish(message.topic, message.payload, message.qos,
                                     message.retain)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return  # the link is going down; the message stays queued
            self._pending.popleft()
            self._pending_bytes -= len(message.payload)
            link.inflight[info.mid] = message
            self._room.set()

    def _requeue(self, link: _Link) -> None:
        """Unacknowledged messages of a dead link go back to the head of the queue."""
        if not link.inflight:
            return
        unacked = list(link.inflight.values())
        link.inflight.clear()
        self._pending.extendleft(reversed(unacked))
        self._pending_bytes += sum(len(m.payload) for m in unacked)
        self._trim_pending()
        logger.info("MQTT client %s will resend %d unacknowledged messages", self.client_id,
                    len(unacked))

    def _unacknowledged(self) -> int:
        link = self._link
        return len(self._pending) + (len(link.inflight) if link is not None else 0)

    def _has_room(self, size: int) -> bool:
        return (len(self._pending) < self._max_pending
                and self._pending_bytes + size <= self._max_pending_bytes)

    def _trim_pending(self) -> None:
        while self._pending and (len(self._pending) > self._max_pending
                                 or self._pending_bytes > self._max_pending_bytes):
            dropped = self._pending.popleft()
            self._pending_bytes -= len(dropped.payload)
            self.dropped_publishes += 1
            if _is_power_of_two(self.dropped_publishes):
                logger.warning("MQTT client %s: publish queue full (%d messages, %d bytes); "
                               "%d oldest messages dropped so far", self.client_id,
                               self._max_pending, self._max_pending_bytes,
                               self.dropped_publishes)

    async def _dispatch(self) -> None:
        while True:
            topic, payload = await self._inbox.get()
            try:
                for topic_filter, handler in list(self._handlers.items()):
                    if mqtt.topic_matches_sub(topic_filter, topic):
                        await self._call(handler, topic, payload)
            finally:
                self._inbox_slots.release()

    async def _call(self, handler: Handler, topic: str, payload: bytes) -> None:
        try:
            await handler(topic, payload)
        except Exception:
            self.handler_errors += 1
            logger.exception("MQTT handler %r failed on %s", handler, topic)
