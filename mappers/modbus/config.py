"""KubeEdge Modbus ``configData`` → typed configuration (pure).

The v1beta1 CRDs leave ``configData`` free-form, so the keys below are the ones KubeEdge's
docs and example mappers use, accepted in the loose forms found in the wild (numbers as
strings, either spelling of ``slaveID``, parity as a word or a letter).

Protocol (``spec.protocol.configData``, over the DeviceModel's ``protocolConfigData``):

    slaveID | slaveId   unit id, int or numeric string (default 1; TCP 0..255, RTU 1..247)
    communicateMode     "TCP" (default) or "RTU", any case
    ip, port            TCP endpoint (port default 502, int or string)
    timeout             response timeout: milliseconds as a number, or a duration string
                        such as "500ms", "3s" (default 3000 ms)
    serialPort | serialName, baudRate (19200), dataBits (8), parity (Even), stopBits (1)
                        RTU line; the defaults are the Modbus serial line specification's
                        parity None/Even/Odd or N/E/O, any case

Visitor (``spec.properties[i].visitors.configData``, over the model property's visitor):

    register            CoilRegister, DiscreteInputRegister, InputRegister, HoldingRegister
    offset              0-based address (required)
    limit               number of registers (strings, bytes), or a check on the data type
    scale               reported = raw * scale (default 1, never 0)
    isSwap, isRegisterSwap   byte order within registers / word order (default false)
    dataType            int16 uint16 int32 uint32 float32 float64 boolean string bytes,
                        or KubeEdge's loose names int float double string bool bytes

How the data type is chosen when it is not one of ours:

- coils and discrete inputs always hold a boolean (limit 1);
- a loose name, or else the DeviceModel property's ``type`` (INT, FLOAT, DOUBLE, STRING,
  BOOLEAN, BYTES), is sized by ``limit``: int → int16 (limit 1 or none) / int32 (2);
  float → float32 (2 or none) / float64 (4) / int16 (1: a scaled integer register, the
  common "temperature * 10 with scale 0.1" case); double → float64 (4 or none) /
  float32 (2) / int16 (1); bool → boolean; string and bytes take ``limit`` registers;
- with neither, a register holds int16 (limit 1 or none) or int32 (limit 2): signed,
  because most sensor values can go negative.

A property is writable only on coils and holding registers, and not when the
DeviceModel says ``accessMode: ReadOnly``.  Every problem is a ``ConfigError`` whose
``field`` is the path of the offending key, e.g.
``spec.properties[2].visitors.configData.register``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import AliasChoices as Aliases
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mappers.modbus.codec import DataType, RegisterKind, ValueSpec, registers_needed
from mappers.modbus.plan import MAX_REGISTERS_PER_READ
from protocol.errors import InvalidObject

_PROTOCOL_PATH = "spec.protocol.configData"
DEFAULT_TIMEOUT_MS = 3000


class ConfigError(InvalidObject):
    """A Device or DeviceModel cannot be driven as written; ``field`` says where."""


class Mode(StrEnum):
    TCP = "TCP"
    RTU = "RTU"


class Parity(StrEnum):
    NONE = "N"
    EVEN = "E"
    ODD = "O"


# --- results ------------------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TcpEndpoint(_Frozen):
    host: str
    port: int = Field(502, ge=1, le=65535)
    timeout: float = Field(DEFAULT_TIMEOUT_MS / 1000, gt=0, description="seconds")


class SerialEndpoint(_Frozen):
    port: str
    baudrate: int = Field(19200, gt=0)
    bytesize: int = Field(8, ge=5, le=8)
    parity: Parity = Parity.EVEN
    stopbits: int = Field(1, ge=1, le=2)
    timeout: float = Field(DEFAULT_TIMEOUT_MS / 1000, gt=0, description="seconds")


Endpoint = TcpEndpoint | SerialEndpoint
BusKey = tuple[str, str, int] | tuple[str, str]


class ProtocolConfig(_Frozen):
    """One device's address: which bus, and which unit on it."""

    slave_id: int
    mode: Mode
    endpoint: Endpoint


class PropertyConfig(_Frozen):
    """Where one property lives and how its value is encoded."""

    name: str
    kind: RegisterKind  # the visitor's `register`
    offset: int
    data_type: DataType
    limit: int = 1  # registers of a string/bytes value; the fixed size otherwise
    scale: float = 1.0
    is_swap: bool = False
    is_register_swap: bool = False
    writable: bool = True

    @property
    def spec(self) -> ValueSpec:
        return ValueSpec(self.data_type, self.limit, self.scale, self.is_swap,
                         self.is_register_swap)

    @property
    def count(self) -> int:
        """Registers (or bits) to read for this property."""
        return registers_needed(self.data_type, self.limit)


