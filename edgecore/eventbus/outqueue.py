"""How much the embedded broker keeps waiting for one client, and for all of them.

amqtt hands every message for every subscriber to a task of its own and keeps those
tasks in one broker-wide queue that it empties from the front only.  A subscriber that
stops reading (a hung device app, a paused process) blocks its tasks on the socket;
without a bound they pile up, each holding its message, and every finished task behind
them, for any client, stays in the queue too: the broker grows until it is killed.

Two bounds fix that without adding work per message (each message still goes out in
amqtt's own task, in order):

* :class:`CappedPublisher` stands in for a client's protocol handler and lets at most
  ``limit`` QoS 0 messages wait for that client; beyond, new ones are dropped and
  counted, as mosquitto drops them past ``max_queued_messages``.  QoS 1 and 2 are never
  dropped: the client's own acknowledgements pace them.
* :func:`prune_finished` takes the finished tasks out of amqtt's queue when it has grown,
  so the ones behind a stuck client's do not accumulate.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class Publisher(Protocol):
    """The part of amqtt's protocol handler this module uses."""

    async def mqtt_publish(self, topic: str, data: bytes | bytearray, qos: int | None,
                           retain: bool) -> Any: ...


class CappedPublisher:
    """A client's protocol handler as the broadcast sees it: at most ``limit`` QoS 0
    messages being sent to it at a time (the rest of amqtt only ever calls
    ``mqtt_publish`` on what it gets from ``_get_handler``)."""

    __slots__ = ("_on_drop", "handler", "limit", "waiting")

    def __init__(self, handler: Publisher, limit: int, on_drop: Callable[[int], None]) -> None:
        self.handler = handler
        self.limit = limit
        self._on_drop = on_drop
        self.waiting = 0  # QoS 0 messages handed over and not yet written to the socket

    async def mqtt_publish(self, topic: str, data: bytes | bytearray, qos: int | None,
                           retain: bool = False) -> Any:
        if qos:
            return await self.handler.mqtt_publish(topic, data, qos, retain=retain)
        if self.waiting >= self.limit:
            self._on_drop(1)
            return None
        self.waiting += 1
        try:
            return await self.handler.mqtt_publish(topic, data, qos, retain=retain)
        finally:
            self.waiting -= 1


def prune_finished(tasks: deque[asyncio.Task[Any]]) -> None:
    """Keep only the unfinished tasks of amqtt's broadcast queue, in order; a failure of a
    finished one is logged as amqtt would have (it is gone from the queue now)."""
    unfinished = [task for task in tasks if not task.done()]
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            logger.warning("MQTT delivery failed: %r", task.exception())
    tasks.clear()
    tasks.extend(unfinished)
