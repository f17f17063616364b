"""DMI v1beta1 end to end: edgecore's DmiServer and the mapper SDK over real unix
sockets with real grpc.aio on both sides.

The backend below is an in-memory implementation of edgecore's DmiBackend (the twin
and cache it stands for are separate components); the mapper-side handler records what
edgecore sent it."""

from __future__ import annotations

import asyncio
import logging
import socket
import stat
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from edgecore.dmi import DmiServer
from mappers.sdk.dmi import EdgecoreUnavailable, ManagerClient, MapperServer, ModelOp
from protocol.dmi.v1beta1 import api_pb2
from protocol.errors import BadRequest, EdgefleetError, InvalidObject, NotFound, RateLimited


def device(name: str, protocol: str = "modbus", model: str = "temp-model") -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "7"},
        "spec": {
            "deviceModelRef": {"name": model},
            "nodeName": "edge-1",
            "protocol": {"protocolName": protocol, "configData": {"ip": "10.0.0.5"}},
            "properties": [{"name": "temperature", "reportCycle": 1000,
                            "desired": {"value": "30"}}],
        },
    }


MODEL: dict[str, Any] = {
    "apiVersion": "devices.kubeedge.io/v1beta1",
    "kind": "DeviceModel",
    "metadata": {"name": "temp-model", "namespace": "default"},
    "spec": {
        "protocol": "modbus",
        "protocolConfigData": {"port": 502},
        "properties": [{"name": "temperature", "type": "INT", "accessMode": "ReadWrite",
                        "visitors": {"configData": {"register": "HoldingRegister",
                                                    "offset": 2}}}],
    },
}

TWIN = {"propertyName": "temperature",
        "reported": {"value": "29", "metadata": {"type": "int", "timestamp": "1700000000000"}},
        "observedDesired": {"value": "30"}}


