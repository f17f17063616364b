"""KubeEdge's router with real processes: KubeEdge's own Rule/RuleEndpoint samples
applied with efctl, a REST POST to the cloud published on an edge MQTT topic, an edge
publish delivered to a REST target, the message stream, rule status counts, messages
published while the cloud is away, and the servicebus (off by default)."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.harness import Cloud, Edge, command, free_port, kubeedge_crds_dir, wait_until

pytestmark = pytest.mark.system

NODE = "edge-node"  # the node the KubeEdge samples name


class Receiver:
    """An HTTP service on 127.0.0.1 that records every request and answers 201."""

    def __init__(self, answer: bytes = b"pong") -> None:
        self.requests: queue.Queue[tuple[str, str, dict[str, str], bytes]] = queue.Queue()
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                received.put((self.command, self.path, dict(self.headers), body))
                self.send_response(201)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_POST = do_PUT = do_GET = _any

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def next(self, timeout: float = 20) -> tuple[str, str, dict[str, str], bytes]:
        return self.requests.get(timeout=timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class MqttPeer:
    """A plain paho client on the edge's broker (an edge app)."""

    def __init__(self, port: int, topic: str | None = None) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"app-{free_port()}")
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        if topic is not None:
            self.client.subscribe(topic, qos=1)
            assert subscribed.wait(10), "subscription not acknowledged"

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def efctl(cloud: Cloud, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command("efctl"), "--config", str(cloud.efctl_config), *args],
                          capture_output=True, text=True, timeout=60, input=stdin)


def rule(name: str, source: str, source_resource: dict[str, str], target: str,
         target_resource: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "rules.kubeedge.io/v1", "kind": "Rule",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"source": source, "sourceResource": source_resource, "target": target,
                     "targetResource": target_resource}}


def rule_status(cloud: Cloud, name: str) -> dict[str, Any]:
    return dict(cloud.get("Rule", name).get("status") or {})


def post(cloud: Cloud, path: str, body: bytes, token: str | None = None) -> Any:
    with cloud.api(token) as c:
        return c.post(f"/router/{path}", content=body, timeout=40)


def start(cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
          *run_args: str, settings: dict[str, Any] | None = None) -> tuple[Cloud, Edge]:
    cloud = cloud_factory(settings).start()
    edge = edge_factory(cloud, NODE)
    assert edge.join(cloud.join_token()).returncode == 0
    edge.run_args = list(run_args)
    edge.start()
    return cloud, edge


def apply_samples(cloud: Cloud) -> None:
    """KubeEdge's six router samples, through efctl, byte for byte."""
    samples = sorted(kubeedge_crds_dir().glob("rule*.yaml"))
    assert len(samples) == 6
    for path in samples:
        result = efctl(cloud, "apply", "-f", str(path))
        assert result.returncode == 0, f"{path.name}: {result.stderr}"


def test_rest_to_edge_topic_and_edge_topic_to_rest(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge], receiver: Receiver,
) -> None:
    kubeedge_port = free_port()
    cloud, edge = start(cloud_factory, edge_factory,
                        settings={"router": {"kubeedgeListen": f"127.0.0.1:{kubeedge_port}"}})
    apply_samples(cloud)
    # The eventbus->rest sample targets http://a.com; keep the test off the internet.
    assert efctl(cloud, "delete", "rule", "my-rule-eventbus-rest").returncode == 0
    app = MqttPeer(edge.mqtt_port, topic="test")
    try:
        # REST -> eventbus, with KubeEdge's sample rule unchanged.
        answer = post(cloud, f"{NODE}/default/test", b'{"cmd": "on"}')
        assert answer.status_code == 200, answer.text
        assert answer.json()["delivered"] is True
        assert app.messages.get(timeout=10) == ("test", b'{"cmd": "on"}')
        wait_until(lambda: rule_status(cloud, "my-rule").get("successMessages") == 1, 15,
                   what="my-rule counting its delivery")
        # The same through KubeEdge's own URL (plain HTTP, as KubeEdge scripts call it).
        answer = httpx.post(f"http://127.0.0.1:{kubeedge_port}/{NODE}/default/test",
                            content=b"from a kubeedge script", timeout=40)
        assert answer.status_code == 200, answer.text
        assert app.messages.get(timeout=10) == ("test", b"from a kubeedge script")
        wait_until(lambda: rule_status(cloud, "my-rule").get("successMessages") == 2, 15,
                   what="my-rule counting both deliveries")

        # Edge topic -> REST target, wildcards as in MQTT.
        cloud.apply(rule("temps", "my-eventbus", {"topic": "sensors/+/temp", "node_name": NODE},
                         "my-rest", {"resource": f"{receiver.url}/ingest"}))
        wait_until(lambda: "sensors/+/temp" in edge.log(), 15,
                   what="the edge subscribing to the rule's topic")
        app.publish("sensors/boiler/temp", b'{"t": 71.5}')
        method, path, headers, body = receiver.next()
        assert (method, path, body) == ("POST", "/ingest", b'{"t": 71.5}')
        assert headers["X-Edgefleet-Node"] == NODE
        assert headers["X-Edgefleet-Topic"] == "sensors/boiler/temp"
        assert headers["Content-Type"] == "application/json"
        wait_until(lambda: rule_status(cloud, "temps").get("successMessages") == 1, 15,
                   what="the temps rule counting its delivery")

        # Overlapping rule topics: the message goes up once and each rule delivers once.
        cloud.apply(rule("all-sensors", "my-eventbus", {"topic": "sensors/#", "node_name": NODE},
                         "my-rest", {"resource": f"{receiver.url}/all"}))
        wait_until(lambda: "MQTT sensors/#" in edge.log(), 15, what="subscription to sensors/#")
        app.publish("sensors/pump/temp", b"40")
        app.publish("sensors/done", b"sentinel")  # matches only sensors/#, and comes after
        paths = sorted(receiver.next()[1] for _ in range(3))
        assert paths == ["/all", "/all", "/ingest"]
        wait_until(lambda: rule_status(cloud, "all-sensors").get("successMessages") == 2, 15,
                   what="all-sensors counting two messages")
        assert rule_status(cloud, "temps")["successMessages"] == 2
        assert receiver.requests.empty()  # in order per node: a duplicate would be here by now

        # A target that refuses: counted as a failure, with the reason.
        cloud.apply(rule("broken", "my-eventbus", {"topic": "broken", "node_name": NODE},
                         "my-rest", {"resource": f"http://127.0.0.1:{free_port()}/x"}))
        wait_until(lambda: "MQTT broken" in edge.log(), 15, what="subscription to 'broken'")
        app.publish("broken", b"x")
        wait_until(lambda: rule_status(cloud, "broken").get("failMessages") == 1, 20,
                   what="the broken rule counting a failure")
        assert rule_status(cloud, "broken")["errors"]

        # Bad requests change nothing and say why.
        assert post(cloud, f"{NODE}/default/nowhere", b"x").status_code == 404
        viewer = _viewer_token(cloud)
        assert post(cloud, f"{NODE}/default/test", b"x", token=viewer).status_code == 403
        assert rule_status(cloud, "my-rule").get("successMessages") == 2
    finally:
        app.close()


