"""Stored KubeEdge objects <-> DMI v1beta1 messages, and errors <-> gRPC status codes.

Pure: no sockets, no grpc import.  Both ends of the DMI (edgecore's server and the
mapper SDK) convert through here, so the two can only disagree about the wire if the
.proto changes.

Devices and models are the ``devices.kubeedge.io/v1beta1`` JSON objects as the store
keeps them.  The DMI carries less than the CRD, so a round trip keeps exactly this:

- Device: ``metadata.name``/``namespace``; ``spec.deviceModelRef.name`` (as
  ``deviceModelReference``), ``spec.protocol``, ``spec.properties``, ``spec.methods``;
  ``status.twins``, ``status.reportToCloud``, ``status.reportCycle``.  Not carried:
  ``spec.nodeName``, other metadata, ``status.state``/``lastOnlineTime``.  KubeEdge
  1.23's ``spec.stateReport`` is sent as ``status.reportToCloud``/``reportCycle`` (the
  only place the DMI has for it) and comes back there.
- DeviceModel: ``metadata.name``/``namespace``, ``spec.properties`` (name,
  description, type, accessMode, minimum, maximum, unit) and ``spec.commands`` (which
  the CRD does not have; their ``response`` bytes are base64 text in the dict).
  ``spec.protocol``, ``spec.protocolConfigData`` and property ``visitors`` are not
  carried; they are the model *defaults* that ``merge_model_defaults`` folds into each
  Device instead.

Free-form objects (``configData``, ``pushMethod.anomalyDetection``) travel as
``map<string, google.protobuf.Any>``, one ``Any`` per top-level key, as KubeEdge's
``dataToAny`` does:

    str -> StringValue   int -> Int64Value   float -> DoubleValue   bool -> BoolValue
    dict -> Struct       list -> ListValue   None -> Value(null)

Top-level scalars round-trip exactly.  Inside a Struct or ListValue every number is a
double: integers beyond 2**53 are refused rather than silently rounded, and whole
numbers come back as ``int`` (so ``{"tcp": {"port": 502}}`` survives; a nested ``1.0``
comes back as ``1``).  Unpacking also accepts the wrappers a Go mapper may use
(Int32Value, UInt32Value, UInt64Value, FloatValue; BytesValue becomes base64 text, as
Go's encoding/json renders ``[]byte``).
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf import any_pb2, struct_pb2, wrappers_pb2

from protocol.dmi.v1beta1 import api_pb2
from protocol.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    EdgefleetError,
    Forbidden,
    FrameDecodeError,
    Gone,
    InvalidObject,
    NotFound,
    RateLimited,
    TooLarge,
    Unauthorized,
)

API_VERSION = "devices.kubeedge.io/v1beta1"

_INT64 = (-(2**63), 2**63 - 1)
_INT32 = (-(2**31), 2**31 - 1)
_EXACT_DOUBLE_INT = 2**53  # beyond this a double cannot hold every integer

# Where the CRD's JSON key differs from the proto field name.
_CRD_KEY: dict[tuple[str, str], str] = {
    ("v1beta1.PushMethodHTTP", "hostname"): "hostName",
    ("v1beta1.PushMethodHTTP", "requestpath"): "requestPath",
    ("v1beta1.DBMethod", "tdengine"): "TDEngine",
    ("v1beta1.DBMethodTDEngine", "tdEngineClientConfig"): "TDEngineClientConfig",
    ("v1beta1.TDEngineClientConfig", "dbname"): "dbName",
}
# Messages that are one free-form object (``map<string, Any> data = 1``); they carry the
# CRD's x-preserve-unknown-fields objects (configData, pushMethod.anomalyDetection).
_FREE_FORM = frozenset({"v1beta1.CustomizedValue", "v1beta1.AnomalyDetection"})
FreeFormMessage = api_pb2.CustomizedValue | api_pb2.AnomalyDetection


# --- configData values <-> google.protobuf.Any ------------------------------------------


def pack_value(value: Any, path: str = "value") -> any_pb2.Any:
    """One configData value as an ``Any`` (see the module docstring for the mapping)."""
    inner: Any
    if isinstance(value, bool):  # before int: bool is an int subclass
        inner = wrappers_pb2.BoolValue(value=value)
    elif isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise InvalidObject("integer out of the int64 range", field=path)
        inner = wrappers_pb2.Int64Value(value=value)
    elif isinstance(value, float):
        inner = wrappers_pb2.DoubleValue(value=value)
    elif isinstance(value, str):
        inner = wrappers_pb2.StringValue(value=value)
    elif isinstance(value, Mapping):
        inner = _json_value(value, path).struct_value
    elif isinstance(value, list | tuple):
        inner = _json_value(value, path).list_value
    elif value is None:
        inner = _json_value(None, path)
    else:
        raise InvalidObject(f"unsupported value type {type(value).__name__}", field=path)
    packed = any_pb2.Any()
    packed.Pack(inner)
    return packed


_SCALAR_WRAPPERS: dict[str, Any] = {
    "google.protobuf.StringValue": wrappers_pb2.StringValue,
    "google.protobuf.Int64Value": wrappers_pb2.Int64Value,
    "google.protobuf.Int32Value": wrappers_pb2.Int32Value,
    "google.protobuf.UInt64Value": wrappers_pb2.UInt64Value,
    "google.protobuf.UInt32Value": wrappers_pb2.UInt32Value,
    "google.protobuf.DoubleValue": wrappers_pb2.DoubleValue,
    "google.protobuf.FloatValue": wrappers_pb2.FloatValue,
    "google.protobuf.BoolValue": wrappers_pb2.BoolValue,
    "google.protobuf.BytesValue": wrappers_pb2.BytesValue,
}


def unpack_value(packed: any_pb2.Any, path: str = "value") -> Any:
    """The Python value inside one configData ``Any``."""
    type_name = packed.TypeName()
    wrapper = _SCALAR_WRAPPERS.get(type_name)
    if wrapper is not None:
        inner = wrapper()
        packed.Unpack(inner)
        if isinstance(inner.value, bytes):
            return base64.b64encode(inner.value).decode("ascii")
        return inner.value
    if type_name == "google.protobuf.Struct":
        struct = struct_pb2.Struct()
        packed.Unpack(struct)
        return {k: _from_json_value(v) for k, v in struct.fields.items()}
    if type_name == "google.protobuf.ListValue":
        items = struct_pb2.ListValue()
        packed.Unpack(items)
        return [_from_json_value(v) for v in items.values]
    if type_name == "google.protobuf.Value":
        single = struct_pb2.Value()
        packed.Unpack(single)
        return _from_json_value(single)
    raise BadRequest(f"unsupported configData value type {type_name!r}", field=path)


def customized_to_proto(
    data: Mapping[str, Any], path: str = "configData"
) -> api_pb2.CustomizedValue:
    out = api_pb2.CustomizedValue()
    _fill_customized(out, data, path)
    return out


def customized_from_proto(msg: FreeFormMessage, path: str = "configData") -> dict[str, Any]:
    return {key: unpack_value(value, f"{path}.{key}") for key, value in msg.data.items()}


def _fill_customized(target: Any, data: Any, path: str) -> None:
    if not isinstance(data, Mapping):
        raise InvalidObject("must be an object", field=path)
    target.SetInParent()  # an empty configData is still present
    for key, value in data.items():
        if not isinstance(key, str):
            raise InvalidObject("keys must be strings", field=path)
        target.data[key].CopyFrom(pack_value(value, f"{path}.{key}"))


def _json_value(value: Any, path: str) -> struct_pb2.Value:
    out = struct_pb2.Value()
    if value is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        if abs(value) > _EXACT_DOUBLE_INT:
            raise InvalidObject("nested integer too large to carry exactly (> 2**53)", field=path)
        out.number_value = float(value)
    elif isinstance(value, float):
        out.number_value = value
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, Mapping):
        out.struct_value.SetInParent()
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidObject("keys must be strings", field=path)
            out.struct_value.fields[key].CopyFrom(_json_value(item, f"{path}.{key}"))
    elif isinstance(value, list | tuple):
        out.list_value.SetInParent()
        for i, item in enumerate(value):
            out.list_value.values.add().CopyFrom(_json_value(item, f"{path}[{i}]"))
    else:
        raise InvalidObject(f"unsupported value type {type(value).__name__}", field=path)
    return out


def _from_json_value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = float(value.number_value)
        if number.is_integer() and abs(number) <= _EXACT_DOUBLE_INT:
            return int(number)
        return number
    if kind == "string_value":
        return str(value.string_value)
    if kind == "bool_value":
        return bool(value.bool_value)
    if kind == "struct_value":
        return {k: _from_json_value(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_from_json_value(v) for v in value.list_value.values]
    return None  # null_value, or a Value with nothing set


# --- generic dict <-> message walk ------------------------------------------------------


def _crd_key(field: Any) -> str:
    name = str(field.name)
    return _CRD_KEY.get((str(field.containing_type.full_name), name), name)


def _is_map(field: Any) -> bool:
    return field.message_type is not None and bool(field.message_type.GetOptions().map_entry)


def _scalar(field: Any, value: Any, path: str) -> Any:
    kind = field.type
    if kind == field.TYPE_STRING:
        if not isinstance(value, str):
            raise InvalidObject("must be a string", field=path)
        return value
    if kind == field.TYPE_BOOL:
        if not isinstance(value, bool):
            raise InvalidObject("must be a boolean", field=path)
        return value
    if kind == field.TYPE_BYTES:
        # JSON has no bytes: base64 text, as Go's encoding/json renders []byte.
        if isinstance(value, bytes):
            return value
        if not isinstance(value, str):
            raise InvalidObject("must be base64 text", field=path)
        try:
            return base64.b64decode(value, validate=True)
        except ValueError as err:
            raise InvalidObject("must be base64 text", field=path) from err
    if kind in (field.TYPE_INT64, field.TYPE_INT32):
        low, high = _INT64 if kind == field.TYPE_INT64 else _INT32
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidObject("must be an integer", field=path)
        if not low <= value <= high:
            raise InvalidObject("integer out of range", field=path)
        return value
    raise InvalidObject(f"unsupported field type {kind}", field=path)  # not in this .proto


def _fill(msg: Any, data: Any, path: str) -> None:
    """Copy the CRD-shaped ``data`` into ``msg`` field by field.  Keys the message has no
    field for are ignored (they are what the DMI does not carry); ``None`` means absent."""
    if not isinstance(data, Mapping):
        raise InvalidObject("must be an object", field=path)
    msg.SetInParent()
    for field in msg.DESCRIPTOR.fields:
        key = _crd_key(field)
        value = data.get(key)
        if value is None:
            continue
        where = f"{path}.{key}"
        target = getattr(msg, field.name)
        if _is_map(field):  # only map<string, string> outside the free-form messages
            if not isinstance(value, Mapping):
                raise InvalidObject("must be an object", field=where)
            for k, v in value.items():
                if not isinstance(k, str) or not isinstance(v, str):
                    raise InvalidObject("must map strings to strings", field=where)
                target[k] = v
        elif field.is_repeated:
            if not isinstance(value, list | tuple):
                raise InvalidObject("must be a list", field=where)
            for i, item in enumerate(value):
                if field.message_type is None:
                    target.append(_scalar(field, item, f"{where}[{i}]"))
                else:
                    _fill(target.add(), item, f"{where}[{i}]")
        elif field.message_type is not None:
            if field.message_type.full_name in _FREE_FORM:
                _fill_customized(target, value, where)
            else:
                _fill(target, value, where)
        else:
            setattr(msg, field.name, _scalar(field, value, where))


def _read(msg: Any, path: str) -> dict[str, Any]:
    """The CRD-shaped dict for ``msg``: fields that are absent (or empty lists and maps)
    are left out, so what went in through ``_fill`` comes back out."""
    out: dict[str, Any] = {}
    for field in msg.DESCRIPTOR.fields:
        key = _crd_key(field)
        value = getattr(msg, field.name)
        where = f"{path}.{key}"
        if _is_map(field):
            if value:
                out[key] = dict(value)
        elif field.is_repeated:
            if value:
                if field.message_type is None:
                    out[key] = [_plain(field, item) for item in value]
                else:
                    out[key] = [_read(item, f"{where}[{i}]") for i, item in enumerate(value)]
        elif field.has_presence:
            if not msg.HasField(field.name):
                continue
            if field.message_type is None:
                out[key] = _plain(field, value)
            elif field.message_type.full_name in _FREE_FORM:
                out[key] = customized_from_proto(value, where)
            else:
                out[key] = _read(value, where)
        else:  # a plain proto3 scalar (Twin.propertyName, TwinProperty.value): always there
            out[key] = _plain(field, value)
    return out


def _plain(field: Any, value: Any) -> Any:
    """A scalar field's value as JSON can hold it (bytes become base64 text)."""
    if field.type == field.TYPE_BYTES:
        return base64.b64encode(value).decode("ascii")
    return value


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidObject("must be an object", field=path)
    return value


