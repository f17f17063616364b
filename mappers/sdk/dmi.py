"""A mapper's end of DMI v1beta1.

    ManagerClient ──MapperRegister, ReportDeviceStatus, ReportDeviceStates──> edgecore dmi.sock
    edgecore ──RegisterDevice, UpdateDevice, RemoveDevice, *DeviceModel, GetDevice──> MapperServer
    MapperServer ──> DeviceHandler (the mapper's own logic)

Start-up order, as in KubeEdge's mapper-framework: start the ``MapperServer`` on the
mapper's own socket, then ``ManagerClient.register()`` (which retries with backoff
until edgecore answers) and use the devices and models it returns.  edgecore keeps the
registration across its own restarts, so a mapper registers once per run.

Errors raised to the mapper's code are ``EdgefleetError`` subclasses:
``EdgecoreUnavailable`` when edgecore cannot be reached in time, otherwise the type
matching the gRPC status edgecore sent (``RateLimited`` for RESOURCE_EXHAUSTED,
``BadRequest`` for INVALID_ARGUMENT, ``NotFound``...).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn, Protocol

import grpc

from protocol.backoff import reconnect_delay
from protocol.dmi import convert
from protocol.dmi.v1beta1 import api_pb2, api_pb2_grpc
from protocol.errors import EdgefleetError, InvalidObject, NotFound

log = logging.getLogger(__name__)

CALL_TIMEOUT = 10.0
DEFAULT_NAMESPACE = "default"
_MAX_MESSAGE_BYTES = 32 * 1024 * 1024
_MAX_SOCKET_PATH = 107  # sun_path is 108 bytes on Linux, NUL included
# Keep gRPC's own reconnect backoff short (its default grows to 120 s): over a local
# socket a restarted edgecore should be reachable again within seconds.
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
# Status codes that mean "edgecore is not there (yet)", worth retrying.
_AWAY = ("UNAVAILABLE", "DEADLINE_EXCEEDED")

ModelOp = Literal["create", "update", "remove"]


class EdgecoreUnavailable(EdgefleetError):
    """edgecore did not answer: its socket is missing, refused or the deadline passed."""

    reason = "ServiceUnavailable"
    code = 503


class DeviceHandler(Protocol):
    """The mapper logic behind its DeviceMapperService.  Devices and models arrive as
    ``devices.kubeedge.io/v1beta1`` objects (see ``protocol.dmi.convert`` for what the
    DMI carries); Devices already have their model's defaults merged in.  Raise an
    ``EdgefleetError`` subclass to answer edgecore with the matching status."""

    async def on_register_device(self, device: dict[str, Any]) -> None: ...

    async def on_update_device(self, device: dict[str, Any]) -> None: ...

    async def on_remove_device(self, namespace: str, name: str) -> None: ...

    async def on_model(
        self, op: ModelOp, namespace: str, name: str, model: dict[str, Any] | None
    ) -> None:
        """``model`` is None for ``remove``."""
        ...

    def get_device(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The mapper's current view of a Device, or None if it does not have it."""
        ...


# --- the mapper's server --------------------------------------------------------------


async def _abort(context: Any, err: EdgefleetError) -> NoReturn:
    await context.abort(grpc.StatusCode[convert.grpc_code_name(err)], str(err))
    raise AssertionError("context.abort returned")  # it raises; this tells mypy


async def _abort_internal(context: Any, what: str) -> NoReturn:
    log.exception("DMI %s failed in the mapper", what)
    await context.abort(grpc.StatusCode.INTERNAL, f"{what}: internal error in the mapper")
    raise AssertionError("context.abort returned")


def _names(name: str, namespace: str, what: str) -> tuple[str, str]:
    if not name:
        raise InvalidObject("required", field=what)
    return namespace or DEFAULT_NAMESPACE, name


