"""start_eventbus: embedded and external modes; the RSS of an embedded EventBus."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edgecore.eventbus import start_eventbus, stop_eventbus
from edgecore.eventbus.broker import set_password
from tests.integration.eventbus.peers import PahoPeer
from tests.mosquitto import Mosquitto

Peers = Callable[..., PahoPeer]
ROOT = Path(__file__).resolve().parents[3]


async def test_embedded_mode_starts_broker_and_client(peers: Peers) -> None:
    client, broker = await start_eventbus("embedded", ("127.0.0.1", 0), client_id="edge-a")
    assert broker is not None
    try:
        got: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

        async def handler(topic: str, payload: bytes) -> None:
            got.put_nowait((topic, payload))

        await client.subscribe("$hw/events/node/+/membership/get", handler)
        await asyncio.wait_for(client.connected.wait(), 10)
        app = peers(broker.bound_port, "app")
        await app.connect()
        await app.publish("$hw/events/node/edge-a/membership/get", b'{"event_id":"e"}')
        assert await asyncio.wait_for(got.get(), 10) == (
            "$hw/events/node/edge-a/membership/get", b'{"event_id":"e"}')
    finally:
        await stop_eventbus(client, broker)
    assert not broker.running


async def test_embedded_mode_with_authentication(tmp_path: Path, peers: Peers) -> None:
    pw = tmp_path / "passwd"
    set_password(pw, "edgecore", "pw")
    set_password(pw, "app", "app-pw")
    kwargs = {"password_file": pw, "acl": {"edgecore": ["$hw/#"], "app": ["$hw/#"]},
              "publish_acl": {"edgecore": ["$hw/#"], "app": ["$hw/#"]}}
    # Over TCP edgecore is a client like any other and needs its entry in the file.
    with pytest.raises(ValueError, match="username"):
        await start_eventbus("embedded", ("127.0.0.1", 0), in_process=False,
                             **kwargs)  # type: ignore[arg-type]
    tcp, broker = await start_eventbus("embedded", ("127.0.0.1", 0), username="edgecore",
                                       password="pw", in_process=False,
                                       **kwargs)  # type: ignore[arg-type]
    try:
        assert broker is not None and broker.auth_required
        await asyncio.wait_for(tcp.connected.wait(), 10)
    finally:
        await stop_eventbus(tcp, broker)

    # In process edgecore is the broker: no credentials; clients still need theirs.
    bus, broker = await start_eventbus("embedded", ("127.0.0.1", 0),
                                       **kwargs)  # type: ignore[arg-type]
    try:
        assert broker is not None and broker.auth_required
        got: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

        async def handler(topic: str, payload: bytes) -> None:
            got.put_nowait((topic, payload))

        await bus.subscribe("$hw/events/node/+/membership/get", handler)
        anonymous = peers(broker.bound_port, "stranger")
        assert (await anonymous.connect()).is_failure
        app = peers(broker.bound_port, "app", username="app", password="app-pw")
        assert not (await app.connect()).is_failure
        await app.publish("$hw/events/node/edge-a/membership/get", b"{}")
        assert await asyncio.wait_for(got.get(), 10) == (
            "$hw/events/node/edge-a/membership/get", b"{}")
    finally:
        await stop_eventbus(bus, broker)


async def test_external_mode_is_a_client_only(mosquitto: Mosquitto) -> None:
    with pytest.raises(ValueError, match="url"):
        await start_eventbus("external")
    client, broker = await start_eventbus("external", url=mosquitto.url)
    try:
        assert broker is None
        await asyncio.wait_for(client.connected.wait(), 10)
    finally:
        await stop_eventbus(client, broker)


def test_external_mode_does_not_load_amqtt() -> None:
    code = ("import sys, edgecore.eventbus, edgecore.eventbus.client;"
            "print('amqtt' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    assert out == "False"


_RSS_SCRIPT = r"""
import asyncio, gc, json, sys, threading, time
import psutil

async def main(mode, url):
    proc = psutil.Process()
    if mode == "bare":
        gc.collect()
        return {"rss": proc.memory_info().rss, "threads": threading.active_count()}
    from edgecore.eventbus import start_eventbus, stop_eventbus
    if mode == "imported":
        gc.collect()
        return {"rss": proc.memory_info().rss, "threads": threading.active_count()}
    client, broker = await start_eventbus(mode, ("127.0.0.1", 0), url or None)
    done = asyncio.Event()
    count = 0
    async def handler(topic, payload):
        nonlocal count
        count += 1
        if count == N:
            done.set()
    await client.subscribe("$hw/events/upload/#", handler)
    await asyncio.wait_for(client.connected.wait(), 10)
    N = 1
    await client.publish("$hw/events/upload/x", b"1")
    await asyncio.wait_for(done.wait(), 10)
    gc.collect()
    idle = proc.memory_info().rss
    threads = threading.active_count()
    done.clear(); count = 0; N = 5000
    started = time.monotonic()
    for i in range(N):
        await client.publish("$hw/events/upload/x", b"x" * 200)
        if i % 500 == 0:
            await asyncio.sleep(0)
    await asyncio.wait_for(done.wait(), 120)
    rate = N / (time.monotonic() - started)
    gc.collect()
    after = proc.memory_info().rss
    await stop_eventbus(client, broker)
    return {"rss": idle, "rss_after_5000": after, "threads": threads, "rate": int(rate),
            "dropped": client.dropped_publishes + client.dropped_incoming}

print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))))
"""


def _measure(mode: str, url: str = "") -> dict[str, int]:
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, mode, url], cwd=ROOT,
                         check=True, capture_output=True, text=True, timeout=180).stdout
    result: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    return result


def test_report_eventbus_rss(mosquitto: Mosquitto,
                             record_property: Callable[[str, object], None]) -> None:
    """Measured, not asserted: RSS of one process running the EventBus."""
    bare = _measure("bare")
    imported = _measure("imported")
    embedded = _measure("embedded")
    external = _measure("external", mosquitto.url)
    mb = 1024 * 1024
    report = {
        "bare_asyncio_MB": round(bare["rss"] / mb, 1),
        "eventbus_imported_MB": round(imported["rss"] / mb, 1),
        "embedded_broker_plus_client_MB": round(embedded["rss"] / mb, 1),
        "embedded_after_5000_msgs_MB": round(embedded["rss_after_5000"] / mb, 1),
        "external_client_only_MB": round(external["rss"] / mb, 1),
        "external_after_5000_msgs_MB": round(external["rss_after_5000"] / mb, 1),
        "threads_embedded": embedded["threads"],
        "qos1_round_trips_per_s_embedded": embedded["rate"],
        "qos1_round_trips_per_s_mosquitto": external["rate"],
    }
    for key, value in report.items():
        record_property(key, value)
    print("\nEventBus RSS:", json.dumps(report))
    assert embedded["dropped"] == 0 and external["dropped"] == 0
