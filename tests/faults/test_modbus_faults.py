"""Modbus devices that answer garbage or too slowly (tests.faults.badmodbus), ROUNDS
times, with a healthy device beside them:

- on the bus: every garbled reply (a wrong function code, a byte count that does not
  match, another transaction's id, random bytes, a cut-off frame) fails its request as
  "device unavailable", never as a value, and the next proper reply is read again;
- end to end (cloudcore, edgecore, mapper-modbus): the garbling and the slow device go
  ``offline`` in the cloud's Device status and stay there while they misbehave, the
  mapper's log says which device and why, the healthy device keeps reporting on time and
  a desired value set for it meanwhile reaches it, the mapper does not crash, and both
  bad devices are ``online`` again once they answer properly.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mappers.modbus.bus import Bus, DeviceUnavailable
from mappers.modbus.codec import RegisterKind
from mappers.modbus.config import TcpEndpoint
from tests.faults.badmodbus import GARBAGE_KINDS, BadModbus, Mode
from tests.faults.support import ROUNDS, schedule
from tests.harness import (
    Cloud,
    Edge,
    command,
    holding_register,
    reported,
    reported_at,
    wait_until,
)
from tests.reliability import record_fault, record_fuzz

DECODED_GARBAGE = ("short byte count", "wrong function code", "random bytes")
"""What the garbling device sends end to end: the first two get through pymodbus' framing
and decode into a reply (which must still not pass for one), random bytes do not.  Every
kind is sent on the bus in the first test."""
TIMEOUT_MS = 500
"""Each device's Modbus response timeout (``configData.timeout``)."""
CYCLE_MS = 1000
"""Collect and report cycle of every property."""


# ---- the bus ------------------------------------------------------------------------


async def test_every_garbled_reply_fails_as_device_unavailable_and_the_bus_recovers() -> None:
    rng = schedule("modbus-garbage-bus")
    tried, wrong = 0, []
    with BadModbus(rng) as dev:
        async with Bus(TcpEndpoint(host="127.0.0.1", port=dev.port, timeout=0.2),
                       reconnect_base=0.01, reconnect_cap=0.05) as bus:
            for i in range(2 * ROUNDS * len(GARBAGE_KINDS)):
                kind = rng.choice([RegisterKind.INPUT, RegisterKind.HOLDING])
                dev.mode = Mode.GARBAGE
                tried += 1
                try:
                    values = await bus.read(1, kind, 0, rng.randint(1, 4))
                    wrong.append(f"request {i}: garbage read as {values}")
                except DeviceUnavailable:
                    pass
                except Exception as exc:  # anything else is a crash of the reader
                    wrong.append(f"request {i}: {exc!r}")
                dev.mode = Mode.OK
                # A stray late frame may still be on the line: the next proper reply wins.
                for _ in range(10):
                    try:
                        got = await bus.read(1, RegisterKind.INPUT, 0, 1)
                        break
                    except DeviceUnavailable:
                        await asyncio.sleep(0.02)
                else:
                    wrong.append(f"request {i}: the bus did not recover")
                    continue
                assert got[0] >= dev.base
    assert set(dev.garbage_sent) == set(GARBAGE_KINDS), dev.garbage_sent
    record_fuzz("modbus replies", tried, len(wrong))
    assert wrong == []


# ---- end to end ---------------------------------------------------------------------


