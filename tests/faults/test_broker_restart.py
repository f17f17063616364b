"""kill -9 of the external MQTT broker (a real mosquitto) under edgecore ``--mqtt
external``, at a random point of a stream of QoS 1 twin updates from a device app,
ROUNDS times, the broker restarted on the same port each time:

- every update whose ``/result`` the device app received reaches the cloud's Device
  status (the latest one per property), broker or no broker: the edge's path up to the
  cloud does not go through MQTT once the result is out;
- edgecore's bus notices the loss, reconnects and subscribes again: updates published
  after the restart are answered and reach the cloud too;
- the reported values the cloud shows never go back to an older one (a QoS 1 duplicate
  applied late would).

The device app sends one update at a time, so at the kill at most one update is in
flight; its value may or may not be applied, and nothing older than it may be.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.faults.support import ROUNDS, TwinApp, acknowledged, schedule
from tests.harness import Cloud, Edge, reported, wait_until
from tests.mosquitto import Mosquitto
from tests.reliability import record_fault

pytestmark = [pytest.mark.system, pytest.mark.slow]

NODE, NAME = "edge-a", "climate"
PROPS = ("temperature", "humidity")


def _model() -> dict[str, Any]:
    return {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
            "metadata": {"name": "climate-model", "namespace": "default"},
            "spec": {"protocol": "modbus", "properties": [
                {"name": p, "type": "INT", "accessMode": "ReadWrite"} for p in PROPS]}}


def _device() -> dict[str, Any]:
    return {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
            "metadata": {"name": NAME, "namespace": "default"},
            "spec": {"deviceModelRef": {"name": "climate-model"}, "nodeName": NODE,
                     "protocol": {"protocolName": "modbus",
                                  "configData": {"ip": "127.0.0.1", "port": 5020}},
                     "properties": [{"name": p, "reportToCloud": True} for p in PROPS]}}


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    broker = Mosquitto()
    broker.start()
    yield broker
    broker.close()


@dataclass
class Updates:
    """What the device app got acknowledged, per property, over the whole test."""

    next_value: int = 0
    acked: dict[str, int] = field(default_factory=dict)
    unsure: dict[str, set[int]] = field(default_factory=dict)  # sent, no result seen
    count: int = 0

    def send(self, app: TwinApp, timeout: float = 3.0) -> bool:
        self.next_value += 1
        value = self.next_value
        prop = PROPS[value % len(PROPS)]
        result = app.update(f"u{value}", {prop: str(value)}, timeout)
        if not acknowledged(result):
            self.unsure.setdefault(prop, set()).add(value)
            return False
        self.acked[prop] = value
        self.count += 1
        return True

    def allowed(self, prop: str) -> set[int]:
        """What the edge and the cloud may hold for ``prop``: the last acknowledged value,
        or one sent after it whose answer was lost."""
        last = self.acked.get(prop, 0)
        return {last} | {v for v in self.unsure.get(prop, set()) if v > last}


def _stream_until_refused(app: TwinApp, updates: Updates, stop: threading.Event) -> None:
    while not stop.is_set() and updates.send(app):
        stop.wait(0.02)  # pacing, not synchronisation


def _cloud_value(cloud: Cloud, prop: str) -> int | None:
    value = reported(cloud, NAME, prop)
    return int(value) if value else None


def _watch(cloud: Cloud, seen: dict[str, list[int]], stop: threading.Event) -> None:
    """Every reported value the cloud shows, per property, in order."""
    while not stop.wait(0.2):
        for prop in PROPS:
            try:
                value = _cloud_value(cloud, prop)
            except httpx.HTTPError:
                continue
            history = seen.setdefault(prop, [])
            if value is not None and (not history or history[-1] != value):
                history.append(value)


def _cloud_holds_latest(cloud: Cloud, updates: Updates, what: str) -> list[str]:
    """Each property's cloud value is an allowed one; the mismatches, described."""
    missing = []
    for prop in PROPS:
        allowed = updates.allowed(prop)
        try:
            wait_until(lambda: _cloud_value(cloud, prop) in allowed, 20,  # noqa: B023
                       what=f"{what}: the cloud to report {prop} in {sorted(allowed)}")
        except AssertionError as exc:
            missing.append(f"{exc}; it holds {_cloud_value(cloud, prop)}")
    return missing


