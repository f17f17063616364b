"""Device twin over KubeEdge's MQTT topics, with real processes: a plain paho client
acting as a KubeEdge device app, edgecore on its embedded broker or on a real
mosquitto, cloudcore holding the Device's status."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.harness import Cloud, Edge, device, device_model, reported, wait_until
from tests.mosquitto import Mosquitto

pytestmark = pytest.mark.system

NS, NAME = "default", "thermo"
BASE = f"$hw/events/device/{NS}/{NAME}"


class DeviceApp:
    """A KubeEdge device app: publishes on the twin topics, collects every reply."""

    def __init__(self, port: int, *, name: str = NAME, client_id: str = "device-app") -> None:
        self.base = f"$hw/events/device/{NS}/{name}"
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311)
        # It also hears its own requests (it subscribes to BASE/#): decode lazily.
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        self.client.subscribe(f"{self.base}/#", qos=1)
        if not subscribed.wait(10):
            raise AssertionError("the device app's subscription was not acknowledged")

    def publish(self, suffix: str, payload: dict[str, Any] | bytes) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.client.publish(f"{self.base}/{suffix}", data, qos=1).wait_for_publish(5)

    def next(self, topic_suffix: str, event_id: str | None = None,
             timeout: float = 10) -> dict[str, Any]:
        """The next message on ``BASE/topic_suffix`` (with that event_id, if given);
        others are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no message on {self.base}/{topic_suffix}")
            topic, body = self.messages.get(timeout=left)
            if topic == f"{self.base}/{topic_suffix}":
                decoded = dict(json.loads(body))
                if event_id is None or decoded.get("event_id") == event_id:
                    return decoded

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    broker = Mosquitto()
    broker.start()
    yield broker
    broker.stop()


def _reported(cloud: Cloud, prop: str) -> str | None:
    return reported(cloud, NAME, prop)


def _run(cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
         external: Mosquitto | None) -> None:
    cloud = cloud_factory().start()
    edge = edge_factory(cloud, "edge-a")
    assert edge.join(cloud.join_token()).returncode == 0
    if external is not None:
        edge.mqtt_url = external.url
    edge.start()
    cloud.apply(device_model())
    cloud.apply(device(NAME, "edge-a", desired="30"))
    wait_until(lambda: edge.cached_one("Device", NAME), what="the device on the edge")
    port = external.port if external is not None else edge.mqtt_port
    app = DeviceApp(port)
    sub: subprocess.Popen[str] | None = None
    try:
        # mosquitto_sub, as any KubeEdge user would watch the delta topic.  It has no
        # "subscribed" signal, so the update is repeated (each one republishes the delta
        # while desired and reported differ) until it has seen one.
        sub = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t",
             f"{BASE}/twin/update/delta", "-C", "1", "-W", "30"],
            stdout=subprocess.PIPE, text=True)
        update = {"event_id": "e1", "timestamp": 1,
                  "twin": {"temperature": {"actual": {"value": "23"}}}}
        app.publish("twin/update", update)
        result = app.next("twin/update/result")
        assert result["event_id"] == "e1"
        assert result["twin"]["temperature"]["actual"]["value"] == "23"

        def sub_got_delta() -> bool:
            if sub.poll() is None:
                app.publish("twin/update", update)
                return False
            return True
        wait_until(sub_got_delta, 25, interval=1.0, what="mosquitto_sub to see the delta")
        assert sub.stdout is not None
        delta = json.loads(sub.stdout.read().strip().splitlines()[-1])
        assert delta["delta"] == {"temperature": "30"}

        wait_until(lambda: _reported(cloud, "temperature") == "23", 15,
                   what="the reported value in the cloud's Device status")

        # Bad input: an error result, nothing stored.
        app.publish("twin/update", b"{not json")
        assert app.next("twin/update/result", event_id="")["code"] == 400
        app.publish("twin/update", {"event_id": "e2", "timestamp": 1})
        bad = app.next("twin/update/result", event_id="e2")
        assert bad["code"] == 400 and "twin" in bad["reason"]
        app.publish("twin/update", {"event_id": "e3", "twin": {"temperature": {"actual": {
            "value": "hot"}}, }})  # temperature is INT in the model
        assert app.next("twin/update/result", event_id="e3")["code"] == 400
        unknown = DeviceApp(port, name="nope", client_id="unknown-app")
        try:
            unknown.publish("twin/update", {"event_id": "e4",
                                            "twin": {"x": {"actual": {"value": "1"}}}})
            assert unknown.next("twin/update/result", event_id="e4")["code"] == 404
        finally:
            unknown.close()
        big = {"event_id": "big", "twin": {"temperature": {"actual": {"value": "1"}}},
               "padding": "x" * (1 << 20)}
        app.publish("twin/update", big)
        assert app.next("twin/update/result", event_id="")["code"] == 413
        app.publish("twin/get", {"event_id": "g1"})
        got = app.next("twin/get/result", event_id="g1")
        assert got["twin"]["temperature"]["actual"]["value"] == "23"

        # Cloud -> edge: a new desired value gives a delta to the device app.
        assert cloud.apply(device(NAME, "edge-a", desired="25")).status_code == 200
        assert app.next("twin/update/delta")["delta"] == {"temperature": "25"}

        app.publish("state/update", {"event_id": "s1", "state": "Online"})
        assert app.next("state/update/result", event_id="s1")["device"]["state"] == "online"
        wait_until(lambda: cloud.get("Device", NAME).get("status", {}).get("state") == "online",
                   15, what="the device state in the cloud")
    finally:
        app.close()
        if sub is not None and sub.poll() is None:
            sub.kill()


def test_device_app_on_the_embedded_broker(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
) -> None:
    _run(cloud_factory, edge_factory, None)


def test_device_app_on_an_external_mosquitto(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
    mosquitto: Mosquitto,
) -> None:
    _run(cloud_factory, edge_factory, mosquitto)