def _meta(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = _mapping(obj.get("metadata"), "metadata")
    name, namespace = meta.get("name"), meta.get("namespace") or ""
    if not isinstance(name, str) or not name:
        raise InvalidObject("required", field="metadata.name")
    if not isinstance(namespace, str):
        raise InvalidObject("must be a string", field="metadata.namespace")
    return name, namespace


def _metadata_out(name: str, namespace: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace} if namespace else {"name": name}


# --- model defaults (KubeEdge GetOverriddenDevice) --------------------------------------


def merge_model_defaults(device: Mapping[str, Any], model: Mapping[str, Any]) -> dict[str, Any]:
    """The Device as its mapper should see it: the DeviceModel's defaults fill in what the
    Device leaves out.  The Device always wins; nothing is merged from a model property
    the Device does not list (a Device's properties are what the mapper collects).

    - ``spec.protocol.protocolName`` <- the model's ``spec.protocol`` when unset;
    - ``spec.protocol.configData`` <- the model's ``spec.protocolConfigData``, key by key;
    - per Device property, ``visitors.protocolName`` and ``visitors.configData`` (key by
      key) <- the same-named model property's ``visitors``.

    Returns a new dict; neither input is changed."""
    merged: dict[str, Any] = copy.deepcopy(dict(device))
    mspec = model.get("spec")
    if not isinstance(mspec, Mapping):
        return merged
    spec = merged.get("spec")
    if spec is None:
        spec = merged["spec"] = {}
    if not isinstance(spec, dict):
        return merged  # malformed; device_to_proto will name the field

    default_protocol = mspec.get("protocol")
    default_config = mspec.get("protocolConfigData")
    if default_protocol or isinstance(default_config, Mapping):
        protocol = spec.get("protocol")
        if protocol is None:
            protocol = spec["protocol"] = {}
        if isinstance(protocol, dict):
            if not protocol.get("protocolName") and isinstance(default_protocol, str):
                protocol["protocolName"] = default_protocol
            _merge_config(protocol, default_config)

    visitor_defaults: dict[str, Mapping[str, Any]] = {}
    for prop in mspec.get("properties") or ():
        if isinstance(prop, Mapping) and isinstance(prop.get("visitors"), Mapping):
            if isinstance(prop.get("name"), str):
                visitor_defaults[prop["name"]] = prop["visitors"]
    for prop in spec.get("properties") or ():
        name = prop.get("name") if isinstance(prop, dict) else None
        default = visitor_defaults.get(name) if isinstance(name, str) else None
        if default is None:
            continue
        visitors = prop.get("visitors")
        if visitors is None:
            visitors = prop["visitors"] = {}
        if not isinstance(visitors, dict):
            continue
        if not visitors.get("protocolName") and isinstance(default.get("protocolName"), str):
            visitors["protocolName"] = default["protocolName"]
        _merge_config(visitors, default.get("configData"))
    return merged


def _merge_config(target: dict[str, Any], default: Any) -> None:
    if not isinstance(default, Mapping):
        return
    own = target.get("configData")
    if own is None:
        own = {}
    if isinstance(own, Mapping):
        target["configData"] = {**copy.deepcopy(dict(default)), **own}


# --- Device ---------------------------------------------------------------------------


def device_to_proto(
    device: Mapping[str, Any], model: Mapping[str, Any] | None = None
) -> api_pb2.Device:
    """A stored Device as a DMI ``Device``; with ``model``, its defaults merged in first.
    Raises InvalidObject naming the field when a value cannot be carried."""
    if model is not None:
        device = merge_model_defaults(device, model)
    name, namespace = _meta(device)
    msg = api_pb2.Device(name=name, namespace=namespace)
    spec = _mapping(device.get("spec"), "spec")
    if "spec" in device and device["spec"] is not None:
        msg.spec.SetInParent()
        ref = _mapping(spec.get("deviceModelRef"), "spec.deviceModelRef").get("name")
        if ref is not None:
            msg.spec.deviceModelReference = _scalar(
                api_pb2.DeviceSpec.DESCRIPTOR.fields_by_name["deviceModelReference"],
                ref, "spec.deviceModelRef.name",
            )
        carried = {k: spec[k] for k in ("protocol", "properties", "methods") if k in spec}
        _fill(msg.spec, carried, "spec")
    status = device.get("status")
    state_report = spec.get("stateReport")
    if status is not None:
        status = _mapping(status, "status")
        _fill(msg.status, {k: status.get(k) for k in ("twins", "reportToCloud", "reportCycle")},
              "status")
    if state_report is not None:
        state_report = _mapping(state_report, "spec.stateReport")
        # v1.23 moved these from status to spec; the DMI still carries them in status.
        _fill(msg.status, {k: state_report.get(k) for k in ("reportToCloud", "reportCycle")},
              "spec.stateReport")
    return msg


def device_from_proto(msg: api_pb2.Device) -> dict[str, Any]:
    """A DMI ``Device`` as a ``devices.kubeedge.io/v1beta1`` Device object."""
    out: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "Device",
        "metadata": _metadata_out(msg.name, msg.namespace),
    }
    if msg.HasField("spec"):
        raw = _read(msg.spec, "spec")
        spec: dict[str, Any] = {}
        if "deviceModelReference" in raw:
            spec["deviceModelRef"] = {"name": raw.pop("deviceModelReference")}
        spec.update(raw)
        out["spec"] = spec
    if msg.HasField("status"):
        out["status"] = _read(msg.status, "status")
    return out