def _lost_broker(edge: Edge) -> int:
    return edge.log().count("lost its broker")


def test_broker_killed_and_restarted_the_bus_resubscribes_and_keeps_every_acknowledged_update(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
    mosquitto: Mosquitto,
) -> None:
    rng = schedule("kill9-mosquitto")
    cloud = cloud_factory().start()
    edge = edge_factory(cloud, NODE)
    assert edge.join(cloud.join_token()).returncode == 0
    edge.mqtt_url = mosquitto.url
    edge.start()
    assert cloud.apply(_model()).status_code in (200, 201)
    assert cloud.apply(_device()).status_code in (200, 201)
    wait_until(lambda: edge.cached_one("Device", NAME), what="the device on the edge")

    updates = Updates()
    problems: list[str] = []
    seen: dict[str, list[int]] = {}
    stop_watch = threading.Event()
    watcher = threading.Thread(target=_watch, args=(cloud, seen, stop_watch))
    watcher.start()
    try:
        app = TwinApp(mosquitto.port, "default", NAME, client_id="app-0")
        # The edge's subscriptions may trail its start: the first update is retried.
        wait_until(lambda: updates.send(app), 30, what="a first acknowledged update")
        for round_no in range(ROUNDS):
            problems += _one_kill(round_no, rng.uniform(0.0, 1.0), cloud, edge, mosquitto,
                                  app, updates)
            app = TwinApp(mosquitto.port, "default", NAME, client_id=f"app-{round_no + 1}")
            problems += _after_restart(round_no, cloud, app, updates)
        app.close()
    finally:
        stop_watch.set()
        watcher.join(10)

    went_back = {prop: [(a, b) for a, b in itertools.pairwise(h) if b < a]
                 for prop, h in seen.items()}
    duplicated = sum(len(v) for v in went_back.values())
    if duplicated:
        problems.append(f"the cloud's reported values went back: {went_back}")
    print(f"{updates.count} updates acknowledged; unanswered: {updates.unsure}")
    record_fault("kill9-mosquitto", ROUNDS, updates.count,
                 updates.count - sum("holds" in p for p in problems), duplicated)
    assert problems == [], "\n".join(problems)


def _one_kill(round_no: int, delay: float, cloud: Cloud, edge: Edge, broker: Mosquitto,
              app: TwinApp, updates: Updates) -> list[str]:
    label = f"round {round_no}"
    stop = threading.Event()
    before, losses = updates.count, _lost_broker(edge)
    sender = threading.Thread(target=_stream_until_refused, args=(app, updates, stop))
    sender.start()
    try:
        wait_until(lambda: updates.count >= before + 10, 30,
                   what=f"{label}: acknowledged updates before the kill")
        time.sleep(delay)  # where the kill falls in the stream: the fault schedule
        broker.kill()
        sender.join(15)
        assert not sender.is_alive(), f"{label}: the device app did not notice the broker die"
    finally:
        stop.set()
        app.close()  # its unacknowledged publish is not resent behind the later ones
    wait_until(lambda: _lost_broker(edge) > losses, 30,
               what=f"{label}: edgecore to notice the broker is gone")
    # With the broker still down: what was acknowledged is in the cloud already.
    problems = _cloud_holds_latest(cloud, updates, f"{label}, broker down")
    broker.start()  # the same port
    return problems


def _after_restart(round_no: int, cloud: Cloud, app: TwinApp,
                   updates: Updates) -> list[str]:
    label = f"round {round_no}, after the restart"
    # Only a resubscribed edgecore answers: until then an update goes nowhere.
    wait_until(lambda: updates.send(app, timeout=1.0), 30,
               what=f"{label}: an update answered (edgecore subscribed again)")
    for _ in range(2 * len(PROPS)):
        assert updates.send(app), f"{label}: an update was not answered"
    twin = app.get(f"get-{round_no}")
    problems = _cloud_holds_latest(cloud, updates, label)
    for prop in PROPS:
        local = int(twin[prop]["actual"]["value"])
        if local != updates.acked[prop]:
            problems.append(f"{label}: the edge's twin holds {prop}={local}, the last "
                            f"acknowledged is {updates.acked[prop]}")
    return problems
