"""Modbus RTU over a socat pseudo-terminal pair: the simulator on one end, a Bus on the other."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from mappers.modbus.bus import Bus, BusUnavailable, DeviceUnavailable, ExceptionReply
from mappers.modbus.codec import RegisterKind
from mappers.modbus.config import Parity, SerialEndpoint, parse_device
from mappers.modbus.points import read_properties, write_property
from tests.integration.mappers.conftest import Simulator

SimFactory = Callable[..., Awaitable[Simulator]]
BAUD = 115200


def rtu_device(port: str) -> dict[str, object]:
    def visitor(**config: object) -> dict[str, object]:
        return {"visitors": {"configData": config}}

    return {
        "protocol": {"protocolName": "modbus", "configData": {
            "communicateMode": "RTU", "serialName": port, "baudRate": BAUD, "dataBits": 8,
            "parity": "None", "stopBits": 1, "slaveID": 1, "timeout": "500ms"}},
        "properties": [
            {"name": "temperature", **visitor(register="InputRegister", offset=0, limit=1,
                                              scale=0.1, dataType="float")},
            {"name": "setpoint", **visitor(register="HoldingRegister", offset=0)},
            {"name": "spare", **visitor(register="HoldingRegister", offset=5, limit=2,
                                        dataType="uint32")},
            {"name": "fan", **visitor(register="CoilRegister", offset=1)},
            {"name": "model", **visitor(register="InputRegister", offset=20, limit=8,
                                        dataType="string")},
        ],
    }


async def test_rtu_reads_and_writes(sim_factory: SimFactory,
                                    pty_pair: tuple[str, str]) -> None:
    device_end, mapper_end = pty_pair
    await sim_factory("--serial", device_end, "--baud", str(BAUD), "--parity", "N")
    cfg = parse_device(rtu_device(mapper_end))
    assert cfg.protocol.endpoint == SerialEndpoint(port=mapper_end, baudrate=BAUD, bytesize=8,
                                                   parity=Parity.NONE, stopbits=1,
                                                   timeout=0.5)
    async with Bus(cfg.protocol.endpoint) as bus:
        values = await read_properties(bus, 1, cfg.properties)
        temperature = values["temperature"]
        assert isinstance(temperature, float) and 15.0 <= temperature <= 30.0
        assert values["setpoint"] == 21
        assert values["spare"] == (5 << 16) | 6  # holding 5..6 hold 5 and 6
        assert values["fan"] is False
        assert values["model"] == "EF-THERMO-1"

        await write_property(bus, 1, cfg.prop("setpoint"), "25")
        await write_property(bus, 1, cfg.prop("spare"), "70000")
        await write_property(bus, 1, cfg.prop("fan"), "on")
        after = await read_properties(bus, 1, cfg.properties)
        assert (after["setpoint"], after["spare"], after["fan"]) == (25, 70000, True)
        assert bus.stats.requests["write_registers"] == 1  # the uint32
        assert bus.stats.requests["write_register"] == 1
        assert bus.stats.requests["write_coil"] == 1
        assert bus.stats.max_in_flight == 1


async def test_rtu_concurrent_requests_and_a_silent_unit(sim_factory: SimFactory,
                                                         pty_pair: tuple[str, str]) -> None:
    device_end, mapper_end = pty_pair
    await sim_factory("--serial", device_end, "--baud", str(BAUD), "--parity", "N")
    endpoint = SerialEndpoint(port=mapper_end, baudrate=BAUD, parity=Parity.NONE, timeout=0.3)
    async with Bus(endpoint) as bus:
        results = await asyncio.gather(
            *(bus.read(1, RegisterKind.HOLDING, 0, 21) for _ in range(20)),
            *(bus.write_registers(1, 10, [i]) for i in range(20)),
            bus.read(1, RegisterKind.HOLDING, 99, 1),
            return_exceptions=True)
        *good, bad = results
        assert [r for r in good if isinstance(r, BaseException)] == []
        assert isinstance(bad, ExceptionReply) and bad.exception_code == 2

        # A slave that is not on the line: a timeout for it, the line stays usable.
        with pytest.raises(DeviceUnavailable) as err:
            await bus.read(7, RegisterKind.HOLDING, 0, 1)
        assert not isinstance(err.value, BusUnavailable)
        assert await bus.read(1, RegisterKind.HOLDING, 10, 1) == [19]


async def test_a_missing_serial_port_is_a_bus_error(tmp_path: object) -> None:
    endpoint = SerialEndpoint(port="/nonexistent/ttyX", baudrate=BAUD, timeout=0.3)
    async with Bus(endpoint) as bus:
        with pytest.raises(BusUnavailable, match="cannot connect"):
            await bus.read(1, RegisterKind.HOLDING, 0, 1)


async def test_line_settings_the_port_refuses_are_a_bus_error_with_backoff(
        pty_pair: tuple[str, str]) -> None:
    # A pseudo-terminal cannot do parity: the port's driver refuses the line settings
    # (as some USB adapters refuse a speed).  The bus reports why and backs off rather
    # than trying to open the port again on every poll.
    _, mapper_end = pty_pair
    endpoint = SerialEndpoint(port=mapper_end, baudrate=BAUD, parity=Parity.EVEN, timeout=0.3)
    async with Bus(endpoint, reconnect_base=60) as bus:
        with pytest.raises(BusUnavailable, match="Invalid argument"):
            await bus.read(1, RegisterKind.HOLDING, 0, 1)
        with pytest.raises(BusUnavailable, match="next connection attempt"):
            await bus.read(1, RegisterKind.HOLDING, 0, 1)
        assert bus.stats.connect_failures == 1
        assert not bus.connected