@pytest.fixture
def simulator() -> Iterator[int]:
    """The thermostat simulator (a healthy device), as a process of its own."""
    proc = subprocess.Popen([sys.executable, "-m", "mappers.modbus.simulator", "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on" in line, line
    yield int(line.rsplit(":", 1)[1])
    proc.terminate()
    proc.wait(10)


def _thermostat_model() -> dict[str, Any]:
    return {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
            "metadata": {"name": "thermostat-model", "namespace": "default"},
            "spec": {"protocol": "modbus", "properties": [
                {"name": "temperature", "type": "FLOAT", "accessMode": "ReadOnly"},
                {"name": "setpoint", "type": "INT", "accessMode": "ReadWrite"}]}}


def _counter_model() -> dict[str, Any]:
    return {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
            "metadata": {"name": "counter-model", "namespace": "default"},
            "spec": {"protocol": "modbus", "properties": [
                {"name": "count", "type": "INT", "accessMode": "ReadOnly"}]}}


def _prop(name: str, register: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "collectCycle": CYCLE_MS, "reportCycle": CYCLE_MS,
            "reportToCloud": True,
            "visitors": {"protocolName": "modbus",
                         "configData": {"register": register, "offset": 0, "limit": 1}},
            **extra}


def _device(name: str, model: str, port: int, props: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"deviceModelRef": {"name": model}, "nodeName": "edge-a",
                     "protocol": {"protocolName": "modbus",
                                  "configData": {"ip": "127.0.0.1", "port": port,
                                                 "slaveID": 1, "timeout": TIMEOUT_MS}},
                     "properties": props}}


def _healthy(port: int, setpoint: int) -> dict[str, Any]:
    return _device("healthy", "thermostat-model", port, [
        _prop("temperature", "InputRegister"),
        _prop("setpoint", "HoldingRegister", desired={"value": str(setpoint)})])


def _state(cloud: Cloud, name: str) -> str | None:
    return (cloud.get("Device", name).get("status") or {}).get("state")


@pytest.mark.system
@pytest.mark.slow
def test_a_garbling_and_a_slow_device_go_offline_while_the_healthy_one_keeps_reporting(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
    simulator: int, tmp_path: Path,
) -> None:
    rng = schedule("modbus-bad-devices")
    cloud = cloud_factory().start()
    edge = edge_factory(cloud, "edge-a")
    assert edge.join(cloud.join_token()).returncode == 0
    edge.start()
    mapper_log = tmp_path / "mapper.log"
    with mapper_log.open("ab") as out, \
            BadModbus(random.Random(rng.random()), base=300, kinds=DECODED_GARBAGE) as garbling, \
            BadModbus(random.Random(rng.random()), base=500,
                      slow_seconds=4 * TIMEOUT_MS / 1000) as slow:
        mapper = subprocess.Popen(
            [*command("mapper-modbus"), "--dmi-socket", str(edge.dir / "dmi.sock")],
            stdout=out, stderr=subprocess.STDOUT)
        try:
            for obj in (_thermostat_model(), _counter_model(), _healthy(simulator, 21),
                        _device("garbling", "counter-model", garbling.port,
                                [_prop("count", "InputRegister")]),
                        _device("slow", "counter-model", slow.port,
                                [_prop("count", "InputRegister")])):
                assert cloud.apply(obj).status_code in (200, 201), obj["metadata"]
            writes = _rounds(rng, cloud, simulator, garbling, slow, mapper, mapper_log)
            assert mapper.poll() is None, f"the mapper exited:\n{mapper_log.read_text()}"
            # Over the rounds some garbage decoded far enough to be named as such.
            assert "garbled reply" in mapper_log.read_text(errors="replace"), garbling.garbage_sent
        finally:
            mapper.terminate()
            mapper.wait(10)
    record_fault("modbus-garbage-and-slow-device", 2 * ROUNDS, writes, writes, 0)
    record_fuzz("modbus replies", garbling.garbage_sent.total(), 0)


def _rounds(rng: random.Random, cloud: Cloud, simulator: int, garbling: BadModbus,
            slow: BadModbus, mapper: subprocess.Popen[bytes], log: Path) -> int:
    """The fault rounds; returns how many desired values for the healthy device the API
    acknowledged (each was then seen on the device)."""
    names = ("healthy", "garbling", "slow")
    writes = 0
    for round_no in range(ROUNDS):
        label = f"round {round_no}"
        wait_until(lambda: all(_state(cloud, n) == "online" for n in names), 30,
                   what=f"{label}: every device online")
        for name, dev in (("garbling", garbling), ("slow", slow)):
            wait_until(lambda: int(reported(cloud, name, "count") or 0) >= dev.base,  # noqa: B023
                       20, what=f"{label}: {name} reporting")
        time.sleep(rng.uniform(0.0, 1.0))  # where the fault falls: the fault schedule
        garbling.mode, slow.mode = Mode.GARBAGE, Mode.SLOW
        held = {name: int(reported(cloud, name, "count") or 0) for name in ("garbling", "slow")}
        for name in ("garbling", "slow"):
            wait_until(lambda: _state(cloud, name) == "offline", 20,  # noqa: B023
                       what=f"{label}: {name} offline in the cloud")

        # While they misbehave: they stay offline, the healthy device reports every cycle
        # and a desired value set for it reaches it.
        setpoint = 22 + round_no
        assert cloud.apply(_healthy(simulator, setpoint)).status_code == 200
        writes += 1
        watch_until = time.monotonic() + 4.0
        stale_ms = 0
        while time.monotonic() < watch_until:
            assert _state(cloud, "garbling") == "offline", f"{label}: garbling came back"
            assert _state(cloud, "slow") == "offline", f"{label}: slow came back"
            assert _state(cloud, "healthy") == "online", f"{label}: healthy went offline"
            age = int(time.time() * 1000) - reported_at(cloud, "healthy", "temperature")
            stale_ms = max(stale_ms, age)
            time.sleep(0.25)  # sampling period of the watch, not synchronisation
        # Read every cycle and reported every cycle: a reading is never much older.
        assert stale_ms < 3 * CYCLE_MS + 2000, f"{label}: healthy readings {stale_ms} ms old"
        wait_until(lambda: holding_register(simulator) == setpoint, 15,  # noqa: B023
                   what=f"{label}: setpoint {setpoint} on the healthy device")
        wait_until(lambda: reported(cloud, "healthy", "setpoint") == str(setpoint),  # noqa: B023
                   15, what=f"{label}: reported setpoint {setpoint}")
        text = log.read_text(errors="replace")
        for name, dev, why in (("garbling", garbling, ""),
                               ("slow", slow, f"no valid reply within {TIMEOUT_MS / 1000:g} s")):
            lines = [ln for ln in text.splitlines()
                     if f"device default/{name} unreachable" in ln
                     and f"127.0.0.1:{dev.port}" in ln and why in ln]
            assert lines, f"{label}: no log line says why {name} is offline"
        assert mapper.poll() is None, f"{label}: the mapper exited"

        garbling.mode, slow.mode = Mode.OK, Mode.OK
        for name in ("garbling", "slow"):
            wait_until(lambda: _state(cloud, name) == "online", 30,  # noqa: B023
                       what=f"{label}: {name} online again once it answers properly")
            wait_until(lambda: int(reported(cloud, name, "count") or 0) > held[name],  # noqa: B023
                       20, what=f"{label}: {name} reporting new readings again")
    return writes