class DeviceConfig(_Frozen):
    protocol: ProtocolConfig
    properties: tuple[PropertyConfig, ...]

    def prop(self, name: str) -> PropertyConfig:
        """The property called ``name`` (KeyError if the device has none)."""
        for prop in self.properties:
            if prop.name == name:
                return prop
        raise KeyError(name)


def bus_key(protocol: ProtocolConfig) -> BusKey:
    """The identity of one physical bus: devices with the same key share one request queue.
    (Serial paths are compared as written; the bus pool resolves symlinks.)"""
    ep = protocol.endpoint
    if isinstance(ep, TcpEndpoint):
        return ("tcp", ep.host.lower(), ep.port)
    return ("rtu", ep.port)


# --- raw (as written) models: lax types, KubeEdge spellings ---------------------------------

_LAX = ConfigDict(extra="ignore", populate_by_name=False)


class _RawProtocol(BaseModel):
    model_config = _LAX

    slave_id: int = Field(1, validation_alias=Aliases("slaveID", "slaveId", "slaveid"))
    mode: str = Field("TCP", validation_alias="communicateMode")
    ip: str | None = Field(None, validation_alias="ip")
    port: int = Field(502, validation_alias="port")
    timeout: Annotated[float, Field(gt=0)] = Field(DEFAULT_TIMEOUT_MS, validation_alias="timeout")
    serial_port: str | None = Field(None, validation_alias=Aliases("serialPort", "serialName"))
    baud_rate: int = Field(19200, validation_alias="baudRate")
    data_bits: int = Field(8, validation_alias="dataBits")
    parity: str = Field("E", validation_alias="parity")
    stop_bits: int = Field(1, validation_alias="stopBits")

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return _duration_ms(value) if isinstance(value, str) else value


class _RawVisitor(BaseModel):
    model_config = _LAX

    register_name: str | None = Field(None, validation_alias="register")
    offset: int | None = Field(None, validation_alias="offset")
    limit: int | None = Field(None, validation_alias="limit")
    scale: float = Field(1.0, validation_alias="scale")
    is_swap: bool = Field(False, validation_alias="isSwap")
    is_register_swap: bool = Field(False, validation_alias="isRegisterSwap")
    data_type: str | None = Field(None, validation_alias="dataType")


_M = TypeVar("_M", bound=BaseModel)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")


def _duration_ms(text: str) -> float:
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (e.g. 3000, \"500ms\", \"3s\")")
    number, unit = float(match.group(1)), match.group(2) or "ms"
    return number * {"ms": 1, "s": 1000, "m": 60000}[unit]


def _validate(model: type[_M], data: Mapping[str, Any], path: str) -> _M:
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{first['msg']} (got {first.get('input')!r})",
                          field=f"{path}.{loc}" if loc else path) from None


# --- protocol -----------------------------------------------------------------------------


def parse_protocol(config_data: Mapping[str, Any] | None, *,
                   path: str = _PROTOCOL_PATH) -> ProtocolConfig:
    """A device's bus address from ``spec.protocol.configData``."""
    if config_data is None:
        raise ConfigError("the Modbus protocol needs configData (ip/port or serialPort)",
                          field=path)
    raw = _validate(_RawProtocol, config_data, path)
    mode_key = _key_used(config_data, "communicateMode")
    try:
        mode = Mode(raw.mode.upper())
    except ValueError:
        raise ConfigError(f"communicateMode must be TCP or RTU, got {raw.mode!r}",
                          field=f"{path}.{mode_key}") from None
    timeout = raw.timeout / 1000
    slave_key = _key_used(config_data, "slaveID", "slaveId", "slaveid")
    if mode is Mode.TCP:
        if not 0 <= raw.slave_id <= 255:
            raise ConfigError(f"a TCP unit id is 0..255, got {raw.slave_id}",
                              field=f"{path}.{slave_key}")
        if not raw.ip:
            raise ConfigError("communicateMode TCP needs ip", field=f"{path}.ip")
        if not 1 <= raw.port <= 65535:
            raise ConfigError(f"port must be 1..65535, got {raw.port}", field=f"{path}.port")
        endpoint: Endpoint = TcpEndpoint(host=raw.ip, port=raw.port, timeout=timeout)
    else:
        if not 1 <= raw.slave_id <= 247:
            raise ConfigError(f"an RTU slave id is 1..247, got {raw.slave_id}",
                              field=f"{path}.{slave_key}")
        if not raw.serial_port:
            raise ConfigError("communicateMode RTU needs serialPort (or serialName)",
                              field=f"{path}.serialPort")
        endpoint = _serial_endpoint(raw, config_data, path, timeout)
    return ProtocolConfig(slave_id=raw.slave_id, mode=mode, endpoint=endpoint)


