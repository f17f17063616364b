"""LocalBus: edgecore on its embedded broker in process, and the broker's flood control.

Devices are real MQTT clients (paho, or a raw socket where the test needs bytes on the
wire in one piece); edgecore's side is the LocalBus, with no socket of its own."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable

import pytest

from edgecore.eventbus import start_eventbus, stop_eventbus
from edgecore.eventbus.broker import BrokerConfig, EmbeddedBroker
from edgecore.eventbus.local import LocalBus
from tests.integration.eventbus.peers import Inbox, PahoPeer, eventually

Peers = Callable[..., PahoPeer]

UPDATE = "$hw/events/device/default/thermo-1/twin/update"
RESULT = "$hw/events/device/default/thermo-1/twin/update/result"


async def _start(config: BrokerConfig | None = None,
                 max_inbox: int = 16) -> tuple[EmbeddedBroker, LocalBus]:
    broker = EmbeddedBroker(config or BrokerConfig(host="127.0.0.1", port=0))
    await broker.start()
    bus = LocalBus(broker, "edgecore-test", max_inbox=max_inbox)
    await bus.start()
    return broker, bus


@pytest.fixture
async def local() -> AsyncIterator[tuple[EmbeddedBroker, LocalBus]]:
    broker, bus = await _start()
    yield broker, bus
    await bus.stop()
    await broker.stop()


# ---- raw MQTT 3.1.1 bytes, for publishes that must arrive in one piece ------------------


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def _packet(first: int, body: bytes) -> bytes:
    length, encoded = len(body), bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            return bytes([first]) + bytes(encoded) + body


def _connect(client_id: str) -> bytes:
    return _packet(0x10, _string("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 30)
                   + _string(client_id))


def _publish_qos0(topic: str, payload: bytes) -> bytes:
    return _packet(0x30, _string(topic) + payload)


async def _raw_client(port: int, client_id: str) -> tuple[asyncio.StreamReader,
                                                           asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_connect(client_id))
    connack = await asyncio.wait_for(reader.readexactly(4), 10)
    assert connack == b"\x20\x02\x00\x00", connack
    return reader, writer


# ---- the in-process bus -----------------------------------------------------------------


async def test_devices_and_edgecore_talk_without_an_mqtt_client_for_edgecore(
        local: tuple[EmbeddedBroker, LocalBus], peers: Peers) -> None:
    broker, bus = local
    inbox = Inbox()
    await bus.subscribe("$hw/events/device/+/+/twin/+", inbox)
    assert bus.connected.is_set()
    device = peers(broker.bound_port, "thermo-1")
    await device.connect()
    await device.subscribe(RESULT)
    await device.publish(UPDATE, b'{"event_id":"1"}')
    assert await inbox.next() == (UPDATE, b'{"event_id":"1"}')
    await bus.publish(RESULT, b'{"event_id":"1"}')
    assert await device.next_message() == (RESULT, b'{"event_id":"1"}')
    # edgecore holds no connection of its own: the device is the broker's only client.
    assert broker.has_subscribers(RESULT) and not broker.has_subscribers(UPDATE)


async def test_a_local_publish_reaches_local_subscribers_as_over_mqtt(
        local: tuple[EmbeddedBroker, LocalBus]) -> None:
    _, bus = local
    inbox = Inbox()
    await bus.subscribe("$hw/events/upload/#", inbox)
    await bus.publish("$hw/events/upload/x", b"loop")
    assert await inbox.next() == ("$hw/events/upload/x", b"loop")


async def test_a_new_subscription_receives_retained_messages(
        local: tuple[EmbeddedBroker, LocalBus], peers: Peers) -> None:
    broker, bus = local
    device = peers(broker.bound_port, "cfg-writer")
    await device.connect()
    info = device.client.publish("config/room1", b"21", qos=1, retain=True)
    await asyncio.to_thread(info.wait_for_publish, 10)
    inbox = Inbox()
    await bus.subscribe("config/#", inbox)
    assert await inbox.next() == ("config/room1", b"21")


async def test_has_subscribers_follows_clients_and_local_handlers(
        local: tuple[EmbeddedBroker, LocalBus], peers: Peers) -> None:
    broker, bus = local
    doc = "$hw/events/device/default/thermo-1/twin/update/document"
    assert not bus.has_subscribers(doc)
    app = peers(broker.bound_port, "watcher")
    await app.connect()
    await app.subscribe("$hw/events/device/+/+/twin/update/document")
    assert bus.has_subscribers(doc)
    await app.close()
    await eventually(lambda: not bus.has_subscribers(doc), what="the subscription to go")
    await bus.subscribe("$hw/events/device/#", Inbox())
    assert bus.has_subscribers(doc)


async def test_handlers_are_replaced_removed_and_a_failing_one_is_counted(
        local: tuple[EmbeddedBroker, LocalBus]) -> None:
    _, bus = local
    first, second = Inbox(), Inbox()

    async def explodes(_topic: str, payload: bytes) -> None:
        if payload == b"bad":
            raise ValueError("handler bug")
        await second(_topic, payload)

    await bus.subscribe("a/#", first)
    await bus.subscribe("a/#", explodes)  # replaces `first`
    await bus.publish("a/1", b"bad")
    await bus.publish("a/1", b"good")
    assert await second.next() == ("a/1", b"good")
    assert bus.handler_errors == 1 and first.got.empty()
    await bus.unsubscribe("a/#")
    await bus.publish("a/1", b"nobody")
    await bus.subscribe("b", second)
    await bus.publish("b", b"later")
    assert await second.next() == ("b", b"later")  # "nobody" went nowhere


async def test_start_eventbus_embedded_is_in_process_by_default() -> None:
    bus, broker = await start_eventbus("embedded", ("127.0.0.1", 0))
    try:
        assert isinstance(bus, LocalBus) and broker is not None
    finally:
        await stop_eventbus(bus, broker)


# ---- flood control ----------------------------------------------------------------------


async def test_a_burst_on_an_idle_broker_is_taken_whole() -> None:
    # Shedding is by age, not by count: 300 publishes in one TCP segment all get in when
    # the broker drains them within max_queue_delay (generous here: CI machines are slow).
    broker, bus = await _start(BrokerConfig(host="127.0.0.1", port=0, max_queue_delay=5.0))
    inbox = Inbox()
    try:
        await bus.subscribe("burst/#", inbox)
        _, writer = await _raw_client(broker.bound_port, "burster")
        writer.write(b"".join(_publish_qos0("burst/x", str(i).encode()) for i in range(300)))
        got = [(await inbox.next())[1] for _ in range(300)]
        assert got == [str(i).encode() for i in range(300)]
        assert broker.shed_publishes == 0
        writer.close()
    finally:
        await bus.stop()
        await broker.stop()


async def test_a_qos0_flood_is_shed_at_the_door_and_the_backlog_stays_bounded() -> None:
    config = BrokerConfig(host="127.0.0.1", port=0, max_queue_delay=0.05,
                          max_client_waiting=200)
    broker, bus = await _start(config)
    release = asyncio.Event()
    seen: list[bytes] = []

    async def stuck(_topic: str, payload: bytes) -> None:
        seen.append(payload)
        await release.wait()

    try:
        await bus.subscribe("flood/#", stuck)
        _, writer = await _raw_client(broker.bound_port, "flooder")
        sent = 0
        for _ in range(40):  # 20,000 publishes while edgecore's handler is stuck
            writer.write(b"".join(_publish_qos0("flood/x", b"%d" % (sent + i))
                                  for i in range(500)))
            sent += 500
            await writer.drain()
            await asyncio.sleep(0.01)  # a flood over time, not one write
        await eventually(lambda: broker.shed_publishes >= sent - 400,
                         what="the flood to be shed")
        release.set()
        # What was let in is bounded by the door's queue, amqtt's share of it and the
        # bus inbox, not by the size of the flood.
        await eventually(lambda: len(seen) + broker.shed_publishes == sent,
                         what="every publish either delivered or shed")
        assert len(seen) <= config.max_client_waiting + config.max_client_backlog + 16 + 1
        assert seen == sorted(seen, key=int)  # in order, with gaps
        writer.write(_publish_qos0("flood/x", b"after"))
        await writer.drain()
        await eventually(lambda: seen[-1] == b"after", what="delivery after the flood")
        writer.close()
    finally:
        release.set()
        await bus.stop()
        await broker.stop()


async def test_qos1_publishes_are_held_back_not_shed(peers: Peers) -> None:
    broker, bus = await _start(BrokerConfig(host="127.0.0.1", port=0, max_queue_delay=0.01),
                               max_inbox=8)
    release = asyncio.Event()
    seen: list[bytes] = []

    async def stuck(_topic: str, payload: bytes) -> None:
        seen.append(payload)
        await release.wait()

    try:
        await bus.subscribe("reliable/#", stuck)
        device = peers(broker.bound_port, "careful")
        await device.connect()
        infos = [device.client.publish("reliable/x", str(i).encode(), qos=1)
                 for i in range(300)]
        # The handler is stuck: the bus inbox fills and the broker stops taking more.
        await eventually(lambda: bus.pending == 8, what="the bus to back up")
        release.set()
        await eventually(lambda: len(seen) == 300, what="all 300 QoS 1 publishes")
        assert seen == [str(i).encode() for i in range(300)]
        assert broker.shed_publishes == 0
        # Each PUBACK goes out once the bus has taken its publish: the last ones may
        # still be on their way when the handler has seen all 300.
        await eventually(lambda: all(info.is_published() for info in infos),
                         what="a PUBACK for every publish")
    finally:
        release.set()
        await bus.stop()
        await broker.stop()


def test_packet_framing_handles_partial_and_long_lengths() -> None:
    from edgecore.eventbus.broker import _packet_size

    small = _publish_qos0("a", b"x")
    big = _publish_qos0("t", b"y" * 20_000)  # a 3-byte remaining length
    stream = bytearray(small + big)
    assert _packet_size(stream, 0) == len(small)
    assert _packet_size(stream, len(small)) == len(big)
    for cut in range(1, len(big)):
        assert _packet_size(bytearray(big[:cut]), 0) is None
    with pytest.raises(ValueError):
        _packet_size(bytearray(b"\x30\xff\xff\xff\xff\x01"), 0)
