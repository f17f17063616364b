"""Bus, points and simulator together over real Modbus TCP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from mappers.modbus.bus import (
    Bus,
    BusPool,
    BusUnavailable,
    DeviceUnavailable,
    ExceptionReply,
)
from mappers.modbus.codec import CodecError, RegisterKind
from mappers.modbus.config import DeviceConfig, TcpEndpoint, parse_device, parse_protocol
from mappers.modbus.points import ReadOnlyProperty, read_properties, write_property
from tests.integration.mappers.conftest import Simulator, eventually

SimFactory = Callable[..., Awaitable[Simulator]]
IN, HOLD, COIL = RegisterKind.INPUT, RegisterKind.HOLDING, RegisterKind.COIL


def visitor(**config: Any) -> dict[str, Any]:
    return {"visitors": {"protocolName": "modbus", "configData": config}}


def thermostat(port: int, timeout_ms: int = 1000) -> DeviceConfig:
    """The simulator described the way a user would write its Device and DeviceModel."""
    model = {"protocol": "modbus", "properties": [
        {"name": "temperature", "type": "FLOAT", "accessMode": "ReadOnly"},
        {"name": "setpoint", "type": "INT", "accessMode": "ReadWrite"},
        {"name": "relay", "type": "BOOLEAN", "accessMode": "ReadOnly"},
    ]}
    device = {
        "protocol": {"protocolName": "modbus", "configData": {
            "communicateMode": "TCP", "ip": "127.0.0.1", "port": port, "slaveID": 1,
            "timeout": timeout_ms}},
        "properties": [
            {"name": "temperature", **visitor(register="InputRegister", offset=0, limit=1,
                                              scale=0.1)},
            {"name": "temperatureF32", **visitor(register="InputRegister", offset=2,
                                                 dataType="float32")},
            {"name": "model", **visitor(register="InputRegister", offset=20, limit=8,
                                        dataType="string")},
            {"name": "setpoint", **visitor(register="HoldingRegister", offset=0)},
            {"name": "relay", **visitor(register="CoilRegister", offset=0)},
            {"name": "sensorOk", **visitor(register="DiscreteInputRegister", offset=0)},
        ],
    }
    return parse_device(device, model)


async def test_reads_every_kind_of_property_from_the_thermostat(sim_factory: SimFactory) -> None:
    sim = await sim_factory("--port", "0")
    cfg = thermostat(sim.port)
    async with Bus(cfg.protocol.endpoint) as bus:
        values = await read_properties(bus, 1, cfg.properties)
    temperature = values["temperature"]
    assert isinstance(temperature, float) and 15.0 <= temperature <= 30.0
    temp32 = values["temperatureF32"]
    assert isinstance(temp32, float) and 15.0 <= temp32 <= 30.0
    assert values["model"] == "EF-THERMO-1"
    assert values["setpoint"] == 21
    assert isinstance(values["relay"], bool)
    assert values["sensorOk"] is True


async def test_write_setpoint_read_it_back_and_the_relay_follows(
        sim_factory: SimFactory) -> None:
    sim = await sim_factory("--port", "0")
    cfg = thermostat(sim.port)
    setpoint, relay = cfg.prop("setpoint"), cfg.prop("relay")

    async def relay_is(expected: bool) -> bool:
        return (await read_properties(bus, 1, [relay]))["relay"] is expected

    async with Bus(cfg.protocol.endpoint) as bus:
        await write_property(bus, 1, setpoint, "31")  # above anything the walk reaches
        assert (await read_properties(bus, 1, [setpoint]))["setpoint"] == 31
        await eventually(lambda: relay_is(True), what="relay on below the setpoint")
        await write_property(bus, 1, setpoint, "14")
        assert await bus.read(1, HOLD, 0, 1) == [14]
        await eventually(lambda: relay_is(False), what="relay off above the setpoint")
        assert bus.stats.requests["write_register"] == 2


async def test_writes_that_cannot_be_made_are_refused_before_the_bus(
        sim_factory: SimFactory) -> None:
    sim = await sim_factory("--port", "0")
    cfg = thermostat(sim.port)
    async with Bus(cfg.protocol.endpoint) as bus:
        with pytest.raises(ReadOnlyProperty, match="ReadOnly"):
            await write_property(bus, 1, cfg.prop("relay"), "true")
        with pytest.raises(ReadOnlyProperty, match="read-only table"):
            await write_property(bus, 1, cfg.prop("model"), "X")
        with pytest.raises(CodecError, match="out of range for int16"):
            await write_property(bus, 1, cfg.prop("setpoint"), "40000")
        assert bus.stats.requests_sent == 0


async def test_200_concurrent_requests_all_succeed_one_at_a_time(
        sim_factory: SimFactory) -> None:
    sim = await sim_factory("--port", "0", "--latency-ms", "1")
    async with Bus(TcpEndpoint(host="127.0.0.1", port=sim.port, timeout=2)) as bus:
        calls: list[Awaitable[Any]] = []
        for i in range(200):
            match i % 4:
                case 0:
                    calls.append(bus.read(1, IN, 0, 1))
                case 1:
                    calls.append(bus.read(1, HOLD, 0, 21))
                case 2:
                    calls.append(bus.write_registers(1, 1 + i % 20, [i]))
                case _:
                    calls.append(bus.write_coil(1, 1 + i % 7, i % 2 == 1))
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert [r for r in results if isinstance(r, BaseException)] == []
        assert bus.stats.requests_sent == 200
        assert bus.stats.max_in_flight == 1
        served, most_at_once = await bus.read(1, IN, 8, 2)
    assert served == 201  # the 200 and the diagnostics read itself
    assert most_at_once == 1  # the server never saw two requests overlap


async def test_the_simulator_does_see_overlap_from_independent_clients(
        sim_factory: SimFactory) -> None:
    """The check above would catch interleaving: two clients that do not share a queue
    are seen overlapping by the same server-side counter."""
    sim = await sim_factory("--port", "0", "--latency-ms", "100")
    clients = [AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=2) for _ in range(2)]
    try:
        for c in clients:
            assert await c.connect()
        await asyncio.gather(*(c.read_holding_registers(0, count=1, device_id=1)
                               for c in clients))
        reply = await clients[0].read_input_registers(9, count=1, device_id=1)
        assert reply.registers == [2]
    finally:
        for c in clients:
            c.close()


async def test_queued_writes_go_before_queued_polls(sim_factory: SimFactory) -> None:
    sim = await sim_factory("--port", "0", "--latency-ms", "50")
    async with Bus(TcpEndpoint(host="127.0.0.1", port=sim.port, timeout=2)) as bus:
        finished: list[str] = []

        async def run(name: str, call: Awaitable[Any]) -> None:
            await call
            finished.append(name)

        first = asyncio.create_task(run("poll0", bus.read(1, IN, 0, 1)))
        await eventually(lambda: _true_if(bus.stats.in_flight == 1), what="poll0 sent")
        later = [asyncio.create_task(run(f"poll{i}", bus.read(1, HOLD, 0, 1)))
                 for i in (1, 2, 3)]
        later.append(asyncio.create_task(run("write", bus.write_registers(1, 0, [22]))))
        await asyncio.gather(first, *later)
    assert finished == ["poll0", "write", "poll1", "poll2", "poll3"]


async def _true_if(condition: bool) -> bool:
    return condition


async def test_an_exception_reply_fails_only_its_request(sim_factory: SimFactory) -> None:
    sim = await sim_factory("--port", "0")
    cfg = thermostat(sim.port)
    async with Bus(cfg.protocol.endpoint) as bus:
        bad, temp, setpoint = await asyncio.gather(
            bus.read(1, HOLD, 100, 1), bus.read(1, IN, 0, 1), bus.read(1, HOLD, 0, 1),
            return_exceptions=True)
        assert isinstance(bad, ExceptionReply) and bad.exception_code == 2
        assert "illegal data address" in str(bad)
        assert isinstance(temp, list) and isinstance(setpoint, list)
        assert bus.stats.exception_replies == 1


async def test_a_hole_in_a_coalesced_read_fails_only_the_property_on_it(
        sim_factory: SimFactory) -> None:
    sim = await sim_factory("--port", "0")
    cfg = thermostat(sim.port)
    hole = parse_device({
        "protocol": {"configData": {"ip": "127.0.0.1", "port": sim.port}},
        "properties": [{"name": "hole", **visitor(register="InputRegister", offset=1)}],
    }).prop("hole")
    props = [cfg.prop("temperature"), hole, cfg.prop("temperatureF32")]
    async with Bus(cfg.protocol.endpoint) as bus:
        values = await read_properties(bus, 1, props)  # one read of input 0..3, then singles
        assert bus.stats.requests["read_input_registers"] == 4
    assert isinstance(values["hole"], ExceptionReply)
    assert isinstance(values["temperature"], float)
    assert isinstance(values["temperatureF32"], float)


async def test_a_unit_that_does_not_answer_is_unavailable_and_others_still_work(
        sim_factory: SimFactory) -> None:
    sim = await sim_factory("--port", "0")
    async with Bus(TcpEndpoint(host="127.0.0.1", port=sim.port, timeout=0.3)) as bus:
        with pytest.raises(DeviceUnavailable) as err:
            await bus.read(2, HOLD, 0, 1)
        assert not isinstance(err.value, BusUnavailable)
        assert await bus.read(1, HOLD, 0, 1) == [21]


async def test_a_silent_device_fails_the_rest_of_its_poll_at_once(
        sim_factory: SimFactory) -> None:
    sim = await sim_factory("--port", "0")
    cfg = thermostat(sim.port, timeout_ms=300)
    async with Bus(cfg.protocol.endpoint) as bus:
        assert await bus.read(1, HOLD, 0, 1) == [21]
        await sim.toggle_mute("muted")
        sent = bus.stats.requests_sent
        values = await read_properties(bus, 1, cfg.properties)  # five reads planned
        assert all(isinstance(v, DeviceUnavailable) for v in values.values()), values
        assert bus.stats.requests_sent == sent + 1
        await sim.toggle_mute("unmuted")
        assert await eventually(lambda: bus.read(1, HOLD, 0, 1), what="answers again") == [21]


async def test_a_dead_endpoint_fails_fast_and_the_bus_recovers_on_restart(
        sim_factory: SimFactory) -> None:
    sim = await sim_factory("--port", "0")
    port = sim.port
    async with Bus(TcpEndpoint(host="127.0.0.1", port=port, timeout=1),
                   reconnect_base=0.2, reconnect_cap=0.4) as bus:
        assert await bus.read(1, HOLD, 0, 1) == [21]
        await sim.kill()

        async def bus_down() -> bool:
            try:
                await bus.read(1, HOLD, 0, 1)
            except BusUnavailable:
                return True
            except DeviceUnavailable:  # the request in flight when the link dropped
                return False
            raise AssertionError("a killed simulator answered")

        await eventually(bus_down, what="bus unavailable")
        assert not bus.connected
        started = time.monotonic()
        with pytest.raises(BusUnavailable):  # inside the backoff: no connection attempt
            await bus.read(1, HOLD, 0, 1)
        assert time.monotonic() - started < 0.1
        failures = bus.stats.connect_failures
        assert failures >= 1

        await sim_factory("--port", str(port))
        assert await eventually(lambda: bus.read(1, HOLD, 0, 1), what="recovery") == [21]
        assert bus.connected
        assert bus.stats.connects == 2


async def test_pool_shares_one_bus_per_endpoint_and_closes_it_with_the_last_user(
        sim_factory: SimFactory) -> None:
    sim = await sim_factory("--port", "0")
    unit1 = parse_protocol({"ip": "127.0.0.1", "port": sim.port, "slaveID": 1})
    unit2 = parse_protocol({"ip": "127.0.0.1", "port": str(sim.port), "slaveID": 2})
    pool = BusPool()
    try:
        bus = pool.acquire(unit1)
        assert pool.acquire(unit2) is bus
        assert await bus.read(1, HOLD, 0, 1) == [21]
        await pool.release(unit1)
        assert bus.connected and len(pool.buses) == 1
        await pool.release(unit2)
        assert not bus.connected and pool.buses == {}
        with pytest.raises(BusUnavailable, match="closed"):
            await bus.read(1, HOLD, 0, 1)
    finally:
        await pool.close()


async def test_mute_after_silences_the_simulator_until_sigusr1(sim_factory: SimFactory) -> None:
    sim = await sim_factory("--port", "0", "--mute-after", "0")
    await sim.wait_line("muted")
    async with Bus(TcpEndpoint(host="127.0.0.1", port=sim.port, timeout=0.3)) as bus:
        with pytest.raises(DeviceUnavailable):
            await bus.read(1, HOLD, 0, 1)
        await sim.toggle_mute("unmuted")
        assert await eventually(lambda: bus.read(1, HOLD, 0, 1), what="answers again") == [21]
