"""BusClient against the embedded amqtt broker and a real mosquitto: round trips,
broker restarts (re-subscribe + flush), bounded queues, failing handlers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from edgecore.eventbus.broker import BrokerConfig, EmbeddedBroker, set_password
from edgecore.eventbus.client import BusClient
from protocol.errors import Forbidden
from tests.integration.eventbus.peers import Inbox, PahoPeer, eventually
from tests.mosquitto import Mosquitto, free_port

Peers = Callable[..., PahoPeer]
Clients = Callable[..., BusClient]

TWIN_UPDATE = "$hw/events/device/default/thermo-1/twin/update"
TWIN_RESULT = "$hw/events/device/default/thermo-1/twin/update/result"


def _url(port: int) -> str:
    return f"tcp://127.0.0.1:{port}"


async def _round_trip(client: BusClient, port: int, peers: Peers) -> None:
    inbox = Inbox()
    await client.start()
    await client.subscribe("$hw/events/device/+/+/twin/update", inbox)
    await asyncio.wait_for(client.connected.wait(), 10)

    device = peers(port, "thermo-1")
    await device.connect()
    await device.subscribe(TWIN_RESULT)
    await device.publish(TWIN_UPDATE, b'{"event_id":"1"}')
    assert await inbox.next() == (TWIN_UPDATE, b'{"event_id":"1"}')

    await client.publish(TWIN_RESULT, b'{"event_id":"1","result":"ok"}')
    assert await device.next_message() == (TWIN_RESULT, b'{"event_id":"1","result":"ok"}')


async def test_round_trip_with_embedded_broker(embedded: EmbeddedBroker, peers: Peers,
                                               bus_clients: Clients) -> None:
    await _round_trip(bus_clients(_url(embedded.bound_port)), embedded.bound_port, peers)


async def test_round_trip_with_mosquitto(mosquitto: Mosquitto, peers: Peers,
                                         bus_clients: Clients) -> None:
    await _round_trip(bus_clients(mosquitto.url), mosquitto.port, peers)


async def _survives_restart(client: BusClient, port: int, peers: Peers,
                            take_down: Callable[[], object],
                            bring_up: Callable[[], object]) -> None:
    inbox = Inbox()
    await client.subscribe("$hw/events/upload/#", inbox)
    await client.start()
    await asyncio.wait_for(client.connected.wait(), 10)

    await take_down()  # type: ignore[misc]
    await eventually(lambda: not client.connected.is_set(), what="client to see the loss")
    await client.publish("$hw/events/upload/while-down", b"queued")
    assert client.pending == 1

    await bring_up()  # type: ignore[misc]
    await asyncio.wait_for(client.connected.wait(), 15)
    # The queued publish is flushed after the subscriptions are restored, so it comes
    # back to us through the broker.
    assert await inbox.next() == ("$hw/events/upload/while-down", b"queued")
    assert client.pending == 0

    app = peers(port, "app-after-restart")
    await app.connect()
    await app.publish("$hw/events/upload/after", b"fresh")
    assert await inbox.next() == ("$hw/events/upload/after", b"fresh")
    assert client.dropped_publishes == 0


async def test_survives_mosquitto_kill_and_restart(mosquitto: Mosquitto, peers: Peers,
                                                   bus_clients: Clients) -> None:
    async def down() -> None:
        mosquitto.kill()

    async def up() -> None:
        await asyncio.to_thread(mosquitto.start)

    port = mosquitto.port
    await _survives_restart(bus_clients(mosquitto.url), port, peers, down, up)
    assert mosquitto.port == port


async def test_survives_embedded_broker_restart(embedded: EmbeddedBroker, peers: Peers,
                                                bus_clients: Clients) -> None:
    await _survives_restart(bus_clients(_url(embedded.bound_port)), embedded.bound_port,
                            peers, embedded.stop, embedded.start)


async def test_a_failing_handler_does_not_stop_the_client(mosquitto: Mosquitto, peers: Peers,
                                                          bus_clients: Clients) -> None:
    inbox = Inbox()

    async def explodes(topic: str, payload: bytes) -> None:
        if payload == b"bad":
            raise ValueError("handler bug")
        await inbox(topic, payload)

    client = bus_clients(mosquitto.url)
    await client.subscribe("devices/#", explodes)
    await client.start()
    await asyncio.wait_for(client.connected.wait(), 10)
    device = peers(mosquitto.port, "dev")
    await device.connect()
    await device.publish("devices/a", b"bad")
    await device.publish("devices/a", b"good")
    assert await inbox.next() == ("devices/a", b"good")
    assert client.handler_errors == 1
    assert client.connected.is_set()


async def test_offline_publish_queue_drops_oldest(peers: Peers, bus_clients: Clients) -> None:
    port = free_port()  # nothing listens yet: the client starts offline
    client = bus_clients(_url(port), max_pending=5)
    inbox = Inbox()
    await client.subscribe("queue/#", inbox)
    await client.start()
    for i in range(8):
        await client.publish(f"queue/{i}", str(i).encode())
    assert client.pending == 5
    assert client.dropped_publishes == 3

    with Mosquitto(port=port):
        await asyncio.wait_for(client.connected.wait(), 15)
        got = [await inbox.next() for _ in range(5)]
        assert got == [(f"queue/{i}", str(i).encode()) for i in range(3, 8)]
        await client.stop()


async def test_byte_bound_and_oversized_payloads(bus_clients: Clients) -> None:
    client = bus_clients(_url(free_port()), max_pending=100, max_pending_bytes=1000)
    for _ in range(3):
        await client.publish("t", b"x" * 400)
    assert (client.pending, client.dropped_publishes) == (2, 1)
    with pytest.raises(Exception, match="exceeds the queue bound"):
        await client.publish("t", b"x" * 1001)
    for bad in ("", "a/+", "a/#"):
        with pytest.raises(ValueError):
            await client.publish(bad, b"")


async def test_a_flood_is_bounded_by_the_inbox(mosquitto: Mosquitto, peers: Peers,
                                               bus_clients: Clients) -> None:
    client = bus_clients(mosquitto.url, max_inbox=10)
    release = asyncio.Event()
    seen: list[bytes] = []

    async def slow(_topic: str, payload: bytes) -> None:
        seen.append(payload)
        await release.wait()

    await client.subscribe("flood/#", slow)
    await client.start()
    await asyncio.wait_for(client.connected.wait(), 10)
    device = peers(mosquitto.port, "flooder")
    await device.connect()
    for i in range(200):
        await device.publish("flood/x", str(i).encode(), qos=0)
    # One message is in the handler and nine wait: every other one is dropped at once
    # instead of piling up in memory.
    await eventually(lambda: client.dropped_incoming == 190, what="190 dropped messages")
    release.set()
    await eventually(lambda: len(seen) == 10, what="the 10 kept messages")
    assert seen == [str(i).encode() for i in range(10)]

    await device.publish("flood/x", b"after")
    await eventually(lambda: seen[-1] == b"after", what="delivery after the flood")


async def test_wrong_password_is_reported_and_retried(tmp_path: Path,
                                                      bus_clients: Clients) -> None:
    pw = tmp_path / "passwd"
    set_password(pw, "edgecore", "right")
    broker = EmbeddedBroker(BrokerConfig(port=0, password_file=pw,
                                         acl={"edgecore": ["$hw/#"]},
                                         publish_acl={"edgecore": ["$hw/#"]}))
    await broker.start()
    try:
        bad = bus_clients(_url(broker.bound_port), "bad", username="edgecore",
                          password="wrong")
        await bad.start()
        error = await eventually(lambda: bad.last_error, what="a connection error")
        assert error is not None and "not authorized" in error.lower()
        assert not bad.connected.is_set()

        good = bus_clients(_url(broker.bound_port), "good", username="edgecore",
                           password="right")
        await good.start()
        await asyncio.wait_for(good.connected.wait(), 10)
        with pytest.raises(Forbidden):
            await good.subscribe("devices/#", Inbox())
        await good.subscribe("$hw/events/upload/#", Inbox())
    finally:
        await broker.stop()


def test_missing_mosquitto_fails_with_a_pointer_to_ci() -> None:
    from tests.mosquitto import MosquittoMissing

    with pytest.raises(MosquittoMissing, match=r"\.ci/run installs it"):
        Mosquitto(binary="mosquitto-that-is-not-installed")


async def test_stop_waits_for_queued_publishes(mosquitto: Mosquitto, peers: Peers,
                                               bus_clients: Clients) -> None:
    app = peers(mosquitto.port, "app")
    await app.connect()
    await app.subscribe("drain/#")
    client = bus_clients(mosquitto.url)
    await client.start()
    await asyncio.wait_for(client.connected.wait(), 10)
    for i in range(300):
        await client.publish(f"drain/{i}", b"x")
    await client.stop()
    got = [(await app.next_message())[0] for _ in range(300)]
    assert got == [f"drain/{i}" for i in range(300)]


async def test_unacknowledged_publishes_are_resent_after_a_crash(
        mosquitto: Mosquitto, bus_clients: Clients) -> None:
    client = bus_clients(mosquitto.url)
    inbox = Inbox()
    await client.subscribe("inflight/#", inbox)
    await client.start()
    await asyncio.wait_for(client.connected.wait(), 10)

    mosquitto.pause()  # hung: our PUBLISHes are sent, no PUBACK comes back
    for i in range(5):
        await client.publish(f"inflight/{i}", b"x")
    await eventually(lambda: client.pending == 0, what="messages handed to the socket")
    mosquitto.kill()
    await eventually(lambda: not client.connected.is_set(), what="the loss")
    assert client.pending == 5  # back at the head of the queue

    await asyncio.to_thread(mosquitto.start)
    await asyncio.wait_for(client.connected.wait(), 15)
    got = [await inbox.next() for _ in range(5)]
    assert got == [(f"inflight/{i}", b"x") for i in range(5)]


async def test_a_slow_broker_slows_publishers_instead_of_dropping(
        mosquitto: Mosquitto, bus_clients: Clients) -> None:
    client = bus_clients(mosquitto.url, max_inflight=2, max_pending=3)
    inbox = Inbox()
    await client.subscribe("slow/#", inbox)
    await client.start()
    await asyncio.wait_for(client.connected.wait(), 10)

    mosquitto.pause()
    for i in range(5):  # 2 in flight + 3 queued
        await client.publish(f"slow/{i}", b"x")
    await eventually(lambda: client.pending == 3, what="a full queue")
    sixth = asyncio.create_task(client.publish("slow/5", b"x"))
    await asyncio.sleep(0.3)  # not synchronisation: proves the call stays blocked a while
    assert not sixth.done()
    mosquitto.resume()
    await asyncio.wait_for(sixth, 10)
    got = [await inbox.next() for _ in range(6)]
    assert got == [(f"slow/{i}", b"x") for i in range(6)]
    assert client.dropped_publishes == 0