_PARITY_WORDS = {"n": Parity.NONE, "none": Parity.NONE, "e": Parity.EVEN, "even": Parity.EVEN,
                 "o": Parity.ODD, "odd": Parity.ODD}


def _serial_endpoint(raw: _RawProtocol, data: Mapping[str, Any], path: str,
                     timeout: float) -> SerialEndpoint:
    parity = _PARITY_WORDS.get(raw.parity.strip().lower())
    if parity is None:
        raise ConfigError(f"parity must be None, Even or Odd (or N/E/O), got {raw.parity!r}",
                          field=f"{path}.parity")
    checks = (("baudRate", raw.baud_rate > 0, "a positive number"),
              ("dataBits", 5 <= raw.data_bits <= 8, "5..8"),
              ("stopBits", raw.stop_bits in (1, 2), "1 or 2"))
    for key, ok, allowed in checks:
        if not ok:
            raise ConfigError(f"{key} must be {allowed}, got {data.get(key)!r}",
                              field=f"{path}.{key}")
    assert raw.serial_port is not None
    return SerialEndpoint(port=raw.serial_port, baudrate=raw.baud_rate,
                          bytesize=raw.data_bits, parity=parity, stopbits=raw.stop_bits,
                          timeout=timeout)


def _key_used(data: Mapping[str, Any], *keys: str) -> str:
    return next((k for k in keys if k in data), keys[0])


# --- properties ---------------------------------------------------------------------------

_REGISTER_NAMES: dict[str, RegisterKind] = {}
for _kind in RegisterKind:
    _REGISTER_NAMES[_kind.value.lower()] = _kind
    _REGISTER_NAMES[_kind.value.lower().removesuffix("register")] = _kind

_EXACT_TYPES = {t.value: t for t in DataType}
_LOOSE_TYPES = {"int", "integer", "float", "double", "string", "bool", "boolean", "bytes"}


def parse_property(config_data: Mapping[str, Any] | None, *, name: str,
                   model_type: str | None = None, access_mode: str | None = None,
                   path: str = "visitors.configData") -> PropertyConfig:
    """One property's register address and encoding from its visitor ``configData``.

    ``model_type`` and ``access_mode`` are the DeviceModel property's ``type`` and
    ``accessMode``; ``path`` is where ``config_data`` sits, for error messages."""
    if config_data is None:
        raise ConfigError(f"property {name!r} has no Modbus visitor configData", field=path)
    raw = _validate(_RawVisitor, config_data, path)
    if raw.register_name is None:
        raise ConfigError("register is required", field=f"{path}.register")
    kind = _REGISTER_NAMES.get(raw.register_name.strip().lower())
    if kind is None:
        allowed = ", ".join(k.value for k in RegisterKind)
        raise ConfigError(f"register must be one of {allowed}; got {raw.register_name!r}",
                          field=f"{path}.register")
    if raw.offset is None:
        raise ConfigError("offset is required", field=f"{path}.offset")
    if not 0 <= raw.offset <= 0xFFFF:
        raise ConfigError(f"offset must be 0..65535, got {raw.offset}", field=f"{path}.offset")
    if raw.limit is not None and raw.limit < 1:
        raise ConfigError(f"limit must be at least 1, got {raw.limit}", field=f"{path}.limit")
    if raw.scale == 0 or not math.isfinite(raw.scale):
        raise ConfigError(f"scale must be a finite non-zero number, got {raw.scale}",
                          field=f"{path}.scale")
    data_type, limit = _resolve_type(kind, raw, model_type, path)
    if registers_needed(data_type, limit) > MAX_REGISTERS_PER_READ:
        raise ConfigError(f"limit {limit} is more than one request can read "
                          f"({MAX_REGISTERS_PER_READ} registers)", field=f"{path}.limit")
    if raw.offset + registers_needed(data_type, limit) > 0x10000:
        raise ConfigError("offset + size runs past address 65535", field=f"{path}.offset")
    read_only = (access_mode or "").strip().lower() == "readonly"
    return PropertyConfig(
        name=name, kind=kind, offset=raw.offset, data_type=data_type, limit=limit,
        scale=raw.scale, is_swap=raw.is_swap, is_register_swap=raw.is_register_swap,
        writable=kind.is_writable and not read_only,
    )