# --- DeviceModel ----------------------------------------------------------------------


def model_to_proto(model: Mapping[str, Any]) -> api_pb2.DeviceModel:
    name, namespace = _meta(model)
    msg = api_pb2.DeviceModel(name=name, namespace=namespace)
    if model.get("spec") is not None:
        spec = _mapping(model["spec"], "spec")
        _fill(msg.spec, {k: spec[k] for k in ("properties", "commands") if k in spec}, "spec")
    return msg


def model_from_proto(msg: api_pb2.DeviceModel) -> dict[str, Any]:
    out: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "DeviceModel",
        "metadata": _metadata_out(msg.name, msg.namespace),
    }
    if msg.HasField("spec"):
        out["spec"] = _read(msg.spec, "spec")
    return out


# --- twins and mapper info ------------------------------------------------------------


def twins_to_proto(twins: Sequence[Mapping[str, Any]]) -> list[api_pb2.Twin]:
    """Twins shaped like ``Device.status.twins[]``:
    ``{"propertyName", "reported": {"value", "metadata"}, "observedDesired": {...}}``."""
    out = []
    for i, twin in enumerate(twins):
        msg = api_pb2.Twin()
        _fill(msg, twin, f"twins[{i}]")
        out.append(msg)
    return out


def twins_from_proto(twins: Iterable[api_pb2.Twin]) -> list[dict[str, Any]]:
    return [_read(twin, f"twins[{i}]") for i, twin in enumerate(twins)]


