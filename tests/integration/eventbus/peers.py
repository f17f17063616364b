"""A device or app on the bus: a real paho client, driven from async tests.

paho's network loop runs in its own thread (``loop_start``); blocking calls go through
``asyncio.to_thread`` and paho's callbacks resolve futures on the test's loop, so the
loop — which may be hosting the embedded broker — is never blocked (libcheck gotcha 8).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

T = TypeVar("T")
TIMEOUT = 10.0


class PahoPeer:
    def __init__(self, port: int, client_id: str, *, username: str | None = None,
                 password: str | None = None, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port
        self.loop = asyncio.get_running_loop()
        # No automatic reconnect: a refused CONNECT stays refused (and close() is quick).
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311, reconnect_on_failure=False)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.messages: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._connack: asyncio.Future[ReasonCode] = self.loop.create_future()
        self._subacks: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self._pubacks: dict[int, asyncio.Future[None]] = {}
        self._acked: set[int] = set()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message

    # paho thread -> loop
    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self.loop.call_soon_threadsafe(_resolve, self._connack, reason)

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, codes: list[ReasonCode],
                      _p: Any) -> None:
        self.loop.call_soon_threadsafe(self._got_suback, mid, list(codes))

    def _on_publish(self, _c: Any, _u: Any, mid: int, _r: Any, _p: Any) -> None:
        self.loop.call_soon_threadsafe(self._got_puback, mid)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.loop.call_soon_threadsafe(self.messages.put_nowait, (msg.topic, bytes(msg.payload)))

    def _got_suback(self, mid: int, codes: list[ReasonCode]) -> None:
        self._future(self._subacks, mid)
        _resolve(self._subacks[mid], codes)

    def _got_puback(self, mid: int) -> None:
        self._future(self._pubacks, mid)
        _resolve(self._pubacks[mid], None)

    def _future(self, table: dict[int, asyncio.Future[Any]], mid: int) -> None:
        if mid not in table:
            table[mid] = self.loop.create_future()

    # test API
    async def connect(self) -> ReasonCode:
        """CONNECT and return the broker's answer (success or e.g. 'Not authorized')."""
        await asyncio.to_thread(self.client.connect, self.host, self.port, 30)
        self.client.loop_start()
        return await asyncio.wait_for(self._connack, TIMEOUT)

    async def subscribe(self, topic_filter: str, qos: int = 1) -> ReasonCode:
        _, mid = self.client.subscribe(topic_filter, qos)
        assert mid is not None
        self._future(self._subacks, mid)
        codes = await asyncio.wait_for(self._subacks[mid], TIMEOUT)
        return codes[0]

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish and wait until paho has sent it (QoS 0) or the broker acked it (QoS 1)."""
        info = self.client.publish(topic, payload, qos)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, info.rc
        self._future(self._pubacks, info.mid)
        await asyncio.wait_for(self._pubacks[info.mid], TIMEOUT)

    async def next_message(self) -> tuple[str, bytes]:
        return await asyncio.wait_for(self.messages.get(), TIMEOUT)

    async def close(self) -> None:
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)


class Inbox:
    """A handler that records what it gets."""

    def __init__(self) -> None:
        self.got: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    async def __call__(self, topic: str, payload: bytes) -> None:
        self.got.put_nowait((topic, payload))

    async def next(self) -> tuple[str, bytes]:
        return await asyncio.wait_for(self.got.get(), 10)


def _resolve(fut: asyncio.Future[T], value: T) -> None:
    if not fut.done():
        fut.set_result(value)


async def eventually(check: Callable[[], T], within: float = TIMEOUT,
                     what: str = "condition") -> T:
    """Poll ``check`` on the loop until it is truthy; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)
