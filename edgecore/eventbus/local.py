"""edgecore's EventBus when the broker is embedded: in process, no MQTT client.

Before, edgecore talked to its own embedded broker as a paho client over loopback TCP:
every device request was encoded by the broker, sent, decoded by paho in its thread,
handed to the loop, and every reply went the same way back (QoS 1, with PUBACKs).  A
twin update cost about 5 ms of CPU, most of it there (docs/benchmarks.md, "Twin
pipeline").  :class:`LocalBus` attaches to the broker instead
(:meth:`~edgecore.eventbus.broker.EmbeddedBroker.attach_local`): the broker offers it
each message it broadcasts, and its publishes enter the broker's broadcast directly.

It keeps :class:`~edgecore.eventbus.client.BusClient`'s contract, so edgecore code runs
unchanged on either: handlers run one at a time on the loop, in arrival order; one
that raises is logged and counted; a second subscription to the same filter replaces
the handler; a new subscription receives the matching retained messages.  Differences,
all because edgecore *is* the broker here: the ACLs do not apply to it, it is
``connected`` from ``start`` to ``stop``, and nothing is ever dropped while waiting for
a connection.

Flow control: received messages wait in an inbox of at most ``max_inbox``.  When it is
full the broker's delivery waits for room, which backs the sending connection up until
the broker sheds or holds back its publishes (see ``broker.py``).  Messages edgecore
publishes to its own subscriptions never wait (a handler would otherwise wait on
itself); they are bounded by what the handlers publish.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from edgecore.eventbus.bus import Handler, check_qos, check_topic_name
from protocol.topics import filter_matches

if TYPE_CHECKING:
    from edgecore.eventbus.broker import EmbeddedBroker

logger = logging.getLogger(__name__)

_ROUTE_CACHE_LIMIT = 4096  # topics whose matching handlers are remembered


def _check_filter(topic_filter: str) -> None:
    levels = topic_filter.split("/")
    if not topic_filter or any(
            ("#" in level and (level != "#" or i != len(levels) - 1))
            or ("+" in level and level != "+") for i, level in enumerate(levels)):
        raise ValueError(f"{topic_filter!r} is not a valid MQTT topic filter")


class LocalBus:
    """edgecore's subscriptions and publishes on its embedded broker, in process."""

    def __init__(self, broker: EmbeddedBroker, client_id: str = "edgecore", *,
                 max_inbox: int = 16) -> None:
        if max_inbox < 1:
            raise ValueError("max_inbox must be at least 1")
        self._broker = broker
        self.client_id = client_id
        self._max_inbox = max_inbox
        self.connected = asyncio.Event()
        self.dropped_publishes = 0  # kept for BusClient parity: nothing is dropped here
        self.dropped_incoming = 0
        self.handler_errors = 0
        self._handlers: dict[str, Handler] = {}
        self._routes: dict[str, tuple[Handler, ...]] = {}
        self._inbox: deque[tuple[str, bytes]] = deque()
        self._ready = asyncio.Event()  # the inbox has messages
        self._room = asyncio.Event()  # the inbox has room (or the bus stopped)
        self._idle = asyncio.Event()  # the inbox is empty and no handler runs
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def pending(self) -> int:
        """Received messages not yet handed to the handlers."""
        return len(self._inbox)

    async def start(self) -> None:
        if self._stopped:
            raise RuntimeError("a stopped LocalBus cannot be started again")
        if self._task is not None:
            return
        self._broker.attach_local(self)
        self._task = asyncio.create_task(self._dispatch(), name=f"local-bus:{self.client_id}")
        for topic_filter in self._handlers:
            self._send_retained(topic_filter)
        self.connected.set()

    async def stop(self, drain: float = 2.0) -> None:
        """Detach from the broker; waits up to ``drain`` seconds for the handlers to take
        what is already in the inbox."""
        if self._stopped:
            return
        self._stopped = True
        self._broker.attach_local(None)
        self._room.set()
        if self._task is not None:
            deadline = time.monotonic() + drain
            while not self._idle.is_set() and time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(self._idle.wait(), deadline - time.monotonic())
                except TimeoutError:
                    break
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.connected.clear()
        if self._inbox:
            logger.warning("local bus %s stopped with %d messages unhandled", self.client_id,
                           len(self._inbox))
            self._inbox.clear()

    async def subscribe(self, topic_filter: str, handler: Handler) -> None:
        _check_filter(topic_filter)
        self._handlers[topic_filter] = handler
        self._routes.clear()
        if self._task is not None and not self._stopped:
            self._send_retained(topic_filter)

    async def unsubscribe(self, topic_filter: str) -> None:
        if self._handlers.pop(topic_filter, None) is not None:
            self._routes.clear()

    async def publish(self, topic: str, payload: bytes, qos: int = 1,
                      retain: bool = False) -> None:
        """To the local handlers and every subscribed client, each at the QoS it
        subscribed with; waits while the broker's broadcast queue is full."""
        if self._stopped:
            raise RuntimeError("LocalBus is stopped")
        check_topic_name(topic)
        check_qos(qos)
        await self._broker.publish_local(topic, bytes(payload), qos=qos, retain=retain)

    def has_subscribers(self, topic: str) -> bool:
        """Whether a local handler or any client subscribes to ``topic`` now."""
        return self.wants(topic) or self._broker.has_subscribers(topic)

    # ---- the broker's side (LocalSubscriber) ------------------------------------------

    def wants(self, topic: str) -> bool:
        return bool(self._route(topic))

    async def deliver(self, topic: str, payload: bytes, *, from_local: bool) -> None:
        if not from_local:
            while len(self._inbox) >= self._max_inbox and not self._stopped:
                self._room.clear()
                await self._room.wait()
        if self._stopped:
            self.dropped_incoming += 1
            return
        self._enqueue(topic, payload)

    # ---- dispatch ----------------------------------------------------------------------

    def _route(self, topic: str) -> tuple[Handler, ...]:
        handlers = self._routes.get(topic)
        if handlers is None:
            handlers = tuple(handler for topic_filter, handler in self._handlers.items()
                             if filter_matches(topic_filter, topic))
            if len(self._routes) >= _ROUTE_CACHE_LIMIT:
                self._routes.clear()
            self._routes[topic] = handlers
        return handlers

    def _send_retained(self, topic_filter: str) -> None:
        for topic, payload in self._broker.retained(topic_filter):
            self._enqueue(topic, payload)

    def _enqueue(self, topic: str, payload: bytes) -> None:
        self._inbox.append((topic, payload))
        self._idle.clear()
        self._ready.set()

    async def _dispatch(self) -> None:
        inbox = self._inbox
        while True:
            while inbox:
                topic, payload = inbox.popleft()
                if len(inbox) < self._max_inbox:
                    self._room.set()
                # Looked up now, not when queued: an unsubscribe in between is honoured.
                for handler in self._route(topic):
                    try:
                        await handler(topic, payload)
                    except Exception:
                        self.handler_errors += 1
                        logger.exception("MQTT handler %r failed on %s", handler, topic)
            self._idle.set()
            self._ready.clear()
            await self._ready.wait()