def mapper_info_to_proto(info: Mapping[str, Any]) -> api_pb2.MapperInfo:
    address = info.get("address") or ""
    return api_pb2.MapperInfo(
        name=str(info.get("name") or ""),
        version=str(info.get("version") or ""),
        api_version=str(info.get("api_version") or ""),
        protocol=str(info.get("protocol") or ""),
        address=address if isinstance(address, bytes) else str(address).encode(),
        state=str(info.get("state") or ""),
    )


def mapper_info_from_proto(msg: api_pb2.MapperInfo) -> dict[str, str]:
    """MapperInfo as a plain dict; ``address`` (a socket path) decoded to text."""
    return {
        "name": msg.name,
        "version": msg.version,
        "api_version": msg.api_version,
        "protocol": msg.protocol,
        "address": bytes(msg.address).decode("utf-8", "surrogateescape"),
        "state": msg.state,
    }


# --- errors <-> gRPC status codes -----------------------------------------------------

_CODE_FOR_ERROR: dict[type[EdgefleetError], str] = {
    InvalidObject: "INVALID_ARGUMENT",
    BadRequest: "INVALID_ARGUMENT",
    FrameDecodeError: "INVALID_ARGUMENT",
    Unauthorized: "UNAUTHENTICATED",
    Forbidden: "PERMISSION_DENIED",
    NotFound: "NOT_FOUND",
    AlreadyExists: "ALREADY_EXISTS",
    Conflict: "ABORTED",
    Gone: "FAILED_PRECONDITION",
    TooLarge: "RESOURCE_EXHAUSTED",
    RateLimited: "RESOURCE_EXHAUSTED",
}

_ERROR_FOR_CODE: dict[str, type[EdgefleetError]] = {
    "INVALID_ARGUMENT": BadRequest,
    "UNAUTHENTICATED": Unauthorized,
    "PERMISSION_DENIED": Forbidden,
    "NOT_FOUND": NotFound,
    "ALREADY_EXISTS": AlreadyExists,
    "ABORTED": Conflict,
    "FAILED_PRECONDITION": Conflict,
    "RESOURCE_EXHAUSTED": RateLimited,
}


def grpc_code_name(err: EdgefleetError) -> str:
    """The ``grpc.StatusCode`` member name for an error (INTERNAL when unmapped)."""
    for cls in type(err).__mro__:
        code = _CODE_FOR_ERROR.get(cls)
        if code is not None:
            return code
    return "INTERNAL"


def error_from_grpc(code_name: str, details: str) -> EdgefleetError:
    """The typed error for a failed call, from the ``grpc.StatusCode`` member name."""
    cls = _ERROR_FOR_CODE.get(code_name)
    if cls is None:
        return EdgefleetError(f"{code_name}: {details}")
    return cls(details)
