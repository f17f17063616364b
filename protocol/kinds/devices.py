"""KubeEdge's Device and DeviceModel kinds (``devices.kubeedge.io/v1beta1``).

The models mirror the v1beta1 ``openAPIV3Schema`` of KubeEdge's CRDs field for field, so
that a manifest written for KubeEdge validates here unchanged and a bad one is refused
with the path of the offending field, as ``kubectl apply --validate=strict`` would:

- unknown fields are rejected (``extra="forbid"``) except where the CRD says
  ``x-kubernetes-preserve-unknown-fields`` - those are free-form ``dict[str, Any]``;
- scalars use pydantic's strict types, because the API server does not turn ``"5"``
  into 5 or ``"yes"`` into true;
- integers carry the range of their Go type (``int64`` unless the CRD says ``int32``);
- a field is required only where the CRD lists it under ``required``.  Optional fields
  also accept ``null``, which the API server prunes before validating.

Field names keep the CRD's spelling, odd casing included (``TDEngine``,
``TDEngineClientConfig``, ``poolsize``).  Objects are stored as the user wrote them;
these models only judge them.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

from protocol.errors import InvalidObject
from protocol.resources import Column, KindInfo, register

GROUP = "devices.kubeedge.io"
VERSION = "v1beta1"

Int64 = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]
Int32 = Annotated[StrictInt, Field(ge=-(2**31), le=2**31 - 1)]
FreeForm = dict[str, Any]
"""An ``x-kubernetes-preserve-unknown-fields`` object: any keys, any values."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- shared pieces ---------------------------------------------------------------------


class TwinProperty(_Strict):
    """A desired, reported or observed-desired value.  Values are always strings."""

    value: StrictStr
    metadata: dict[str, StrictStr] | None = None


class VisitorConfig(_Strict):
    """How a mapper reaches one property; ``configData`` keys are the mapper's business."""

    protocolName: StrictStr | None = None
    configData: FreeForm | None = None


# --- Device spec -----------------------------------------------------------------------


class DeviceModelRef(_Strict):
    name: StrictStr | None = None


class ProtocolConfig(_Strict):
    protocolName: StrictStr | None = None
    configData: FreeForm | None = None


class PushMethodHTTP(_Strict):
    hostName: StrictStr | None = None
    port: Int64 | None = None
    requestPath: StrictStr | None = None
    timeout: Int64 | None = None


class PushMethodMQTT(_Strict):
    address: StrictStr | None = None
    topic: StrictStr | None = None
    qos: Int32 | None = None
    retained: StrictBool | None = None


class PushMethodOTEL(_Strict):
    endpointURL: StrictStr | None = None


class Influxdb2ClientConfig(_Strict):
    url: StrictStr | None = None
    org: StrictStr | None = None
    bucket: StrictStr | None = None


class Influxdb2DataConfig(_Strict):
    measurement: StrictStr | None = None
    tag: dict[str, StrictStr] | None = None
    fieldKey: StrictStr | None = None


class DBMethodInfluxdb2(_Strict):
    influxdb2ClientConfig: Influxdb2ClientConfig | None = None
    influxdb2DataConfig: Influxdb2DataConfig | None = None


class RedisClientConfig(_Strict):
    # The CRD gives these no format; the Go fields are `int`, 64-bit on every platform
    # KubeEdge ships for.
    addr: StrictStr | None = None
    db: Int64 | None = None
    poolsize: Int64 | None = None
    minIdleConns: Int64 | None = None


class DBMethodRedis(_Strict):
    redisClientConfig: RedisClientConfig | None = None


class TDEngineClientConfigModel(_Strict):
    # Not named TDEngineClientConfig: DBMethodTDEngine has a field of that name, and a
    # class attribute shadowing its own annotation's type breaks annotation resolution.
    addr: StrictStr | None = None
    dbName: StrictStr | None = None


class DBMethodTDEngine(_Strict):
    TDEngineClientConfig: TDEngineClientConfigModel | None = None


class MySQLClientConfig(_Strict):
    addr: StrictStr | None = None
    database: StrictStr | None = None
    userName: StrictStr | None = None


class DBMethodMySQL(_Strict):
    mysqlClientConfig: MySQLClientConfig | None = None


class DBMethod(_Strict):
    influxdb2: DBMethodInfluxdb2 | None = None
    redis: DBMethodRedis | None = None
    TDEngine: DBMethodTDEngine | None = None
    mysql: DBMethodMySQL | None = None


class PushMethod(_Strict):
    http: PushMethodHTTP | None = None
    mqtt: PushMethodMQTT | None = None
    otel: PushMethodOTEL | None = None
    dbMethod: DBMethod | None = None
    anomalyDetection: FreeForm | None = None


class DeviceProperty(_Strict):
    name: StrictStr | None = None
    desired: TwinProperty | None = None
    visitors: VisitorConfig | None = None
    reportCycle: Int64 | None = None  # milliseconds in mapper-framework
    collectCycle: Int64 | None = None  # milliseconds in mapper-framework
    reportToCloud: StrictBool | None = None
    pushMethod: PushMethod | None = None


