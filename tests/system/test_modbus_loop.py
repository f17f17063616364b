"""The full device loop with real processes: cloudcore, edgecore, the Modbus thermostat
simulator and mapper-modbus over DMI (done-when 1 and 2 of the device-plane issue)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pymodbus.client import AsyncModbusTcpClient

from tests.harness import Cloud, Edge, command, wait_until

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
    for twin in (cloud.get("Device", "thermostat-1").get("status") or {}).get("twins") or []:
        if twin["propertyName"] == prop:
            return (twin.get("reported") or {}).get("value")
    return None


def _holding_register(port: int) -> int:
    async def read() -> int:
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2)
        await client.connect()
        try:
            reply = await client.read_holding_registers(0, count=1, device_id=1)
            return int(reply.registers[0])
        finally:
            client.close()
    return asyncio.run(read())


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
        wait_until(lambda: _holding_register(simulator) == 25, 15,
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
