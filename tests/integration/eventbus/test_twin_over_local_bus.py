"""The twin manager on the in-process bus: a real embedded broker, a paho device app,
sqlite files in tmp_path.  What a device app and the cloud depend on: every success is
on disk before it is answered, a store failure is never answered with success, and the
twin keeps up with the cache even after falling behind it."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edgecore.eventbus import Bus, start_eventbus, stop_eventbus
from edgecore.eventbus.broker import EmbeddedBroker
from edgecore.meta import MetaCache
from edgecore.twin.manager import DeviceTwins
from edgecore.twin.store import TwinStore
from protocol.envelope import ObjectRef
from tests.integration.eventbus.peers import PahoPeer, eventually

Peers = Callable[..., PahoPeer]
NODE = "edge-t"
BASE = "$hw/events/device/default/{name}"


def _model() -> dict[str, Any]:
    return {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
            "metadata": {"name": "sensor", "namespace": "default", "resourceVersion": "1"},
            "spec": {"protocol": "modbus", "properties": [
                {"name": "temperature", "type": "INT", "accessMode": "ReadWrite"}]}}


def _device(name: str, rv: int) -> dict[str, Any]:
    return {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
            "metadata": {"name": name, "namespace": "default", "resourceVersion": str(rv)},
            "spec": {"deviceModelRef": {"name": "sensor"}, "nodeName": NODE,
                     "properties": [{"name": "temperature", "reportCycle": 100,
                                     "reportToCloud": True}]}}


@dataclass
class Rig:
    cache: MetaCache
    twin_db: Path
    bus: Bus
    broker: EmbeddedBroker
    twins: DeviceTwins
    uploads: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # Each call to upstream: when (loop clock) and the (device name, status) it carried.
    calls: list[tuple[float, list[tuple[str, dict[str, Any]]]]] = field(default_factory=list)

    def known(self, name: str) -> bool:
        """Whether the twin has taken the Device in (its record is stored on arrival)."""
        with sqlite3.connect(self.twin_db) as db:
            return db.execute("SELECT 1 FROM devices WHERE key = ?",
                              (f"Device/default/{name}",)).fetchone() is not None

    def stored_value(self, name: str) -> str | None:
        with sqlite3.connect(self.twin_db) as db:
            row = db.execute("SELECT twin FROM devices WHERE key = ?",
                             (f"Device/default/{name}",)).fetchone()
        if row is None:
            return None
        actual = json.loads(row[0]).get("temperature", {}).get("actual")
        return None if actual is None else str(actual["value"])


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    cache = MetaCache.open(tmp_path / "cache.db")
    cache.upsert(_model())
    cache.upsert(_device("thermo-1", 2))
    store = TwinStore.open(tmp_path / "twin.db")
    bus, broker = await start_eventbus("embedded", ("127.0.0.1", 0))
    assert broker is not None
    uploads: list[tuple[str, dict[str, Any]]] = []
    calls: list[tuple[float, list[tuple[str, dict[str, Any]]]]] = []

    def upstream(statuses: list[tuple[ObjectRef, dict[str, Any]]]) -> None:
        batch = [(ref.name, status) for ref, status in statuses]
        calls.append((asyncio.get_running_loop().time(), batch))
        uploads.extend(batch)

    twins = DeviceTwins(NODE, cache, store, publish=bus.publish, upstream=upstream,
                        listened=bus.has_subscribers)
    for topic_filter in twins.subscriptions():
        await bus.subscribe(topic_filter, twins.on_mqtt)
    await twins.start()
    yield Rig(cache, tmp_path / "twin.db", bus, broker, twins, uploads, calls)
    await twins.stop()
    await stop_eventbus(bus, broker)
    store.close()
    cache.close()


async def _app(rig: Rig, peers: Peers, name: str = "thermo-1") -> tuple[PahoPeer, str]:
    app = peers(rig.broker.bound_port, f"app-{name}")
    await app.connect()
    base = BASE.format(name=name)
    await app.subscribe(f"{base}/twin/update/result")
    await app.subscribe(f"{base}/twin/update/document")
    await app.subscribe(f"{base}/twin/get/result")
    return app, base


def _update(event_id: str, value: str) -> bytes:
    return json.dumps({"event_id": event_id, "timestamp": 1, "twin": {
        "temperature": {"actual": {"value": value}}}}).encode()


async def test_a_burst_of_updates_is_answered_in_order_each_after_it_is_stored(
        rig: Rig, peers: Peers) -> None:
    app, base = await _app(rig, peers)
    started = time.monotonic()
    for i in range(100):  # without waiting for the answers: they are handled in batches
        app.client.publish(f"{base}/twin/update", _update(f"e{i}", str(i)), qos=1)
    results, documents = 0, 0
    while results < 100:
        topic, body = await app.next_message()
        message = json.loads(body)
        if topic.endswith("/document"):
            documents += 1
            continue
        assert message["event_id"] == f"e{results}"
        assert message["twin"]["temperature"]["actual"]["value"] == str(results)
        # Answered only once on disk: the stored value is this one or a later one.
        stored = rig.stored_value("thermo-1")
        assert stored is not None and int(stored) >= results
        results += 1
    await eventually(lambda: documents + app.messages.qsize() >= 100,
                     what="a document for every change")
    # The cloud gets the latest value (paced by the reportCycle, not once per update).
    await eventually(lambda: rig.uploads and rig.uploads[-1][1]["twins"][0]["reported"][
        "value"] == "99", what="the last value uploaded")
    # At most one upload per reportCycle (100 ms), however many updates came in between
    # (+2: the first upload goes at once, and the window edges need not align with
    # `started` and this line).
    assert len(rig.uploads) <= (time.monotonic() - started) / 0.1 + 2


async def test_a_store_failure_is_answered_500_and_nothing_is_kept(
        rig: Rig, peers: Peers) -> None:
    app, base = await _app(rig, peers)
    await app.publish(f"{base}/twin/update", _update("ok", "21"))
    assert json.loads((await _next_on(app, "/twin/update/result"))[1])["event_id"] == "ok"
    await eventually(lambda: rig.uploads, what="the first upload")
    uploaded = len(rig.uploads)

    with sqlite3.connect(rig.twin_db) as db:  # the disk goes away under the twin
        db.execute("DROP TABLE devices")
    await app.publish(f"{base}/twin/update", _update("lost", "99"))
    failed = json.loads((await _next_on(app, "/twin/update/result"))[1])
    assert failed["event_id"] == "lost" and failed["code"] == 500
    await app.publish(f"{base}/twin/get", b'{"event_id":"g"}')
    got = json.loads((await _next_on(app, "/twin/get/result"))[1])
    assert got["twin"]["temperature"]["actual"]["value"] == "21"  # 99 was never kept
    assert all(s["twins"][0]["reported"]["value"] != "99" for _, s in rig.uploads[uploaded:])


async def test_devices_added_while_the_twin_fell_behind_the_cache_are_served(
        rig: Rig, peers: Peers, caplog: pytest.LogCaptureFixture) -> None:
    # More changes at once than the twin's cache watch holds: the cache drops the watch
    # and the twin must read the Devices again instead of going deaf.
    for i in range(1100):
        rig.cache.upsert(_device(f"d-{i:04d}", 10 + i))
    app, base = await _app(rig, peers, "d-1099")
    deadline = time.monotonic() + 60
    attempt = 0
    while True:  # until the twin knows the device (404 while it catches up)
        attempt += 1
        await app.publish(f"{base}/twin/update", _update(f"late-{attempt}", "5"))
        result = json.loads((await _next_on(app, "/twin/update/result"))[1])
        assert result["event_id"] == f"late-{attempt}"
        if "code" not in result:
            break
        assert result["code"] == 404 and time.monotonic() < deadline, result
        await asyncio.sleep(0.2)  # pacing the retries, not synchronising
    assert rig.stored_value("d-1099") == "5"
    assert "fell behind the cache" in caplog.text  # the case this test is about happened


def _uploaded_value(status: dict[str, Any]) -> str:
    [twin] = [t for t in status["twins"] if t["propertyName"] == "temperature"]
    return str(twin["reported"]["value"])


async def test_devices_due_in_the_same_turn_go_to_the_cloud_in_one_call(
        rig: Rig, peers: Peers) -> None:
    names = ["line-1", "line-2", "line-3"]
    cycle = 2.0  # long enough that the second round of updates lands while all are busy,
    # even on a loaded machine
    for i, name in enumerate(names):
        device = _device(name, 10 + i)
        device["spec"]["properties"][0]["reportCycle"] = int(cycle * 1000)
        rig.cache.upsert(device)
    apps = [await _app(rig, peers, name) for name in names]
    # A Device's twin is uploaded when it arrives; from then on each is busy for a cycle.
    await eventually(lambda: set(names) <= {name for name, _ in rig.uploads},
                     what="the devices' first statuses")
    loop = asyncio.get_running_loop()
    idle_at = rig.calls[-1][0] + cycle + 0.05
    # Not synchronising with anything: the case needs the clock past the report cycle.
    await eventually(lambda: loop.time() >= idle_at, within=2 * cycle,
                     what="the report cycle to pass")
    before = len(rig.calls)

    # Idle devices: their mappers report in the same turn; the statuses go at once,
    # together.
    reported_at = loop.time()
    await asyncio.gather(*(rig.twins.report_status("default", name, [
        {"propertyName": "temperature", "reported": {"value": "1"}}]) for name in names))
    await eventually(lambda: len(rig.calls) > before, what="the uploads of the reports")
    first_at, first = rig.calls[before]
    assert first_at - reported_at < cycle / 2  # not held back: they were idle
    assert sorted(name for name, _ in first) == names
    assert {_uploaded_value(status) for _, status in first} == {"1"}

    # Busy devices: changed twice each, one device app after the other (different turns
    # of the loop), within their reportCycle.  Their uploads come due together.
    for value in ("2", "3"):
        for app, base in apps:
            await app.publish(f"{base}/twin/update", _update(f"v{value}", value))
            result = json.loads((await _next_on(app, "/twin/update/result"))[1])
            assert result["event_id"] == f"v{value}" and "code" not in result, result
    assert len(rig.calls) == before + 1, "an update came after the cycle: they must be busy"

    def latest() -> dict[str, str]:
        return {name: _uploaded_value(status)
                for _, batch in rig.calls[before:] for name, status in batch}

    await eventually(lambda: latest() == dict.fromkeys(names, "3"), within=10 * cycle,
                     what="the latest values uploaded")
    calls = rig.calls[before:]
    assert len(calls) == 2, [[name for name, _ in batch] for _, batch in calls]
    assert sum(len(batch) for _, batch in calls) == 2 * len(names)
    second_at, second = calls[1]
    assert sorted(name for name, _ in second) == names
    assert {_uploaded_value(status) for _, status in second} == {"3"}  # only the latest
    # Paced: not before the cycle had passed since the last upload.
    assert second_at - first_at >= cycle - 0.01


async def _next_on(app: PahoPeer, suffix: str) -> tuple[str, bytes]:
    while True:
        topic, body = await app.next_message()
        if topic.endswith(suffix):
            return topic, body