class Backend:
    """An in-memory DmiBackend."""

    def __init__(self, devices: list[dict[str, Any]], models: list[dict[str, Any]]) -> None:
        self.devices = devices
        self.models = models
        self.registered: list[dict[str, Any]] = []
        self.statuses: list[tuple[str, str, list[dict[str, Any]]]] = []
        self.states: list[tuple[str, str, str]] = []
        self.fail: EdgefleetError | None = None
        self.gate: asyncio.Event | None = None  # when set, reports wait for it
        self.waiting = 0

    def devices_for_protocol(
        self, protocol: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        mine = [d for d in self.devices if d["spec"]["protocol"]["protocolName"] == protocol]
        refs = {d["spec"]["deviceModelRef"]["name"] for d in mine}
        return mine, [m for m in self.models if m["metadata"]["name"] in refs]

    async def report_status(self, namespace: str, name: str, twins: list[dict[str, Any]]) -> None:
        if self.gate is not None:
            self.waiting += 1
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.statuses.append((namespace, name, twins))

    async def report_state(self, namespace: str, name: str, state: str) -> None:
        if self.fail is not None:
            raise self.fail
        self.states.append((namespace, name, state))

    def register_mapper(self, info: dict[str, Any]) -> None:
        self.registered = [m for m in self.registered if m["protocol"] != info["protocol"]]
        self.registered.append(info)


class Handler:
    """A mapper's DeviceHandler that records every call."""

    def __init__(self) -> None:
        self.calls: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self.devices: dict[tuple[str, str], dict[str, Any]] = {}
        self.refuse = False
        self.hold: asyncio.Event | None = None

    async def on_register_device(self, device: dict[str, Any]) -> None:
        if self.hold is not None:
            await self.hold.wait()
        if self.refuse:
            raise InvalidObject("unknown register", field="spec.properties[0].visitors")
        meta = device["metadata"]
        self.devices[(meta["namespace"], meta["name"])] = device
        await self.calls.put(("register", device))

    async def on_update_device(self, device: dict[str, Any]) -> None:
        await self.calls.put(("update", device))

    async def on_remove_device(self, namespace: str, name: str) -> None:
        self.devices.pop((namespace, name), None)
        await self.calls.put(("remove", namespace, name))

    async def on_model(self, op: ModelOp, namespace: str, name: str,
                       model: dict[str, Any] | None) -> None:
        await self.calls.put(("model", op, namespace, name, model))

    def get_device(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.devices.get((namespace, name))


@dataclass
class Rig:
    tmp: Path
    backend: Backend
    edge: DmiServer
    handler: Handler
    mapper_server: MapperServer
    client: ManagerClient


async def next_call(handler: Handler) -> tuple[Any, ...]:
    return await asyncio.wait_for(handler.calls.get(), 5)


@pytest.fixture
def short_tmp(tmp_path: Path) -> Iterator[Path]:
    # unix socket paths are limited to ~107 bytes; pytest's tmp_path can be long.
    assert len(str(tmp_path)) < 80
    yield tmp_path


@pytest.fixture
async def rig(short_tmp: Path) -> AsyncIterator[Rig]:
    backend = Backend([device("d1"), device("d2"), device("o1", protocol="opcua")], [MODEL])
    edge = DmiServer(short_tmp / "edge" / "dmi.sock", backend)
    await edge.start()
    handler = Handler()
    mapper_server = MapperServer(short_tmp / "m" / "modbus.sock", handler)
    await mapper_server.start()
    client = ManagerClient(edge.socket_path, name="modbus-mapper", protocol="modbus",
                           address=mapper_server.address, version="0.1")
    rig = Rig(short_tmp, backend, edge, handler, mapper_server, client)
    yield rig
    await rig.client.close()
    await rig.mapper_server.stop(0)
    await rig.edge.stop(0)  # a test may have replaced it


# --- mapper -> edgecore ----------------------------------------------------------------


async def test_a_mapper_registers_and_gets_its_devices_with_model_defaults(rig: Rig) -> None:
    devices, models = await rig.client.register()
    assert sorted(d["metadata"]["name"] for d in devices) == ["d1", "d2"]
    d1 = next(d for d in devices if d["metadata"]["name"] == "d1")
    assert d1["spec"]["protocol"]["configData"] == {"ip": "10.0.0.5", "port": 502}
    assert d1["spec"]["properties"][0]["visitors"]["configData"] == {
        "register": "HoldingRegister", "offset": 2}
    assert d1["spec"]["deviceModelRef"] == {"name": "temp-model"}
    assert [m["metadata"]["name"] for m in models] == ["temp-model"]
    assert rig.backend.registered == [{
        "name": "modbus-mapper", "version": "0.1", "api_version": "v1beta1",
        "protocol": "modbus", "address": rig.mapper_server.address, "state": ""}]
    assert rig.edge.mapper("modbus") is not None


async def test_without_data_the_registration_returns_nothing(rig: Rig) -> None:
    assert await rig.client.register(with_data=False) == ([], [])
    assert len(rig.backend.registered) == 1


async def test_an_empty_protocol_is_rejected(rig: Rig) -> None:
    client = ManagerClient(rig.edge.socket_path, name="x", protocol="",
                           address=rig.mapper_server.address)
    try:
        with pytest.raises(BadRequest, match="protocol"):
            await client.register()
    finally:
        await client.close()
    assert rig.backend.registered == []
    assert rig.edge.mappers == {}


async def test_reported_twins_reach_the_backend(rig: Rig) -> None:
    await rig.client.register()
    await rig.client.report_status("default", "d1", [TWIN])
    assert rig.backend.statuses == [("default", "d1", [TWIN])]


async def test_an_empty_namespace_means_default(rig: Rig) -> None:
    await rig.client.report_status("", "d1", [TWIN])
    await rig.client.report_state("", "d1", "online")
    assert rig.backend.statuses[0][:2] == ("default", "d1")
    assert rig.backend.states == [("default", "d1", "online")]


async def test_reported_states_reach_the_backend(rig: Rig) -> None:
    await rig.client.report_state("default", "d1", "ONLINE")
    assert rig.backend.states == [("default", "d1", "ONLINE")]


async def test_a_report_without_twins_is_rejected(rig: Rig) -> None:
    with pytest.raises(BadRequest, match="no twins"):
        await rig.client.report_status("default", "d1", [])
    with pytest.raises(BadRequest, match="propertyName"):
        await rig.client.report_status("default", "d1", [{"propertyName": "",
                                                          "reported": {"value": "1"}}])
    assert rig.backend.statuses == []


async def test_backend_errors_reach_the_mapper_typed(rig: Rig) -> None:
    rig.backend.fail = NotFound("device default/ghost not found")
    with pytest.raises(NotFound, match="ghost"):
        await rig.client.report_status("default", "ghost", [TWIN])
    rig.backend.fail = InvalidObject("bad value", field="twin.temperature")
    with pytest.raises(BadRequest, match="bad value"):
        await rig.client.report_state("default", "d1", "on")


async def test_an_unexpected_backend_failure_is_internal_not_a_hang(rig: Rig) -> None:
    class Broken(Backend):
        async def report_state(self, namespace: str, name: str, state: str) -> None:
            raise ValueError("bug")

    edge = DmiServer(rig.tmp / "e2" / "dmi.sock", Broken([], []))
    await edge.start()
    client = ManagerClient(edge.socket_path, name="m", protocol="modbus", address="/x")
    try:
        with pytest.raises(EdgefleetError, match="INTERNAL"):
            await client.report_state("default", "d1", "online")
    finally:
        await client.close()
        await edge.stop(0)


# --- edgecore -> mapper ----------------------------------------------------------------


async def test_device_and_model_calls_reach_the_mapper(rig: Rig) -> None:
    await rig.client.register(with_data=False)
    mapper = rig.edge.mapper("modbus")
    assert mapper is not None

    assert await mapper.register_device(device("d3"), MODEL)
    op, sent = await next_call(rig.handler)
    assert op == "register" and sent["metadata"] == {"name": "d3", "namespace": "default"}
    assert sent["spec"]["protocol"]["configData"] == {"ip": "10.0.0.5", "port": 502}

    changed = device("d3")
    changed["spec"]["properties"][0]["desired"]["value"] = "35"
    assert await mapper.update_device(changed, MODEL)
    op, sent = await next_call(rig.handler)
    assert op == "update" and sent["spec"]["properties"][0]["desired"]["value"] == "35"

    got = await mapper.get_device("default", "d3")
    assert got is not None and got["metadata"]["name"] == "d3"

    assert await mapper.remove_device("default", "d3")
    assert await next_call(rig.handler) == ("remove", "default", "d3")
    assert await mapper.get_device("default", "d3") is None

    assert await mapper.create_device_model(MODEL)
    op, kind, ns, name, model = await next_call(rig.handler)
    assert (kind, ns, name) == ("create", "default", "temp-model")
    assert model["spec"]["properties"][0]["type"] == "INT"
    assert await mapper.update_device_model(MODEL)
    assert (await next_call(rig.handler))[1] == "update"
    assert await mapper.remove_device_model("default", "temp-model")
    assert await next_call(rig.handler) == ("model", "remove", "default", "temp-model", None)


async def test_mapper_failures_are_logged_not_raised(rig: Rig,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    await rig.client.register(with_data=False)
    mapper = rig.edge.mapper("modbus")
    assert mapper is not None
    rig.handler.refuse = True
    with caplog.at_level(logging.WARNING, logger="edgecore.dmi"):
        assert await mapper.register_device(device("d9")) is False
    assert "INVALID_ARGUMENT" in caplog.text and "visitors" in caplog.text

    await rig.mapper_server.stop(0)  # the mapper goes away
    started = time.monotonic()
    assert await mapper.remove_device("default", "d9") is False
    assert await mapper.get_device("default", "d9") is None
    assert time.monotonic() - started < 5


async def test_calls_to_a_hung_mapper_end_at_the_deadline(short_tmp: Path) -> None:
    backend = Backend([], [])
    edge = DmiServer(short_tmp / "edge" / "dmi.sock", backend, call_timeout=0.5)
    await edge.start()
    handler = Handler()
    handler.hold = asyncio.Event()  # never set: the mapper hangs
    mapper_server = MapperServer(short_tmp / "m" / "hang.sock", handler)
    await mapper_server.start()
    client = ManagerClient(edge.socket_path, name="h", protocol="hang",
                           address=mapper_server.address)
    try:
        await client.register(with_data=False)
        mapper = edge.mapper("hang")
        assert mapper is not None
        started = time.monotonic()
        assert await mapper.register_device(device("d1", protocol="hang")) is False
        assert 0.4 < time.monotonic() - started < 5
    finally:
        handler.hold.set()
        await client.close()
        await mapper_server.stop(0)
        await edge.stop(0)


# --- sockets ------------------------------------------------------------------------------


async def test_both_sockets_are_private(rig: Rig) -> None:
    for path in (rig.edge.socket_path, rig.mapper_server.socket_path):
        mode = path.lstat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


async def test_a_stale_socket_is_replaced_and_a_live_one_is_not(short_tmp: Path) -> None:
    path = short_tmp / "dmi.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: what a crash leaves behind
    backend = Backend([device("d1")], [MODEL])
    edge = DmiServer(path, backend)
    await edge.start()
    try:
        other = DmiServer(path, backend)
        with pytest.raises(RuntimeError, match="another process"):
            await other.start()
        client = ManagerClient(path, name="m", protocol="modbus", address="/nowhere.sock")
        try:
            devices, _ = await client.register()
        finally:
            await client.close()
        assert [d["metadata"]["name"] for d in devices] == ["d1"]
    finally:
        await edge.stop(0)
    assert not path.exists()


async def test_a_regular_file_in_the_way_is_not_deleted(short_tmp: Path) -> None:
    path = short_tmp / "dmi.sock"
    path.write_text("precious")
    with pytest.raises(RuntimeError, match="not a socket"):
        await DmiServer(path, Backend([], [])).start()
    assert path.read_text() == "precious"


# --- load -------------------------------------------------------------------------------


async def test_a_flood_of_reports_never_hangs_and_registration_still_answers(rig: Rig) -> None:
    await rig.client.register(with_data=False)
    total, workers = 5000, 20
    outcomes: dict[str, int] = {"ok": 0, "limited": 0}
    halfway = asyncio.Event()

    async def flood(worker: int) -> None:
        for i in range(worker, total, workers):
            try:
                await rig.client.report_status("default", f"d{i % 50}", [TWIN])
                outcomes["ok"] += 1
            except RateLimited:
                outcomes["limited"] += 1
            if outcomes["ok"] + outcomes["limited"] >= total // 10:
                halfway.set()

    tasks = [asyncio.create_task(flood(w)) for w in range(workers)]
    await asyncio.wait_for(halfway.wait(), 30)
    other = ManagerClient(rig.edge.socket_path, name="opcua-mapper", protocol="opcua",
                          address=str(rig.tmp / "opcua.sock"))
    try:
        devices, _ = await asyncio.wait_for(other.register(max_attempts=1), 5)
        answered_during_flood = outcomes["ok"] + outcomes["limited"] < total
    finally:
        await other.close()
    assert [d["metadata"]["name"] for d in devices] == ["o1"]
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    assert outcomes["ok"] + outcomes["limited"] == total
    assert outcomes["ok"] == len(rig.backend.statuses)
    assert answered_during_flood


async def test_a_runaway_mapper_is_throttled_without_starving_another(short_tmp: Path) -> None:
    backend = Backend([device("d1"), device("o1", protocol="opcua")], [MODEL])
    # A frozen clock: buckets never refill, so the outcome is exact.
    edge = DmiServer(short_tmp / "edge" / "dmi.sock", backend, report_rate=1.0,
                     report_burst=100, clock=lambda: 0.0)
    await edge.start()
    modbus = ManagerClient(edge.socket_path, name="a", protocol="modbus", address="/a.sock")
    opcua = ManagerClient(edge.socket_path, name="b", protocol="opcua", address="/b.sock")
    try:
        await modbus.register()
        await opcua.register()
        results = await asyncio.gather(
            *(modbus.report_status("default", "d1", [TWIN]) for _ in range(150)),
            return_exceptions=True)
        assert results.count(None) == 100
        assert all(isinstance(r, RateLimited) for r in results if r is not None)
        await opcua.report_status("default", "o1", [TWIN])  # its own bucket is full
    finally:
        await modbus.close()
        await opcua.close()
        await edge.stop(0)


async def test_concurrent_rpcs_beyond_the_bound_are_refused_not_queued(short_tmp: Path) -> None:
    backend = Backend([], [])
    backend.gate = asyncio.Event()  # reports wait here: a slow backend
    edge = DmiServer(short_tmp / "edge" / "dmi.sock", backend, max_concurrent=2)
    await edge.start()
    client = ManagerClient(edge.socket_path, name="a", protocol="modbus", address="/a.sock")
    try:
        slow = [asyncio.create_task(client.report_status("default", "d1", [TWIN]))
                for _ in range(2)]
        deadline = time.monotonic() + 5
        while backend.waiting < 2:
            assert time.monotonic() < deadline, "the two reports never reached the backend"
            await asyncio.sleep(0.01)
        with pytest.raises(RateLimited, match=r"(?i)concurrent"):
            await client.report_status("default", "d1", [TWIN])
        backend.gate.set()
        await asyncio.wait_for(asyncio.gather(*slow), 5)
    finally:
        backend.gate.set()
        await client.close()
        await edge.stop(0)


# --- restarts ---------------------------------------------------------------------------


async def test_known_mappers_are_redialled_after_a_restart(rig: Rig) -> None:
    await rig.client.register(with_data=False)
    await rig.edge.stop(0)
    assert not rig.edge.socket_path.exists()

    again = DmiServer(rig.edge.socket_path, rig.backend)
    await again.start(known_mappers=rig.backend.registered)
    rig.edge = again  # the fixture stops it
    mapper = again.mapper("modbus")
    assert mapper is not None
    assert await mapper.register_device(device("d7"), MODEL)
    op, sent = await next_call(rig.handler)
    assert op == "register" and sent["metadata"]["name"] == "d7"

    # The mapper's own channel finds the new edgecore by itself.
    deadline = time.monotonic() + 10
    while True:
        try:
            await rig.client.report_status("default", "d7", [TWIN])
            break
        except EdgecoreUnavailable:
            assert time.monotonic() < deadline, "the mapper never reached the new edgecore"
            await asyncio.sleep(0.1)
    assert rig.backend.statuses[-1][:2] == ("default", "d7")


async def test_registration_waits_for_edgecore_to_appear(short_tmp: Path) -> None:
    path = short_tmp / "edge" / "dmi.sock"
    retrying = asyncio.Event()

    def rand() -> float:
        retrying.set()  # drawn once per retry
        return 0.0

    client = ManagerClient(path, name="m", protocol="modbus", address="/m.sock", rand=rand)
    edge = DmiServer(path, Backend([device("d1")], [MODEL]))
    try:
        registering = asyncio.create_task(client.register())
        await asyncio.wait_for(retrying.wait(), 5)
        assert not registering.done()
        await edge.start()
        devices, _ = await asyncio.wait_for(registering, 15)
        assert [d["metadata"]["name"] for d in devices] == ["d1"]
    finally:
        await client.close()
        await edge.stop(0)


async def test_registration_gives_up_when_asked_to(short_tmp: Path) -> None:
    client = ManagerClient(short_tmp / "absent.sock", name="m", protocol="modbus",
                           address="/m.sock", rand=lambda: 0.0)
    try:
        with pytest.raises(EdgecoreUnavailable):
            await client.register(max_attempts=3, base_delay=0.01)
    finally:
        await client.close()


# --- wire compatibility -----------------------------------------------------------------


async def test_the_rpc_paths_are_kubeedges(rig: Rig) -> None:
    # A KubeEdge mapper calls these exact paths; a raw channel proves the names.
    async with grpc.aio.insecure_channel(f"unix:{rig.edge.socket_path}") as channel:
        register = channel.unary_unary(
            "/v1beta1.DeviceManagerService/MapperRegister",
            request_serializer=api_pb2.MapperRegisterRequest.SerializeToString,
            response_deserializer=api_pb2.MapperRegisterResponse.FromString)
        reply = await register(api_pb2.MapperRegisterRequest(
            withData=True, mapper=api_pb2.MapperInfo(protocol="modbus", address=b"/x.sock")),
            timeout=5)
    assert sorted(d.name for d in reply.deviceList) == ["d1", "d2"]