class DeviceMethod(_Strict):
    name: StrictStr | None = None
    description: StrictStr | None = None
    propertyNames: list[StrictStr] | None = None


class StateReport(_Strict):
    reportCycle: Int64 | None = None
    reportToCloud: StrictBool | None = None


class DeviceSpec(_Strict):
    deviceModelRef: DeviceModelRef | None = None
    nodeName: StrictStr | None = None
    protocol: ProtocolConfig | None = None
    properties: list[DeviceProperty] | None = None
    methods: list[DeviceMethod] | None = None
    stateReport: StateReport | None = None

    @model_validator(mode="after")
    def _property_names_unique(self) -> DeviceSpec:
        # Twins, visitors and MQTT topics are all keyed by property name, so KubeEdge
        # requires uniqueness (the CRD only says so in prose).  InvalidObject is not a
        # ValueError, so pydantic lets it through with our exact path: this model is
        # only ever validated as an object's `spec`.
        seen: set[str] = set()
        for i, prop in enumerate(self.properties or ()):
            if prop.name is None:
                continue
            if prop.name in seen:
                raise InvalidObject(
                    f"duplicate property name {prop.name!r}", field=f"spec.properties[{i}].name"
                )
            seen.add(prop.name)
        return self


# --- Device status ---------------------------------------------------------------------


class Twin(_Strict):
    propertyName: StrictStr | None = None
    reported: TwinProperty | None = None
    observedDesired: TwinProperty | None = None


class DeviceStatus(BaseModel):
    """The CRD types only ``reportCycle``/``reportToCloud`` here (the rest of the status
    moved to KubeEdge's separate DeviceStatus kind) and marks the object
    ``x-kubernetes-preserve-unknown-fields``, so other fields are allowed.  The twin,
    state and lastOnlineTime fields that edgefleet itself writes and reads are typed as
    in the DeviceStatus CRD, so a malformed report cannot reach the twin controller."""

    model_config = ConfigDict(extra="allow")

    reportCycle: Int64 | None = None
    reportToCloud: StrictBool | None = None
    twins: list[Twin] | None = None
    state: StrictStr | None = None
    lastOnlineTime: StrictStr | None = None
    extensions: FreeForm | None = None


# --- DeviceModel -----------------------------------------------------------------------


class PropertyType(StrEnum):
    INT = "INT"
    FLOAT = "FLOAT"
    DOUBLE = "DOUBLE"
    STRING = "STRING"
    BOOLEAN = "BOOLEAN"
    BYTES = "BYTES"
    STREAM = "STREAM"


class AccessMode(StrEnum):
    READ_WRITE = "ReadWrite"
    READ_ONLY = "ReadOnly"


class ModelProperty(_Strict):
    name: StrictStr | None = None
    description: StrictStr | None = None
    type: PropertyType | None = None
    accessMode: AccessMode | None = None
    minimum: StrictStr | None = None
    maximum: StrictStr | None = None
    unit: StrictStr | None = None
    visitors: VisitorConfig | None = None  # a default the Device may override


class DeviceModelSpec(_Strict):
    protocol: StrictStr | None = None
    protocolConfigData: FreeForm | None = None  # a default the Device may override
    properties: list[ModelProperty] | None = None


class DeviceModelStatus(_Strict):
    """The DeviceModel CRD has no status; with no fields allowed, any status content is
    reported as an unknown field rather than silently kept."""


# --- registration and helpers ----------------------------------------------------------

DEVICE = register(
    KindInfo(
        kind="Device",
        group=GROUP,
        version=VERSION,
        plural="devices",
        namespaced=True,
        spec_model=DeviceSpec,
        status_model=DeviceStatus,
        short_names=("dev",),
        columns=(
            Column("NODE", "spec.nodeName"),
            Column("MODEL", "spec.deviceModelRef.name"),
            Column("PROTOCOL", "spec.protocol.protocolName", wide_only=True),
            Column("STATE", "status.state", wide_only=True),
        ),
    )
)

DEVICE_MODEL = register(
    KindInfo(
        kind="DeviceModel",
        group=GROUP,
        version=VERSION,
        plural="devicemodels",
        namespaced=True,
        spec_model=DeviceModelSpec,
        status_model=DeviceModelStatus,
        short_names=("dm",),
        columns=(Column("PROTOCOL", "spec.protocol"),),
    )
)


def device_node(device: Mapping[str, Any]) -> str | None:
    """The node a Device is bound to, or None: a Device with no (or an empty) nodeName
    is never sent to any edge."""
    spec = device.get("spec") or {}
    node = spec.get("nodeName") if isinstance(spec, Mapping) else None
    return node if isinstance(node, str) and node else None


def device_model_name(device: Mapping[str, Any]) -> str | None:
    """The name of the DeviceModel (same namespace) a Device is built from, or None."""
    spec = device.get("spec") or {}
    ref = spec.get("deviceModelRef") if isinstance(spec, Mapping) else None
    name = ref.get("name") if isinstance(ref, Mapping) else None
    return name if isinstance(name, str) and name else None
