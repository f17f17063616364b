"""The device loop over Modbus RTU with real processes: the thermostat simulator on one
end of a serial line (a socat pty pair), mapper-modbus on the other, edgecore and
cloudcore; the Device is KubeEdge's example with RTU protocol configData."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import Cloud, Edge, command, reported, wait_until

pytestmark = pytest.mark.system

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "thermostat.yaml"
BAUD = 19200  # a pty ignores the speed, and refuses parity: the line runs 8N1


@dataclass
class RtuThermostat:
    proc: subprocess.Popen[bytes]
    log: Path
    mapper_end: str  # the serial port the mapper opens

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def rtu_thermostat(pty_pair: tuple[str, str], tmp_path: Path) -> Iterator[RtuThermostat]:
    device_end, mapper_end = pty_pair
    log = tmp_path / "simulator.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mappers.modbus.simulator", "--serial", device_end,
             "--baudrate", str(BAUD), "--parity", "N", "--stopbits", "1"],
            stdout=out, stderr=subprocess.STDOUT)
    sim = RtuThermostat(proc, log, mapper_end)
    try:
        wait_until(lambda: proc.poll() is None and "listening on" in sim.output(), 15,
                   what=f"the RTU simulator serving (log {log})")
        yield sim
    finally:
        proc.terminate()
        proc.wait(10)


def _rtu_thermostat(serial_port: str) -> list[dict[str, Any]]:
    """The example DeviceModel and Device, the Device moved to a serial line as a KubeEdge
    user writes it (configData keys of the kubeedge/examples Modbus mapper)."""
    docs = list(yaml.safe_load_all(EXAMPLE.read_text()))
    for doc in docs:
        if doc["kind"] == "Device":
            doc["spec"]["nodeName"] = "edge-a"
            doc["spec"]["protocol"]["configData"] = {
                "communicateMode": "RTU", "serialPort": serial_port, "baudRate": BAUD,
                "dataBits": 8, "parity": "None", "stopBits": 1, "slaveID": 1}
    return docs


def _state(cloud: Cloud) -> str | None:
    return (cloud.get("Device", "thermostat-1").get("status") or {}).get("state")


def test_an_rtu_thermostat_reports_to_the_cloud_and_takes_a_setpoint(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
    rtu_thermostat: RtuThermostat, tmp_path: Path,
) -> None:
    cloud = cloud_factory().start()
    edge = edge_factory(cloud, "edge-a")
    assert edge.join(cloud.join_token()).returncode == 0
    edge.start()
    mapper_log = tmp_path / "mapper.log"
    with mapper_log.open("ab") as out:
        mapper = subprocess.Popen(
            [*command("mapper-modbus"), "--dmi-socket", str(edge.dir / "dmi.sock")],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        for doc in _rtu_thermostat(rtu_thermostat.mapper_end):
            assert cloud.apply(doc).status_code in (200, 201), doc["kind"]
        # Collect and report cycles are 2 s; the deadlines leave room for a busy machine.
        wait_until(lambda: reported(cloud, "thermostat-1", "temperature") not in (None, ""),
                   30, what=f"the reported temperature in the cloud (mapper log {mapper_log})")
        assert 15 <= float(reported(cloud, "thermostat-1", "temperature") or 0) <= 30
        wait_until(lambda: reported(cloud, "thermostat-1", "setpoint") == "21", 30,
                   what="the desired setpoint 21 written and reported")
        assert _state(cloud) == "online"

        efctl = subprocess.run(
            [*command("efctl"), "--config", str(cloud.efctl_config), "twin", "set",
             "thermostat-1", "setpoint=25"], capture_output=True, text=True, timeout=30)
        assert efctl.returncode == 0, efctl.stderr
        # Only the mapper can talk on its end of the line: the simulator says what its
        # holding register now holds.
        wait_until(lambda: "setpoint 25" in rtu_thermostat.output(), 30,
                   what="the simulator's setpoint register to hold 25")
        wait_until(lambda: reported(cloud, "thermostat-1", "setpoint") == "25", 30,
                   what="reported setpoint 25 in the cloud")
        assert _state(cloud) == "online"

        # The thermostat falls silent on the line (SIGUSR1 mutes the simulator): the
        # mapper times out, the device goes offline; it answers again: online.
        rtu_thermostat.proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: _state(cloud) == "offline", 30, what="the device offline")
        rtu_thermostat.proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: _state(cloud) == "online", 30, what="the device online again")
        assert rtu_thermostat.output().splitlines()[-2:] == ["muted", "unmuted"]
    finally:
        mapper.terminate()
        mapper.wait(10)