class _MapperService(api_pb2_grpc.DeviceMapperServiceServicer):
    def __init__(self, handler: DeviceHandler) -> None:
        self._handler = handler

    async def RegisterDevice(
        self, request: api_pb2.RegisterDeviceRequest, context: Any
    ) -> api_pb2.RegisterDeviceResponse:
        try:
            device = self._device(request.device)
            await self._handler.on_register_device(device)
            meta = device["metadata"]
            return api_pb2.RegisterDeviceResponse(
                deviceName=meta["name"], deviceNamespace=meta["namespace"])
        except EdgefleetError as err:
            await _abort(context, err)
        except Exception:
            await _abort_internal(context, "RegisterDevice")

    async def UpdateDevice(
        self, request: api_pb2.UpdateDeviceRequest, context: Any
    ) -> api_pb2.UpdateDeviceResponse:
        try:
            await self._handler.on_update_device(self._device(request.device))
            return api_pb2.UpdateDeviceResponse()
        except EdgefleetError as err:
            await _abort(context, err)
        except Exception:
            await _abort_internal(context, "UpdateDevice")

    async def RemoveDevice(
        self, request: api_pb2.RemoveDeviceRequest, context: Any
    ) -> api_pb2.RemoveDeviceResponse:
        try:
            namespace, name = _names(request.deviceName, request.deviceNamespace, "deviceName")
            await self._handler.on_remove_device(namespace, name)
            return api_pb2.RemoveDeviceResponse()
        except EdgefleetError as err:
            await _abort(context, err)
        except Exception:
            await _abort_internal(context, "RemoveDevice")

    async def CreateDeviceModel(
        self, request: api_pb2.CreateDeviceModelRequest, context: Any
    ) -> api_pb2.CreateDeviceModelResponse:
        try:
            namespace, name, model = self._model(request.model)
            await self._handler.on_model("create", namespace, name, model)
            return api_pb2.CreateDeviceModelResponse(
                deviceModelName=name, deviceModelNamespace=namespace)
        except EdgefleetError as err:
            await _abort(context, err)
        except Exception:
            await _abort_internal(context, "CreateDeviceModel")

    async def UpdateDeviceModel(
        self, request: api_pb2.UpdateDeviceModelRequest, context: Any
    ) -> api_pb2.UpdateDeviceModelResponse:
        try:
            namespace, name, model = self._model(request.model)
            await self._handler.on_model("update", namespace, name, model)
            return api_pb2.UpdateDeviceModelResponse()
        except EdgefleetError as err:
            await _abort(context, err)
        except Exception:
            await _abort_internal(context, "UpdateDeviceModel")

    async def RemoveDeviceModel(
        self, request: api_pb2.RemoveDeviceModelRequest, context: Any
    ) -> api_pb2.RemoveDeviceModelResponse:
        try:
            namespace, name = _names(request.modelName, request.modelNamespace, "modelName")
            await self._handler.on_model("remove", namespace, name, None)
            return api_pb2.RemoveDeviceModelResponse()
        except EdgefleetError as err:
            await _abort(context, err)
        except Exception:
            await _abort_internal(context, "RemoveDeviceModel")

    async def GetDevice(
        self, request: api_pb2.GetDeviceRequest, context: Any
    ) -> api_pb2.GetDeviceResponse:
        try:
            namespace, name = _names(request.deviceName, request.deviceNamespace, "deviceName")
            device = self._handler.get_device(namespace, name)
            if device is None:
                raise NotFound(f"device {namespace}/{name} is not served by this mapper")
            return api_pb2.GetDeviceResponse(device=convert.device_to_proto(device))
        except EdgefleetError as err:
            await _abort(context, err)
        except Exception:
            await _abort_internal(context, "GetDevice")

    @staticmethod
    def _device(msg: api_pb2.Device) -> dict[str, Any]:
        namespace, name = _names(msg.name, msg.namespace, "device.name")
        device = convert.device_from_proto(msg)
        device["metadata"] = {"name": name, "namespace": namespace}
        return device

    @staticmethod
    def _model(msg: api_pb2.DeviceModel) -> tuple[str, str, dict[str, Any]]:
        namespace, name = _names(msg.name, msg.namespace, "model.name")
        model = convert.model_from_proto(msg)
        model["metadata"] = {"name": name, "namespace": namespace}
        return namespace, name, model


class MapperServer:
    """Serves DeviceMapperService on the mapper's own unix socket (mode 0600)."""

    def __init__(self, socket_path: Path, handler: DeviceHandler, *,
                 max_concurrent: int = 16) -> None:
        self.socket_path = Path(socket_path)
        self._handler = handler
        self._max_concurrent = max_concurrent
        self._server: Any = None

    @property
    def address(self) -> str:
        """What to put in ``MapperInfo.address``: the absolute socket path."""
        return str(self.socket_path.absolute())

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("MapperServer already started")
        _clear_stale_socket(self.socket_path)
        server = grpc.aio.server(maximum_concurrent_rpcs=self._max_concurrent,
                                 options=_SERVER_OPTIONS)
        api_pb2_grpc.add_DeviceMapperServiceServicer_to_server(
            _MapperService(self._handler), server)
        _bind_private(server, self.socket_path)
        await server.start()
        self._server = server
        log.info("mapper DMI serving on %s", self.socket_path)

    async def stop(self, grace: float = 1.0) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)
        _remove_socket(self.socket_path)


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
    # The socket file appears when the port is added; the umask makes it 0600 from the
    # first instant.  It is process-wide, so hold it only around this synchronous call.
    old = os.umask(0o177)
    try:
        bound = server.add_insecure_port(f"unix:{path}")
    finally:
        os.umask(old)
    if not bound:
        raise RuntimeError(f"cannot listen on unix socket {path}")
    os.chmod(path, 0o600)


