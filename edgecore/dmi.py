"""edgecore's end of DMI v1beta1: the DeviceManagerService on DIR/dmi.sock, and one
client per registered mapper for the DeviceMapperService it serves.

    mapper ──MapperRegister / ReportDeviceStatus / ReportDeviceStates──> DmiServer ──> DmiBackend
    DmiServer.mapper(protocol): MapperClient ──RegisterDevice / UpdateDevice / ...──> mapper

The socket is the only access control (mode 0600, so only edgecore's own user can reach
it), as in KubeEdge.  Unlike KubeEdge there is no 1-request-per-second limiter (with one
report per property per cycle that limit starves real fleets); instead:

- at most ``max_concurrent`` RPCs are handled at once (gRPC answers RESOURCE_EXHAUSTED
  beyond that), so a flood cannot pile unbounded work onto edgecore's event loop;
- each mapper's reports draw from their own token bucket (default 5,000/s, burst
  5,000), answered RESOURCE_EXHAUSTED when empty, so one runaway mapper cannot crowd
  out the others.  Reports carry no mapper identity (gRPC over a unix socket has no
  peer name), so a report is charged to the mapper whose protocol the device uses, as
  learned from MapperRegister and from the devices edgecore hands each mapper; reports
  for devices not yet seen share one more bucket.

Backend errors are ``EdgefleetError`` subclasses and reach the mapper as the matching
gRPC status (``protocol.dmi.convert.grpc_code_name``); anything else is INTERNAL.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn, Protocol

import grpc

from protocol.dmi import convert
from protocol.dmi.v1beta1 import api_pb2, api_pb2_grpc
from protocol.errors import BadRequest, EdgefleetError, InvalidObject, RateLimited
from protocol.ratelimit import TokenBucket

log = logging.getLogger(__name__)

SOCKET_NAME = "dmi.sock"
CALL_TIMEOUT = 10.0  # seconds, on every edgecore -> mapper call (as KubeEdge)
DEFAULT_REPORT_RATE = 5000.0  # reports per second per mapper
DEFAULT_REPORT_BURST = 5000
DEFAULT_NAMESPACE = "default"
_UNATTRIBUTED = ""  # the bucket for reports about devices not yet tied to a mapper

# Big enough for a MapperRegister answer carrying thousands of devices.
_MAX_MESSAGE_BYTES = 32 * 1024 * 1024
_MAX_SOCKET_PATH = 107  # sun_path is 108 bytes on Linux, NUL included
# gRPC's default reconnect backoff grows to 120 s; over a local socket that would leave a
# restarted peer unreachable for minutes.
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5000),
)
_SERVER_OPTIONS = (
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
)


class DmiBackend(Protocol):
    """What the DMI server needs from the rest of edgecore (the twin and the meta cache)."""

    def devices_for_protocol(
        self, protocol: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(devices, models): every cached Device whose ``spec.protocol.protocolName`` is
        ``protocol`` and the DeviceModels they reference, as stored."""
        ...

    async def report_status(self, namespace: str, name: str, twins: list[dict[str, Any]]) -> None:
        """Twins shaped like ``Device.status.twins[]``; raise EdgefleetError subclasses."""
        ...

    async def report_state(self, namespace: str, name: str, state: str) -> None: ...

    def register_mapper(self, info: dict[str, Any]) -> None:
        """Persist a registration (name, version, api_version, protocol, address, state)
        so that it can be handed back to ``DmiServer.start(known_mappers=...)``."""
        ...


def channel_target(address: str) -> str:
    """The gRPC target for a mapper's socket path (``unix:`` targets pass through)."""
    return address if address.startswith("unix:") else f"unix:{address}"