def _viewer_token(cloud: Cloud) -> str:
    with cloud.api() as c:
        r = c.post("/auth/users", json={"name": f"v{free_port()}", "role": "viewer"})
        r.raise_for_status()
        return str(r.json()["token"])


def test_uploads_reach_the_stream_and_survive_the_cloud_being_away(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge], receiver: Receiver,
) -> None:
    cloud, edge = start(cloud_factory, edge_factory)
    apply_samples(cloud)
    cloud.apply(rule("alarms", "my-eventbus", {"topic": "alarms", "node_name": NODE},
                     "my-rest", {"resource": receiver.url}))
    wait_until(lambda: "MQTT alarms" in edge.log(), 15, what="subscription to 'alarms'")
    app = MqttPeer(edge.mqtt_port)
    lines: queue.Queue[dict[str, Any]] = queue.Queue()
    stop = threading.Event()

    def watch() -> None:
        try:
            with cloud.api() as c, c.stream("GET", "/router/messages", params={"node": NODE},
                                            timeout=None) as r:
                for line in r.iter_lines():
                    lines.put(json.loads(line))
                    if stop.is_set():
                        return
        except httpx.HTTPError:
            pass  # the cloud is stopped part-way through the test; the stream ends there

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        assert lines.get(timeout=10) == {"type": "WATCHING"}
        # Anything on $hw/events/upload/# reaches the stream, no rule needed.
        app.publish("$hw/events/upload/door", b"open")
        event = lines.get(timeout=15)
        assert event["type"] == "MESSAGE"
        assert event["message"]["topic"] == "$hw/events/upload/door"
        assert event["message"]["payload"] == "open"
        assert event["message"]["node"] == NODE

        # Published while the cloud is down: kept in the edge's outbox, delivered after.
        assert cloud.stop() == 0
        wait_until(lambda: "link to" in edge.log() or "cannot reach" in edge.log(), 15,
                   what="the edge noticing the cloud is gone")
        app.publish("alarms", b"smoke in hall 3")
        app.publish("alarms", bytes([0xFF, 0x00, 0x10]))  # binary survives the JSON link
        cloud.start()
        assert receiver.next(30)[3] == b"smoke in hall 3"
        assert receiver.next(30)[3] == bytes([0xFF, 0x00, 0x10])
        wait_until(lambda: rule_status(cloud, "alarms").get("successMessages") == 2, 20,
                   what="the alarms rule counting both deliveries")
    finally:
        stop.set()
        app.close()


def test_servicebus_is_off_by_default_and_relays_a_local_service(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge], receiver: Receiver,
    tmp_path: Path,
) -> None:
    cloud, edge = start(cloud_factory, edge_factory)
    apply_samples(cloud)
    # KubeEdge's servicebus sample, pointed at our local service's port.
    cloud.apply({"apiVersion": "rules.kubeedge.io/v1", "kind": "RuleEndpoint",
                 "metadata": {"name": "my-servicebus", "namespace": "default"},
                 "spec": {"ruleEndpointType": "servicebus",
                          "properties": {"service_port": str(receiver.port)}}})
    answer = post(cloud, f"{NODE}/default/source", b"ping")
    assert answer.status_code == 503
    assert "--servicebus" in answer.json()["message"]
    assert receiver.requests.empty()
    wait_until(lambda: rule_status(cloud, "my-rule-rest-servicebus").get("failMessages") == 1,
               15, what="the refused delivery counted")

    edge.stop()
    edge.run_args = ["--servicebus"]
    edge.start()
    answer = post(cloud, f"{NODE}/default/source", b"ping")
    assert (answer.status_code, answer.content) == (201, b"pong")
    method, path, _headers, body = receiver.next()
    assert (method, path, body) == ("POST", "/target", b"ping")
    wait_until(lambda: rule_status(cloud, "my-rule-rest-servicebus").get("successMessages") == 1,
               15, what="the delivery counted")

    # The node away: 503 at once, nothing queued for later.
    edge.stop()
    wait_until(lambda: post(cloud, f"{NODE}/default/source", b"late").status_code == 503, 15,
               what="the cloud noticing the node is gone")