# --- the client for edgecore ----------------------------------------------------------


class ManagerClient:
    """The mapper's client for edgecore's DeviceManagerService on ``dmi_socket``."""

    def __init__(
        self,
        dmi_socket: Path | str,
        *,
        name: str,
        protocol: str,
        address: str,
        version: str = "",
        api_version: str = "v1beta1",
        state: str = "",
        timeout: float = CALL_TIMEOUT,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.info = {"name": name, "version": version, "api_version": api_version,
                     "protocol": protocol, "address": address, "state": state}
        self._timeout = timeout
        self._rand = rand
        target = str(dmi_socket)
        self._channel = grpc.aio.insecure_channel(
            target if target.startswith("unix:") else f"unix:{target}", options=CHANNEL_OPTIONS)
        self._stub = api_pb2_grpc.DeviceManagerServiceStub(self._channel)

    async def register(
        self, *, with_data: bool = True, max_attempts: int | None = None,
        base_delay: float = 0.2, max_delay: float = 5.0,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """MapperRegister; returns (devices, models) of this mapper's protocol (empty
        without ``with_data``).  While edgecore is away it retries with jittered
        exponential backoff, forever unless ``max_attempts`` is given (then it raises
        EdgecoreUnavailable).  A refusal (e.g. an empty protocol) is raised at once."""
        request = api_pb2.MapperRegisterRequest(
            withData=with_data, mapper=convert.mapper_info_to_proto(self.info))
        attempt = 0
        while True:
            try:
                reply = await self._stub.MapperRegister(request, timeout=self._timeout)
                break
            except grpc.aio.AioRpcError as err:
                if err.code().name not in _AWAY:
                    raise convert.error_from_grpc(err.code().name, err.details() or "") from err
                attempt += 1
                if max_attempts is not None and attempt >= max_attempts:
                    raise EdgecoreUnavailable(
                        f"edgecore did not answer MapperRegister after {attempt} attempts: "
                        f"{err.details()}") from err
                delay = reconnect_delay(attempt - 1, self._rand(), base=base_delay,
                                        cap=max_delay)
                log_at = logging.INFO if attempt == 1 else logging.DEBUG
                log.log(log_at, "edgecore not reachable (%s); retrying MapperRegister in "
                        "%.1fs", err.code().name, delay)
                await asyncio.sleep(delay)
        log.info("registered with edgecore as %r for protocol %r (%d devices, %d models)",
                 self.info["name"], self.info["protocol"], len(reply.deviceList),
                 len(reply.modelList))
        devices = [convert.device_from_proto(d) for d in reply.deviceList]
        models = [convert.model_from_proto(m) for m in reply.modelList]
        return devices, models

    async def report_status(
        self, namespace: str, name: str, twins: Sequence[Mapping[str, Any]]
    ) -> None:
        """ReportDeviceStatus.  ``twins`` are shaped like ``Device.status.twins[]``:
        ``{"propertyName", "reported": {"value", "metadata"}, "observedDesired": {...}}``."""
        request = api_pb2.ReportDeviceStatusRequest(
            deviceName=name, deviceNamespace=namespace,
            reportedDevice=api_pb2.DeviceStatus(twins=convert.twins_to_proto(twins)))
        await self._call(self._stub.ReportDeviceStatus, request)

    async def report_state(self, namespace: str, name: str, state: str) -> None:
        request = api_pb2.ReportDeviceStatesRequest(
            deviceName=name, deviceNamespace=namespace, state=state)
        await self._call(self._stub.ReportDeviceStates, request)

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as err:
            code, details = err.code().name, err.details() or ""
            if code in _AWAY:
                raise EdgecoreUnavailable(f"edgecore unavailable: {details}") from err
            raise convert.error_from_grpc(code, details) from err