class MapperClient:
    """edgecore's client for one mapper's DeviceMapperService.

    Every call has a ``timeout`` deadline.  Failures (mapper away, deadline, a value
    that cannot be converted) are logged and reported as False / None, never raised:
    the callers are edgecore's sync loops, which must keep going."""

    def __init__(
        self,
        info: Mapping[str, Any],
        *,
        timeout: float = CALL_TIMEOUT,
        track: Callable[[str, str, bool], None] | None = None,
    ) -> None:
        self.info = dict(info)
        self.protocol = str(info.get("protocol") or "")
        self.address = str(info.get("address") or "")
        self._timeout = timeout
        self._track = track
        self._channel = grpc.aio.insecure_channel(
            channel_target(self.address), options=CHANNEL_OPTIONS
        )
        self._stub = api_pb2_grpc.DeviceMapperServiceStub(self._channel)

    def __repr__(self) -> str:
        return f"MapperClient(protocol={self.protocol!r}, address={self.address!r})"

    async def register_device(
        self, device: Mapping[str, Any], model: Mapping[str, Any] | None = None
    ) -> bool:
        """RegisterDevice with the Device as its mapper sees it (``model`` defaults merged)."""
        return await self._send_device("RegisterDevice", self._stub.RegisterDevice,
                                       api_pb2.RegisterDeviceRequest, device, model)

    async def update_device(
        self, device: Mapping[str, Any], model: Mapping[str, Any] | None = None
    ) -> bool:
        return await self._send_device("UpdateDevice", self._stub.UpdateDevice,
                                       api_pb2.UpdateDeviceRequest, device, model)

    async def remove_device(self, namespace: str, name: str) -> bool:
        request = api_pb2.RemoveDeviceRequest(deviceName=name, deviceNamespace=namespace)
        ok = await self._call("RemoveDevice", f"{namespace}/{name}", self._stub.RemoveDevice,
                              request) is not None
        if ok and self._track is not None:
            self._track(namespace, name, False)
        return ok

    async def create_device_model(self, model: Mapping[str, Any]) -> bool:
        return await self._send_model("CreateDeviceModel", self._stub.CreateDeviceModel,
                                      api_pb2.CreateDeviceModelRequest, model)

    async def update_device_model(self, model: Mapping[str, Any]) -> bool:
        return await self._send_model("UpdateDeviceModel", self._stub.UpdateDeviceModel,
                                      api_pb2.UpdateDeviceModelRequest, model)

    async def remove_device_model(self, namespace: str, name: str) -> bool:
        request = api_pb2.RemoveDeviceModelRequest(modelName=name, modelNamespace=namespace)
        return await self._call("RemoveDeviceModel", f"{namespace}/{name}",
                                self._stub.RemoveDeviceModel, request) is not None

    async def get_device(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The mapper's view of a Device, or None if it failed or does not know it."""
        request = api_pb2.GetDeviceRequest(deviceName=name, deviceNamespace=namespace)
        reply = await self._call("GetDevice", f"{namespace}/{name}", self._stub.GetDevice,
                                 request)
        if reply is None or not reply.HasField("device"):
            return None
        try:
            return convert.device_from_proto(reply.device)
        except EdgefleetError as err:
            log.warning("mapper %s: GetDevice %s/%s: unreadable answer: %s",
                        self.protocol, namespace, name, err)
            return None

    async def close(self) -> None:
        await self._channel.close()

    async def _send_device(
        self, what: str, method: Any, request_type: Any,
        device: Mapping[str, Any], model: Mapping[str, Any] | None,
    ) -> bool:
        key = _object_key(device)
        try:
            msg = convert.device_to_proto(device, model)
        except EdgefleetError as err:
            log.warning("mapper %s: %s %s not sent: %s", self.protocol, what, key, err)
            return False
        ok = await self._call(what, key, method, request_type(device=msg)) is not None
        if ok and self._track is not None:
            self._track(msg.namespace or DEFAULT_NAMESPACE, msg.name, True)
        return ok

    async def _send_model(
        self, what: str, method: Any, request_type: Any, model: Mapping[str, Any]
    ) -> bool:
        key = _object_key(model)
        try:
            msg = convert.model_to_proto(model)
        except EdgefleetError as err:
            log.warning("mapper %s: %s %s not sent: %s", self.protocol, what, key, err)
            return False
        return await self._call(what, key, method, request_type(model=msg)) is not None

    async def _call(self, what: str, key: str, method: Any, request: Any) -> Any | None:
        try:
            return await method(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as err:
            log.warning("mapper %s at %s: %s %s failed: %s %s", self.protocol, self.address,
                        what, key, err.code().name, err.details())
            return None


def _object_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    if isinstance(meta, Mapping):
        return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"
    return "?"


async def _abort(context: Any, err: EdgefleetError) -> NoReturn:
    await context.abort(grpc.StatusCode[convert.grpc_code_name(err)], str(err))
    raise AssertionError("context.abort returned")  # it raises; this tells mypy


async def _abort_internal(context: Any, what: str) -> NoReturn:
    log.exception("DMI %s failed", what)
    await context.abort(grpc.StatusCode.INTERNAL, f"{what}: internal error in edgecore")
    raise AssertionError("context.abort returned")


class _ManagerService(api_pb2_grpc.DeviceManagerServiceServicer):
    def __init__(self, owner: DmiServer) -> None:
        self._owner = owner

    async def MapperRegister(
        self, request: api_pb2.MapperRegisterRequest, context: Any
    ) -> api_pb2.MapperRegisterResponse:
        try:
            return await self._owner._register(request)
        except EdgefleetError as err:
            await _abort(context, err)
        except Exception:
            await _abort_internal(context, "MapperRegister")

    async def ReportDeviceStatus(
        self, request: api_pb2.ReportDeviceStatusRequest, context: Any
    ) -> api_pb2.ReportDeviceStatusResponse:
        try:
            await self._owner._report_status(request)
            return api_pb2.ReportDeviceStatusResponse()
        except EdgefleetError as err:
            await _abort(context, err)
        except Exception:
            await _abort_internal(context, "ReportDeviceStatus")

    async def ReportDeviceStates(
        self, request: api_pb2.ReportDeviceStatesRequest, context: Any
    ) -> api_pb2.ReportDeviceStatesResponse:
        try:
            await self._owner._report_state(request)
            return api_pb2.ReportDeviceStatesResponse()
        except EdgefleetError as err:
            await _abort(context, err)
        except Exception:
            await _abort_internal(context, "ReportDeviceStates")


class DmiServer:
    def __init__(
        self,
        socket_path: Path,
        backend: DmiBackend,
        *,
        max_concurrent: int = 64,
        report_rate: float = DEFAULT_REPORT_RATE,
        report_burst: int = DEFAULT_REPORT_BURST,
        call_timeout: float = CALL_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be >= 1")
        self.socket_path = Path(socket_path)
        self._backend = backend
        self._max_concurrent = max_concurrent
        self._report_rate = report_rate
        self._report_burst = report_burst
        self._call_timeout = call_timeout
        self._clock = clock
        self._server: Any = None
        self._mappers: dict[str, MapperClient] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._device_protocol: dict[tuple[str, str], str] = {}

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self, known_mappers: Iterable[Mapping[str, Any]] = ()) -> None:
        """Serve on ``socket_path`` (0600).  ``known_mappers`` are registrations persisted
        by ``DmiBackend.register_mapper`` before a restart; they are dialled again so
        edgecore can reach those mappers without them registering anew."""
        if self._server is not None:
            raise RuntimeError("DmiServer already started")
        _clear_stale_socket(self.socket_path)
        server = grpc.aio.server(maximum_concurrent_rpcs=self._max_concurrent,
                                 options=_SERVER_OPTIONS)
        api_pb2_grpc.add_DeviceManagerServiceServicer_to_server(_ManagerService(self), server)
        _bind_private(server, self.socket_path)
        # Dial the known mappers before serving, so that no report arrives before its
        # device is attributed to its mapper's bucket.
        for info in known_mappers:
            protocol, address = info.get("protocol"), info.get("address")
            if not protocol or not address:
                log.warning("ignoring a stored mapper registration without protocol or "
                            "address: %r", dict(info))
                continue
            self._attach(info)
            try:
                self._learn_devices(str(protocol))
            except Exception:
                log.exception("cannot list the devices of protocol %r", protocol)
        await server.start()
        self._server = server
        log.info("DMI serving on %s (%d known mappers)", self.socket_path, len(self._mappers))

    async def stop(self, grace: float = 1.0) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)
        mappers, self._mappers = list(self._mappers.values()), {}
        for client in mappers:
            await client.close()
        _remove_socket(self.socket_path)

    # --- the registered mappers ---------------------------------------------------------

    def mapper(self, protocol: str) -> MapperClient | None:
        """The client for the mapper serving ``protocol``, if one registered."""
        return self._mappers.get(protocol)

    @property
    def mappers(self) -> dict[str, MapperClient]:
        return dict(self._mappers)

    def _attach(self, info: Mapping[str, Any]) -> MapperClient:
        protocol = str(info["protocol"])

        def track(namespace: str, name: str, present: bool) -> None:
            if present:
                self._device_protocol[(namespace, name)] = protocol
            elif self._device_protocol.get((namespace, name)) == protocol:
                del self._device_protocol[(namespace, name)]

        client = MapperClient(info, timeout=self._call_timeout, track=track)
        self._mappers[protocol] = client
        return client

    def _learn_devices(self, protocol: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        devices, models = self._backend.devices_for_protocol(protocol)
        for device in devices:
            meta = device.get("metadata") or {}
            name = meta.get("name")
            if isinstance(name, str):
                namespace = meta.get("namespace") or DEFAULT_NAMESPACE
                self._device_protocol[(namespace, name)] = protocol
        return devices, models

    # --- RPC bodies (raise EdgefleetError; _ManagerService maps it to a status) ---------

    async def _register(
        self, request: api_pb2.MapperRegisterRequest
    ) -> api_pb2.MapperRegisterResponse:
        info = convert.mapper_info_from_proto(request.mapper)
        if not info["protocol"].strip():
            raise InvalidObject("the mapper's protocol must not be empty", field="mapper.protocol")
        if not info["address"].strip():
            raise InvalidObject("the mapper's address (its socket path) must not be empty",
                                field="mapper.address")
        self._backend.register_mapper(dict(info))
        old = self._mappers.get(info["protocol"])
        self._attach(info)
        if old is not None:
            await old.close()
        log.info("mapper %r registered for protocol %r at %s", info["name"], info["protocol"],
                 info["address"])
        reply = api_pb2.MapperRegisterResponse()
        if not request.withData:
            return reply
        devices, models = self._learn_devices(info["protocol"])
        by_key: dict[tuple[str, str], dict[str, Any]] = {}
        for model in models:
            try:
                msg = convert.model_to_proto(model)
            except EdgefleetError as err:
                log.warning("DeviceModel %s not sent to mapper %r: %s", _object_key(model),
                            info["protocol"], err)
                continue
            reply.modelList.append(msg)
            by_key[(msg.namespace or DEFAULT_NAMESPACE, msg.name)] = model
        for device in devices:
            try:
                meta = device.get("metadata") or {}
                ref = ((device.get("spec") or {}).get("deviceModelRef") or {}).get("name")
                own_model = by_key.get((str(meta.get("namespace") or DEFAULT_NAMESPACE), str(ref)))
                reply.deviceList.append(convert.device_to_proto(device, own_model))
            except (EdgefleetError, AttributeError) as err:
                log.warning("Device %s not sent to mapper %r: %s", _object_key(device),
                            info["protocol"], err)
        return reply

    def _admit_report(self, namespace: str, name: str) -> None:
        protocol = self._device_protocol.get((namespace, name), _UNATTRIBUTED)
        bucket = self._buckets.get(protocol)
        if bucket is None:
            bucket = self._buckets[protocol] = TokenBucket(self._report_rate, self._report_burst)
        if not bucket.allow(self._clock()):
            who = f"mapper {protocol!r}" if protocol else "unregistered devices"
            raise RateLimited(f"too many reports from {who} (limit {self._report_rate:g}/s)")

    async def _report_status(self, request: api_pb2.ReportDeviceStatusRequest) -> None:
        name, namespace = request.deviceName, request.deviceNamespace or DEFAULT_NAMESPACE
        if not name:
            raise InvalidObject("required", field="deviceName")
        self._admit_report(namespace, name)
        twins = convert.twins_from_proto(request.reportedDevice.twins)
        if not twins:
            raise BadRequest("the report carries no twins", field="reportedDevice.twins")
        for i, twin in enumerate(twins):
            if not twin.get("propertyName"):
                raise InvalidObject("required", field=f"reportedDevice.twins[{i}].propertyName")
        await self._backend.report_status(namespace, name, twins)

    async def _report_state(self, request: api_pb2.ReportDeviceStatesRequest) -> None:
        name, namespace = request.deviceName, request.deviceNamespace or DEFAULT_NAMESPACE
        if not name:
            raise InvalidObject("required", field="deviceName")
        self._admit_report(namespace, name)
        await self._backend.report_state(namespace, name, request.state)


def _clear_stale_socket(path: Path) -> None:
    """Make ``path`` free for a new socket: create its directory (0700) if missing,
    remove a socket file left by a previous run, refuse anything else, and refuse a
    socket another process still serves."""
    if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
        raise RuntimeError(f"unix socket path too long ({_MAX_SOCKET_PATH} bytes max): {path}")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise RuntimeError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)  # a unix connect answers at once; this only bounds the odd case
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)  # nobody listens: left over from a crash
        return
    finally:
        probe.close()
    raise RuntimeError(f"another process is serving on {path}")


def _remove_socket(path: Path) -> None:
    try:
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
    except FileNotFoundError:
        pass


def _bind_private(server: Any, path: Path) -> None:
    # gRPC creates the socket file when the port is added.  The umask makes it 0600 from
    # the first instant (no window where another user could connect); it is
    # process-wide, so hold it only around this one synchronous call.
    old = os.umask(0o177)
    try:
        bound = server.add_insecure_port(f"unix:{path}")
    finally:
        os.umask(old)
    if not bound:
        raise RuntimeError(f"cannot listen on unix socket {path}")
    os.chmod(path, 0o600)  # belt and braces