def _resolve_type(kind: RegisterKind, raw: _RawVisitor, model_type: str | None,
                  path: str) -> tuple[DataType, int]:
    """(data type, limit) from dataType, the model's type and limit; see the module doc."""
    limit = raw.limit
    if kind.is_bits:
        if raw.data_type is not None and raw.data_type.strip().lower() not in (
                "bool", "boolean"):
            raise ConfigError(f"{kind.value} holds booleans; dataType {raw.data_type!r} "
                              "cannot be read from it", field=f"{path}.dataType")
        if limit not in (None, 1):
            raise ConfigError(f"{kind.value} properties are one bit each; limit must be 1",
                              field=f"{path}.limit")
        return DataType.BOOLEAN, 1
    if raw.data_type is not None:
        name = raw.data_type.strip().lower()
        exact = _EXACT_TYPES.get(name)
        if exact is not None:
            return _check_limit(exact, limit, path)
        if name not in _LOOSE_TYPES:
            allowed = ", ".join(sorted({*_EXACT_TYPES, *_LOOSE_TYPES}))
            raise ConfigError(f"dataType must be one of {allowed}; got {raw.data_type!r}",
                              field=f"{path}.dataType")
        return _loose_type(name, limit, path, f"dataType {raw.data_type!r}")
    if model_type is not None:
        name = model_type.strip().lower()
        if name not in _LOOSE_TYPES:
            raise ConfigError(f"the DeviceModel type {model_type!r} cannot be read from Modbus "
                              "registers; set dataType", field=f"{path}.dataType")
        return _loose_type(name, limit, path, f"DeviceModel type {model_type!r}")
    if limit in (None, 1):
        return DataType.INT16, 1
    if limit == 2:
        return DataType.INT32, 2
    raise ConfigError(f"dataType is required for a value of {limit} registers",
                      field=f"{path}.dataType")


def _check_limit(data_type: DataType, limit: int | None, path: str) -> tuple[DataType, int]:
    if data_type in (DataType.STRING, DataType.BYTES):
        if limit is None:
            raise ConfigError(f"{data_type} needs limit (its length in registers)",
                              field=f"{path}.limit")
        return data_type, limit
    size = registers_needed(data_type)
    if limit is not None and limit != size:
        raise ConfigError(f"{data_type} occupies {size} register(s) but limit is {limit}",
                          field=f"{path}.limit")
    return data_type, size


# Loose name → data type by limit (None = limit not given).
_BY_LIMIT: dict[str, dict[int | None, DataType]] = {
    "int": {None: DataType.INT16, 1: DataType.INT16, 2: DataType.INT32},
    "float": {None: DataType.FLOAT32, 1: DataType.INT16, 2: DataType.FLOAT32,
              4: DataType.FLOAT64},
    "double": {None: DataType.FLOAT64, 1: DataType.INT16, 2: DataType.FLOAT32,
               4: DataType.FLOAT64},
    "bool": {None: DataType.BOOLEAN, 1: DataType.BOOLEAN},
}
_SYNONYMS = {"integer": "int", "boolean": "bool"}


def _loose_type(name: str, limit: int | None, path: str,
                what: str) -> tuple[DataType, int]:
    name = _SYNONYMS.get(name, name)
    if name in ("string", "bytes"):
        return _check_limit(DataType(name), limit, path)
    chosen = _BY_LIMIT[name].get(limit)
    if chosen is None:
        sizes = ", ".join(str(k) for k in _BY_LIMIT[name] if k is not None)
        raise ConfigError(f"{what} fits limit {sizes}, not {limit}", field=f"{path}.limit")
    return chosen, registers_needed(chosen)


# --- whole device -------------------------------------------------------------------------


def parse_device(device_spec: Mapping[str, Any],
                 model_spec: Mapping[str, Any] | None = None) -> DeviceConfig:
    """A Device's ``spec`` (and its DeviceModel's ``spec``) → everything needed to poll it.

    The model's ``protocolConfigData`` and per-property ``visitors`` are defaults that the
    Device's own keys override (edgecore has usually merged them already; merging again
    is harmless).  The first problem found is raised."""
    model_spec = model_spec or {}
    protocol = _mapping(device_spec.get("protocol")) or {}
    merged_protocol = {**(_mapping(model_spec.get("protocolConfigData")) or {}),
                       **(_mapping(protocol.get("configData")) or {})}
    proto = parse_protocol(merged_protocol if merged_protocol else None)
    model_props = {p.get("name"): p for p in _mappings(model_spec.get("properties"))}
    props: list[PropertyConfig] = []
    for i, prop in enumerate(_mappings(device_spec.get("properties"))):
        path = f"spec.properties[{i}]"
        name = prop.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError("property name is required", field=f"{path}.name")
        model_prop = model_props.get(name, {})
        visitor = {**(_visitor_data(model_prop) or {}), **(_visitor_data(prop) or {})}
        props.append(parse_property(
            visitor or None, name=name, model_type=_str_or_none(model_prop.get("type")),
            access_mode=_str_or_none(model_prop.get("accessMode")),
            path=f"{path}.visitors.configData"))
    return DeviceConfig(protocol=proto, properties=tuple(props))


def _mapping(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def _mappings(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _visitor_data(prop: Mapping[str, Any]) -> Mapping[str, Any] | None:
    visitors = _mapping(prop.get("visitors"))
    return _mapping(visitors.get("configData")) if visitors else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
