"""The full device loop with real processes: cloudcore, edgecore, the Modbus thermostat
simulator and mapper-modbus over DMI (done-when 1 and 2 of the device-plane issue)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import (
    Cloud,
    Edge,
    command,
    holding_register,
    reported,
    reported_at,
    wait_until,
)

pytestmark = pytest.mark.system

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "thermostat.yaml"


@pytest.fixture
def simulator_proc() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "mappers.modbus.simulator", "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on" in line, line
    proc.port = int(line.rsplit(":", 1)[1])  # type: ignore[attr-defined]
    yield proc
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def simulator(simulator_proc: subprocess.Popen[str]) -> int:
    return int(simulator_proc.port)  # type: ignore[attr-defined]


def _thermostat(port: int) -> list[dict[str, Any]]:
    docs = list(yaml.safe_load_all(EXAMPLE.read_text()))
    for doc in docs:
        if doc["kind"] == "Device":
            doc["spec"]["nodeName"] = "edge-a"
            doc["spec"]["protocol"]["configData"]["port"] = port
    return docs


def _reported(cloud: Cloud, prop: str) -> str | None:
    return reported(cloud, "thermostat-1", prop)


def test_reported_values_reach_the_cloud_and_twin_set_reaches_the_device(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
    procs: list[Any], simulator: int, simulator_proc: subprocess.Popen[str], tmp_path: Path,
) -> None:
    cloud = cloud_factory().start()
    edge = edge_factory(cloud, "edge-a")
    assert edge.join(cloud.join_token()).returncode == 0
    edge.start()
    mapper_log = open(tmp_path / "mapper.log", "ab")
    mapper = subprocess.Popen(
        [*command("mapper-modbus"), "--dmi-socket", str(edge.dir / "dmi.sock")],
        stdout=mapper_log, stderr=subprocess.STDOUT)
    try:
        for doc in _thermostat(simulator):
            assert cloud.apply(doc).status_code in (200, 201), doc["kind"]
        # collect/report cycles are 2 s: reported values within two report cycles
        # (plus the edge's own pacing) of the device arriving.
        wait_until(lambda: _reported(cloud, "temperature") not in (None, ""), 10,
                   what="the reported temperature in the cloud")
        assert 10 < float(_reported(cloud, "temperature") or 0) < 35
        wait_until(lambda: _reported(cloud, "setpoint") == "21", 10,
                   what="the setpoint written and reported")

        efctl = subprocess.run(
            [*command("efctl"), "--config", str(cloud.efctl_config), "twin", "set",
             "thermostat-1", "setpoint=25"], capture_output=True, text=True, timeout=30)
        assert efctl.returncode == 0, efctl.stderr
        wait_until(lambda: holding_register(simulator) == 25, 15,
                   what="the simulator's setpoint register to read 25")
        wait_until(lambda: _reported(cloud, "setpoint") == "25", 15,
                   what="reported setpoint 25 in the cloud")
        assert cloud.get("Device", "thermostat-1")["status"].get("state") == "online"

        # The thermostat stops answering (SIGUSR1 mutes the simulator): offline; and
        # online again once it answers.
        simulator_proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: cloud.get("Device", "thermostat-1")["status"].get("state")
                   == "offline", 30, what="the device offline in the cloud")
        simulator_proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: cloud.get("Device", "thermostat-1")["status"].get("state")
                   == "online", 30, what="the device online again")
    finally:
        mapper.terminate()
        mapper.wait(10)
        mapper_log.close()


def _twin_get(port: int) -> dict[str, Any]:
    """A KubeEdge device app's twin/get on the edge's local broker."""
    import json
    import queue

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    base = "$hw/events/device/default/thermostat-1/twin/get"
    replies: queue.Queue[bytes] = queue.Queue()
    subscribed: queue.Queue[int] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="twin-get-probe")
    client.on_message = lambda _c, _u, m: replies.put(bytes(m.payload))
    client.on_subscribe = lambda *_a: subscribed.put(1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.subscribe(f"{base}/result", qos=1)
        subscribed.get(timeout=10)
        client.publish(base, json.dumps({"event_id": "probe"}), qos=1).wait_for_publish(5)
        return dict(json.loads(replies.get(timeout=10)))
    finally:
        client.loop_stop()
        client.disconnect()


def test_the_edge_keeps_working_without_the_cloud_and_reconciles_after(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
    simulator: int, tmp_path: Path,
) -> None:
    cloud = cloud_factory().start()
    edge = edge_factory(cloud, "edge-a")
    assert edge.join(cloud.join_token()).returncode == 0
    edge.start()
    mapper = subprocess.Popen(
        [*command("mapper-modbus"), "--dmi-socket", str(edge.dir / "dmi.sock")],
        stdout=open(tmp_path / "mapper.log", "ab"), stderr=subprocess.STDOUT)
    try:
        for doc in _thermostat(simulator):
            assert cloud.apply(doc).status_code in (200, 201)
        wait_until(lambda: _reported(cloud, "setpoint") == "21", 15, what="first report")

        # Cloud down: the mapper keeps polling and the local twin keeps moving.
        assert cloud.stop() == 0
        def local_reading() -> tuple[str, int]:
            actual = _twin_get(edge.mqtt_port)["twin"]["temperature"]["actual"]
            return str(actual["value"]), int(actual["metadata"]["timestamp"])

        _, first = local_reading()
        # The temperature drifts every 500 ms; a new reading has a new timestamp.
        wait_until(lambda: local_reading()[1] > first, 15, interval=0.5,
                   what="new temperature readings with the cloud down")
        local, _ = local_reading()

        # The cloud comes back: the latest local values arrive.
        cloud.start()
        edge.wait_synced(after=1)
        wait_until(lambda: reported_at(cloud, "thermostat-1", "temperature") > first, 20,
                   what="readings taken while the cloud was down, in the cloud")
        assert local  # a reading existed locally while the cloud was away

        # The edge away: a desired value set in the cloud meanwhile is applied on return.
        assert edge.stop() == 0
        efctl = subprocess.run(
            [*command("efctl"), "--config", str(cloud.efctl_config), "twin", "set",
             "thermostat-1", "setpoint=19"], capture_output=True, text=True, timeout=30)
        assert efctl.returncode == 0, efctl.stderr
        edge.start()
        wait_until(lambda: holding_register(simulator) == 19, 30,
                   what="the desired value set while the edge was away, on the device")
        wait_until(lambda: _reported(cloud, "setpoint") == "19", 20, what="reported 19")
    finally:
        mapper.terminate()
        mapper.wait(10)


def test_a_mapper_deployed_as_an_app_serves_its_devices(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge], simulator: int,
) -> None:
    cloud = cloud_factory().start()
    edge = edge_factory(cloud, "edge-a")
    assert edge.join(cloud.join_token()).returncode == 0
    edge.start()
    # No --dmi-socket: edged gives every replica $EDGEFLEET_DMI_SOCKET.
    mapper_app = {"apiVersion": "apps.edgefleet.io/v1alpha1", "kind": "App",
                  "metadata": {"name": "mapper-modbus", "namespace": "default"},
                  "spec": {"command": [sys.executable, "-m", "mappers.modbus.cli"],
                           "env": [{"name": "PYTHONPATH",
                                    "value": str(Path(__file__).resolve().parents[2])}]}}
    assert cloud.apply(mapper_app).status_code in (200, 201)
    for doc in _thermostat(simulator):
        assert cloud.apply(doc).status_code in (200, 201), doc["kind"]
    wait_until(lambda: _reported(cloud, "temperature") not in (None, ""), 60,
               what="a reported temperature through the mapper App")
    status = cloud.get("App", "mapper-modbus")["status"]
    assert status["replicas"][0]["node"] == "edge-a"
    assert status["replicas"][0]["phase"] == "Running"
