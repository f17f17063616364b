"""The mapper runtime with the real Modbus driver, the real simulator and edgecore's real
DMI server over unix sockets: when devices poll, and what a Device update keeps.

edgecore's side is its ``DmiServer`` over an in-memory backend (the twin and cache it
stands for are tested elsewhere); the driver is the shipped ``ModbusDriver``, which
here also notes when each device's poll starts."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from edgecore.dmi import DmiServer
from mappers.modbus.driver import ModbusDriver, ModbusHandle
from mappers.sdk.dmi import ManagerClient, MapperServer
from mappers.sdk.runtime import MapperRuntime
from tests.integration.mappers.conftest import Simulator, eventually

SimFactory = Callable[..., Awaitable[Simulator]]


def thermostat(name: str, port: int, *, cycle_ms: int,
               setpoint: str | None = None) -> dict[str, Any]:
    setpoint_prop: dict[str, Any] = {
        "name": "setpoint", "collectCycle": cycle_ms, "reportCycle": cycle_ms,
        "reportToCloud": True,
        "visitors": {"protocolName": "modbus",
                     "configData": {"register": "HoldingRegister", "offset": 0}}}
    if setpoint is not None:
        setpoint_prop["desired"] = {"value": setpoint}
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": "edge-1",
            "protocol": {"protocolName": "modbus", "configData": {
                "communicateMode": "TCP", "ip": "127.0.0.1", "port": port, "slaveID": 1,
                "timeout": 1000}},
            "properties": [
                {"name": "temperature", "collectCycle": cycle_ms, "reportCycle": cycle_ms,
                 "reportToCloud": True,
                 "visitors": {"protocolName": "modbus", "configData": {
                     "register": "InputRegister", "offset": 0, "scale": 0.1}}},
                setpoint_prop,
            ],
        },
    }


class Backend:
    """edgecore's side of DMI in memory: the devices it hands out, the states it got."""

    def __init__(self, devices: list[dict[str, Any]]) -> None:
        self.devices = devices
        self.states: list[tuple[str, str]] = []

    def devices_for_protocol(
            self, protocol: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return [d for d in self.devices
                if d["spec"]["protocol"]["protocolName"] == protocol], []

    async def report_status(self, namespace: str, name: str,
                            twins: list[dict[str, Any]]) -> None:
        return None

    async def report_state(self, namespace: str, name: str, state: str) -> None:
        self.states.append((name, state))

    def register_mapper(self, info: dict[str, Any]) -> None:
        return None


class PollClock(ModbusDriver):
    """The shipped driver; it notes (loop time) when each device's poll starts."""

    def __init__(self) -> None:
        super().__init__()
        self.names: dict[int, str] = {}
        self.polls: dict[str, list[float]] = {}

    async def connect(self, device: Mapping[str, Any],
                      model: Mapping[str, Any] | None) -> ModbusHandle:
        handle = await super().connect(device, model)
        self.names[id(handle)] = device["metadata"]["name"]
        return handle

    async def read(self, handle: ModbusHandle,
                   properties: Sequence[str]) -> dict[str, str | Exception]:
        name = self.names[id(handle)]
        self.polls.setdefault(name, []).append(asyncio.get_running_loop().time())
        return await super().read(handle, properties)


@dataclass
class Mapper:
    backend: Backend
    edge: DmiServer
    driver: PollClock
    runtime: MapperRuntime
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # unix socket paths must stay under ~107 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="ef-rt-") as d:
        yield Path(d)


@pytest.fixture
async def start_mapper(short_dir: Path) -> AsyncIterator[Callable[..., Awaitable[Mapper]]]:
    """Start edgecore's DMI server holding ``devices`` and the mapper runtime, which
    registers and gets them all at once (as when mapper-modbus starts)."""
    started: list[Mapper] = []

    async def start(devices: list[dict[str, Any]]) -> Mapper:
        backend = Backend(devices)
        edge = DmiServer(short_dir / "dmi.sock", backend)
        await edge.start()
        driver = PollClock()
        manager = ManagerClient(edge.socket_path, name="modbus", protocol="modbus",
                                address=str(short_dir / "modbus.sock"))
        runtime = MapperRuntime(driver, manager)
        server = MapperServer(short_dir / "modbus.sock", runtime)
        mapper = Mapper(backend, edge, driver, runtime)
        mapper.cleanups += [runtime.stop, lambda: server.stop(0), manager.close,
                            driver.pool.close, lambda: edge.stop(0)]
        started.append(mapper)
        await runtime.start(server)
        return mapper

    yield start
    for mapper in started:
        for cleanup in mapper.cleanups:
            # A stop that never returns fails the test here instead of hanging the run.
            await asyncio.wait_for(cleanup(), 15)


def nearest_other(polls: dict[str, list[float]], since: float) -> list[float]:
    """For every poll after ``since``: how far the nearest poll of another device is."""
    out = []
    for name, times in polls.items():
        others = [t for other, ts in polls.items() if other != name for t in ts]
        out += [min(abs(t - o) for o in others) for t in times if t >= since]
    return out


async def test_devices_on_one_bus_spread_their_polls_over_the_cycle(
        sim_factory: SimFactory, start_mapper: Callable[..., Awaitable[Mapper]]) -> None:
    sim = await sim_factory("--port", "0")
    names = [f"t{i}" for i in range(4)]
    mapper = await start_mapper([thermostat(n, sim.port, cycle_ms=1000) for n in names])
    polls = mapper.driver.polls
    # The first cycle settles the schedule (offsets move while devices arrive); then each
    # device keeps its quarter of the second.
    await eventually(lambda: _true(all(len(polls.get(n, [])) >= 5 for n in names)), 20,
                     what="five polls of every device")
    since = max(times[1] for times in polls.values())
    gaps = nearest_other(polls, since)
    # Spread evenly, a poll's nearest neighbour is 250 ms away; polled together (as
    # without staggering) it would be a few ms.  The median allows for a late wake-up.
    assert statistics.median(gaps) >= 0.15, sorted(gaps)
    for name in names:  # still one poll per cycle per device
        intervals = [b - a for a, b in zip(polls[name][1:], polls[name][2:], strict=False)]
        assert 0.75 <= statistics.median(intervals) <= 1.25, (name, intervals)


async def test_each_bus_is_spread_on_its_own(
        sim_factory: SimFactory, start_mapper: Callable[..., Awaitable[Mapper]]) -> None:
    a, b = await sim_factory("--port", "0"), await sim_factory("--port", "0")
    devices = [thermostat("a0", a.port, cycle_ms=1000), thermostat("a1", a.port, cycle_ms=1000),
               thermostat("b0", b.port, cycle_ms=1000), thermostat("b1", b.port, cycle_ms=1000)]
    mapper = await start_mapper(devices)
    polls = mapper.driver.polls
    await eventually(lambda: _true(all(len(polls.get(d["metadata"]["name"], [])) >= 5
                                       for d in devices)), 20, what="five polls of every device")
    since = max(times[1] for times in polls.values())
    # Two devices per bus: half a second apart on each (one schedule for all four would
    # put a0 and a1 a quarter of a second apart).
    for bus in ("a", "b"):
        gaps = nearest_other({n: t for n, t in polls.items() if n.startswith(bus)}, since)
        assert statistics.median(gaps) >= 0.4, (bus, sorted(gaps))


async def test_an_update_writes_the_new_setpoint_at_once_on_the_same_connection(
        sim_factory: SimFactory, start_mapper: Callable[..., Awaitable[Mapper]]) -> None:
    sim = await sim_factory("--port", "0")
    # A long cycle: the write must not wait for the device's next place in the schedule.
    device = thermostat("t0", sim.port, cycle_ms=30_000, setpoint="22")
    mapper = await start_mapper([device])
    await eventually(lambda: holding_register(sim.port, 0, expect=22), 10,
                     what="the first desired setpoint on the device")
    [bus] = mapper.driver.pool.buses.values()

    client = mapper.edge.mapper("modbus")
    assert client is not None
    assert await client.update_device(thermostat("t0", sim.port, cycle_ms=30_000,
                                                 setpoint="26"))
    await eventually(lambda: holding_register(sim.port, 0, expect=26), 10,
                     what="the updated desired setpoint on the device")
    # The device kept its bus and the bus its connection.
    assert list(mapper.driver.pool.buses.values()) == [bus]
    assert bus.stats.connects == 1


async def holding_register(port: int, address: int, *, expect: int) -> bool:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2)
    try:
        assert await client.connect()
        reply = await client.read_holding_registers(address, count=1, device_id=1)
        return not reply.isError() and reply.registers[0] == expect
    finally:
        client.close()


async def _true(value: bool) -> bool:
    return value
