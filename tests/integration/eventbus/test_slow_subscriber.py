"""A client that stops reading costs the embedded broker a bounded amount of memory and
delays nobody else: what waits for it is capped (QoS 0 beyond the cap is dropped and
counted), and a healthy subscriber of the same topics gets every message, in order.

Broker internals are read (the per-client counts, amqtt's task queue) because they are
what "bounded" means here.  The stuck client is a raw TCP socket that sends CONNECT and
SUBSCRIBE and then never reads: a real client in the state a hung device app leaves it
in."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from edgecore.eventbus.broker import _PRUNE_AT, BrokerConfig, EmbeddedBroker
from tests.integration.eventbus.peers import PahoPeer

LIMIT = 50
CHUNK = 25
PAYLOAD = b"x" * 4096
MAX_MESSAGES = 20_000  # 80 MB: far more than loopback socket buffers take
AFTER_FULL = 2 * _PRUNE_AT + 200 - (2 * _PRUNE_AT + 200) % CHUNK  # enough to need pruning


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _remaining_length(len(body)) + body


def _text(value: str) -> bytes:
    raw = value.encode()
    return len(raw).to_bytes(2, "big") + raw


@pytest.fixture
def stuck_client() -> Iterator[Callable[[int], socket.socket]]:
    """Connects a client that subscribes to ``flood/#`` at QoS 0 and never reads again
    (a small receive buffer, so the kernel stops taking data for it soon)."""
    made: list[socket.socket] = []

    def connect(port: int) -> socket.socket:
        sock = socket.socket()
        made.append(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        connect_body = _text("MQTT") + bytes([4, 0x02]) + (600).to_bytes(2, "big") \
            + _text("stuck")
        sock.sendall(_packet(0x10, connect_body))
        assert sock.recv(4)[:1] == b"\x20", "no CONNACK"
        sock.sendall(_packet(0x82, (1).to_bytes(2, "big") + _text("flood/#") + b"\x00"))
        assert sock.recv(5)[:1] == b"\x90", "no SUBACK"
        return sock

    yield connect
    for sock in made:
        sock.close()


@pytest.fixture
async def broker() -> AsyncIterator[EmbeddedBroker]:
    made = EmbeddedBroker(BrokerConfig(port=0, max_subscriber_queue=LIMIT))
    await made.start()
    yield made
    await made.stop()


async def test_a_client_that_stops_reading_is_capped_and_delays_nobody(
        broker: EmbeddedBroker, stuck_client: Callable[[int], socket.socket],
        peers: Callable[..., PahoPeer]) -> None:
    # In a thread: the handshake blocks, and the broker answers on this event loop.
    await asyncio.to_thread(stuck_client, broker.bound_port)
    healthy = peers(broker.bound_port, "healthy")
    await healthy.connect()
    await healthy.subscribe("flood/#", qos=0)
    received: list[bytes] = []

    async def drain() -> int:
        while True:
            try:
                _, payload = await asyncio.wait_for(healthy.next_message(), 0.01)
            except TimeoutError:
                return len(received)
            received.append(payload)

    sent = 0

    async def publish_chunk() -> None:
        """CHUNK messages, then wait until the healthy subscriber has them all: it keeps
        up, so only the stuck client falls behind."""
        nonlocal sent
        for i in range(sent, sent + CHUNK):
            await broker.publish_local(f"flood/{i % 7}", b"%06d" % i + PAYLOAD, qos=0)
        sent += CHUNK

        async def caught_up() -> bool:
            return await drain() >= sent
        await until(caught_up)

    # Until the stuck client's socket and then its queue are full (the kernel takes a few
    # MB on loopback first): from then on the cap is what holds.
    while broker.dropped_for_slow_clients == 0:
        assert sent < MAX_MESSAGES, "the stuck client's queue never filled"
        await publish_chunk()
    dropped_before = broker.dropped_for_slow_clients
    for _ in range(AFTER_FULL // CHUNK):
        await publish_chunk()

    # Every further message for the stuck client was dropped, none queued.
    assert broker.dropped_for_slow_clients - dropped_before == AFTER_FULL
    amqtt = broker._broker
    assert sorted(out.waiting for out in amqtt._out.values()) == [0, LIMIT]
    # amqtt's broker-wide task queue did not keep a task per message behind the stuck
    # one: what is unfinished is the stuck client's capped few, the rest gets pruned.
    tasks = amqtt._tasks_queue
    assert sum(not task.done() for task in tasks) <= LIMIT
    assert len(tasks) <= 2 * _PRUNE_AT < sent
    # The healthy subscriber got every message, in order, all along.
    assert [int(p[:6]) for p in received] == list(range(sent))


async def until(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "the healthy subscriber fell behind"
