"""What edgecore code sees of the EventBus, whichever way it is connected.

Two implementations: :class:`~edgecore.eventbus.client.BusClient` (an MQTT client over
TCP: an external broker, e.g. mosquitto) and :class:`~edgecore.eventbus.local.LocalBus`
(inside the embedded broker's process: no socket, no thread, no second MQTT encoding).
Components (the twin manager, the router) take a :class:`Bus` and only call these
methods, so they run unchanged in either mode.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

Handler = Callable[[str, bytes], Awaitable[None]]
"""Called with (topic, payload) for each message matching a subscription."""


class Bus(Protocol):
    connected: asyncio.Event
    dropped_publishes: int
    dropped_incoming: int
    handler_errors: int

    async def start(self) -> None: ...

    async def stop(self, drain: float = 2.0) -> None: ...

    async def subscribe(self, topic_filter: str, handler: Handler) -> None:
        """Deliver messages matching ``topic_filter`` to ``handler``; a second call for
        the same filter replaces its handler.  Handlers run one at a time, in arrival
        order; one that raises is logged and counted in ``handler_errors``."""
        ...

    async def unsubscribe(self, topic_filter: str) -> None: ...

    async def publish(self, topic: str, payload: bytes, qos: int = 1,
                      retain: bool = False) -> None:
        """Hand ``payload`` to the broker for ``topic``; may wait while the bus is
        saturated (the broker sets the pace)."""
        ...

    def has_subscribers(self, topic: str) -> bool:
        """False only if a publish to ``topic`` would certainly reach nobody, so that the
        caller may skip building it (True whenever the bus cannot tell)."""
        ...


def check_topic_name(topic: str) -> None:
    if not topic or "+" in topic or "#" in topic:
        raise ValueError(f"cannot publish to {topic!r}: a topic name is non-empty and has "
                         "no wildcards")


def check_qos(qos: int) -> None:
    if qos not in (0, 1, 2):
        raise ValueError(f"qos must be 0, 1 or 2, not {qos}")
