"""kill -9 of mapper-modbus at a random point while desired values stream to a simulated
thermostat, ROUNDS times: edgecore stays up, the restarted mapper registers again, the
desired value set while it was dead is written to the device's register, and reporting
resumes."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.faults.support import ROUNDS, assert_intact, schedule
from tests.harness import (
    Cloud,
    Edge,
    command,
    holding_register,
    reported,
    reported_at,
    wait_until,
)
from tests.reliability import record_fault

pytestmark = [pytest.mark.system, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "thermostat.yaml"
DEVICE = "thermostat-1"
REGISTERED = "registered for protocol 'modbus'"


@pytest.fixture
def thermostat() -> Iterator[int]:
    """The Modbus thermostat simulator; yields its TCP port."""
    proc = subprocess.Popen([sys.executable, "-m", "mappers.modbus.simulator", "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on" in line, line
        yield int(line.rsplit(":", 1)[1])
    finally:
        proc.terminate()
        proc.wait(10)


def _docs(port: int, setpoint: str) -> list[dict[str, Any]]:
    """The example thermostat on edge-a, polled and reported every 500 ms."""
    docs = list(yaml.safe_load_all(EXAMPLE.read_text()))
    for doc in docs:
        if doc["kind"] == "Device":
            doc["spec"]["nodeName"] = "edge-a"
            doc["spec"]["protocol"]["configData"]["port"] = port
            for prop in doc["spec"]["properties"]:
                prop["collectCycle"] = prop["reportCycle"] = 500
                if prop["name"] == "setpoint":
                    prop["desired"]["value"] = setpoint
    return docs


def _device(port: int, setpoint: str) -> dict[str, Any]:
    return next(d for d in _docs(port, setpoint) if d["kind"] == "Device")


def _register_is(port: int, value: int) -> bool:
    return holding_register(port) == value


def _reported_is(cloud: Cloud, prop: str, value: str) -> bool:
    return reported(cloud, DEVICE, prop) == value


def _reported_after(cloud: Cloud, prop: str, ms: int) -> bool:
    return reported_at(cloud, DEVICE, prop) > ms


def _registrations(edge: Edge) -> int:
    return edge.log().count(REGISTERED)


def _stream_desired(cloud: Cloud, port: int, rng_seed: int, stop: threading.Event,
                    acked: list[str]) -> None:
    """Set new desired setpoints until told to stop (each acknowledged by the API)."""
    rng = random.Random(rng_seed)
    with cloud.api() as api:
        path = f"/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices/{DEVICE}"
        while not stop.is_set():
            value = str(rng.randint(5, 35))
            r = api.put(path, json=_device(port, value))
            assert r.status_code == 200, r.text
            acked.append(value)
            stop.wait(0.1)  # a stream, not a flood


def test_kill9_mapper_edgecore_stays_up_and_the_restarted_mapper_catches_up(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
    thermostat: int, tmp_path: Path,
) -> None:
    rng = schedule("kill9-mapper")
    cloud = cloud_factory().start()
    edge = edge_factory(cloud, "edge-a")
    assert edge.join(cloud.join_token()).returncode == 0
    edge.start()
    mapper_log = open(tmp_path / "mapper.log", "ab")

    def start_mapper() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*command("mapper-modbus"), "--dmi-socket", str(edge.dir / "dmi.sock")],
            stdout=mapper_log, stderr=subprocess.STDOUT)

    mapper = start_mapper()
    reached = 0
    try:
        for doc in _docs(thermostat, "21"):
            assert cloud.apply(doc).status_code in (200, 201), doc["kind"]
        wait_until(partial(_reported_is, cloud, "setpoint", "21"), 20,
                   what="the first setpoint written and reported")

        for round_no in range(ROUNDS):
            stop = threading.Event()
            acked: list[str] = []
            writer = threading.Thread(target=_stream_desired,
                                      args=(cloud, thermostat, rng.randrange(1 << 30), stop,
                                            acked))
            writer.start()
            try:
                time.sleep(rng.uniform(0.2, 1.5))  # where the kill falls: the fault schedule
                mapper.kill()
                mapper.wait(10)
            finally:
                stop.set()
                writer.join(15)
            assert acked, "no desired value was set before the kill"

            # edgecore did not notice beyond the mapper going quiet.
            assert edge.proc is not None and edge.proc.poll() is None
            assert httpx.get(f"{edge.meta_url}/healthz", timeout=5).status_code == 200
            desired = 5 + (round_no * 7 + 3) % 31
            while str(desired) == acked[-1]:
                desired = 5 + (desired - 4) % 31
            assert cloud.apply(_device(thermostat, str(desired))).status_code == 200
            registrations = _registrations(edge)
            restarted_ms = int(time.time() * 1000)

            mapper = start_mapper()
            wait_until(lambda: _registrations(edge) > registrations, 20,  # noqa: B023
                       what="the restarted mapper to register again")
            wait_until(partial(_register_is, thermostat, desired), 20,
                       what=f"the desired setpoint {desired} in the device's register")
            reached += 1
            wait_until(partial(_reported_is, cloud, "setpoint", str(desired)), 20,
                       what=f"the reported setpoint {desired}")
            wait_until(partial(_reported_after, cloud, "temperature", restarted_ms), 20,
                       what="temperature readings taken after the restart, in the cloud")
    finally:
        mapper.terminate()
        mapper.wait(10)
        mapper_log.close()
    assert edge.stop() == 0
    assert_intact(edge.dir)
    record_fault("kill9-mapper", ROUNDS, ROUNDS, reached, 0)
