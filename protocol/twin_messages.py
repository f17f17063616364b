"""JSON payloads on the edge's device MQTT topics, and their parsers.

Shapes follow KubeEdge (reference/kubeedge-protocol.md §1.4); every message carries
``event_id`` (a string) and ``timestamp`` (int, milliseconds since the epoch)::

    .../twin/update           TwinUpdateRequest   {event_id, timestamp, twin: {name: MsgTwin|null}}
    .../twin/update/result    TwinUpdateResult    {event_id, timestamp, twin: {name: MsgTwin|null}}
                              or TwinErrorResult  {event_id, timestamp, code, reason}
    .../twin/update/delta     TwinDeltaMessage    {event_id, timestamp, twin, delta: {name: value}}
    .../twin/update/document  TwinDocumentMessage {event_id, timestamp,
                                                   twin: {name: {last, current}}}
    .../twin/get              BaseRequest         {event_id, timestamp}
    .../twin/get/result       TwinGetResult       {event_id, timestamp, twin}
    .../state/update          StateUpdateRequest  {event_id, timestamp, state}
    .../state/update/result   StateUpdateResult   {event_id, timestamp, device: {name, state,
                                                   lastOnlineTime}}
    membership/get            BaseRequest
    membership/get/result     MembershipGetResult {event_id, timestamp, devices: [...]}
    membership/updated        MembershipUpdated   {event_id, timestamp, added_devices,
                                                   removed_devices}

Requests are decoded the way KubeEdge's Go decoder reads them: field names match in
any letter case (``State`` and ``STATE`` are ``state``), unknown fields are ignored,
``null`` leaves a field at its default, and a value of the wrong JSON type is an error.

The ``parse_*`` functions never raise on bad input: they return a :class:`TwinError`
with the code and reason to answer on the result topic.  Codes: 400 bad request, 404
device not found, 409 version conflict, 413 payload too large, 500 internal.  KubeEdge
has no size limit (the broker's is the only one); edgefleet answers an oversized
payload with **413** rather than 400 so that a client can tell "too big" from "wrong".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from protocol import errors
from protocol.twin_values import is_valid_key, is_valid_value

MAX_PAYLOAD_BYTES = 1 << 20
"""Default largest request accepted (1 MiB): a thousand 512-character twins fit."""

STATES = ("online", "offline", "ok", "unknown", "unhealthy")
"""Device states a state update may set (lower case)."""

Int64 = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]
Counter = Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]

MISSING_TWIN_REASON = "Update twin error, key:twin does not exist"


# --- errors ----------------------------------------------------------------------------


class TwinErrorCode(IntEnum):
    BAD_REQUEST = 400
    NOT_FOUND = 404
    CONFLICT = 409
    TOO_LARGE = 413
    INTERNAL = 500
    STORE_FULL = 507  # the edge's twin store is at its size cap: nothing was stored


_EXCEPTION_FOR_CODE: dict[int, type[errors.EdgefleetError]] = {
    400: errors.BadRequest,
    404: errors.NotFound,
    409: errors.Conflict,
    413: errors.TooLarge,
    507: errors.StoreFull,
}


@dataclass(frozen=True)
class TwinError:
    """A refused request: what to answer on the result topic.  A value, not an exception."""

    code: int
    reason: str
    event_id: str = ""

    def to_result(self, now_ms: int) -> TwinErrorResult:
        return TwinErrorResult(
            event_id=self.event_id, timestamp=now_ms, code=self.code, reason=self.reason
        )

    def to_exception(self) -> errors.EdgefleetError:
        return _EXCEPTION_FOR_CODE.get(self.code, errors.EdgefleetError)(self.reason)


def bad_request(reason: str, event_id: str = "") -> TwinError:
    return TwinError(TwinErrorCode.BAD_REQUEST, reason, event_id)


def device_not_found(device_id: str = "", event_id: str = "") -> TwinError:
    named = f"device {device_id}" if device_id else "the device"
    return TwinError(TwinErrorCode.NOT_FOUND, f"{named} does not exist", event_id)


# --- incoming --------------------------------------------------------------------------


def _fold_keys(data: dict[Any, Any], fields: dict[str, str]) -> dict[str, Any]:
    """Rename keys to field names ignoring case, as Go's encoding/json matches them.

    Keys are taken in order and a later one wins, as in Go; unknown keys and ``null``
    values are dropped (Go leaves such fields at their zero value)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str) or value is None:
            continue
        target = key if key in fields.values() else fields.get(key.casefold())
        if target is not None:
            out[target] = value
    return out


def _replace_surrogates(text: str) -> str:
    # JSON may escape a lone surrogate ("\ud800"); Go decodes it to U+FFFD, and a str
    # holding one cannot be encoded again, so the echo in a result would fail.
    if text.isascii() or not any("\ud800" <= ch <= "\udfff" for ch in text):
        return text  # (isascii first: a C scan, where the generator costs µs per id)
    return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)


_FOLDED_NAMES: dict[type, dict[str, str]] = {}
# Each model's field names, read once: ``cls.model_fields`` is a property that builds its
# answer on every access, and every request passes here three times or more.
_FIELD_NAMES: dict[type, frozenset[str]] = {}


class _GoDecoded(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _match_field_names(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fields = _FIELD_NAMES.get(cls)
        if fields is None:
            fields = _FIELD_NAMES[cls] = frozenset(cls.model_fields)
        # The common case, every key spelled as its field and none null, needs no copy.
        if all(value is not None and key in fields for key, value in data.items()):
            return data
        names = _FOLDED_NAMES.get(cls)
        if names is None:
            names = _FOLDED_NAMES[cls] = {name.casefold(): name for name in cls.model_fields}
        return _fold_keys(data, names)


class BaseRequest(_GoDecoded):
    """``twin/get`` and ``membership/get`` requests: only the base fields."""

    event_id: StrictStr = ""
    timestamp: Int64 = 0

    @field_validator("event_id")
    @classmethod
    def _clean_event_id(cls, value: str) -> str:
        return _replace_surrogates(value)


class VersionIn(_GoDecoded):
    cloud: Counter = 0
    edge: Counter = 0


class ValueMetadataIn(_GoDecoded):
    timestamp: Int64 | None = None  # accepted, never used: the edge stamps its own time


class TwinValueIn(_GoDecoded):
    value: StrictStr | None = None
    metadata: ValueMetadataIn | None = None


class TypeMetadataIn(_GoDecoded):
    type: StrictStr | None = None


class MsgTwinIn(_GoDecoded):
    """One property in an update request.  Every field is optional."""

    expected: TwinValueIn | None = None
    actual: TwinValueIn | None = None
    optional: StrictBool | None = None
    metadata: TypeMetadataIn | None = None
    expected_version: VersionIn | None = None
    actual_version: VersionIn | None = None


class TwinUpdateRequest(BaseRequest):
    """``twin/update``.  A ``null`` property deletes it (only if it is optional)."""

    # Field-name folding drops nulls at the top level only: inside ``twin`` a null is a
    # delete and is kept.
    twin: dict[str, MsgTwinIn | None]


class StateUpdateRequest(BaseRequest):
    """``state/update``; ``state`` is stored lower-cased by :func:`parse_state_update`."""

    state: StrictStr = ""


# --- outgoing --------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)

    def to_json(self) -> bytes:
        """The MQTT payload: absent optional fields are left out, as Go's omitempty does."""
        return self.model_dump_json(exclude_none=True).encode()


class Version(_Out):
    """A ``{cloud, edge}`` version pair; each side counts the changes made from there."""

    cloud: Counter = 0
    edge: Counter = 0

    def bump_cloud(self) -> Version:
        return Version(cloud=self.cloud + 1, edge=self.edge)

    def bump_edge(self) -> Version:
        return Version(cloud=self.cloud, edge=self.edge + 1)

    def newer_than(self, other: Version) -> bool:
        """Whether either side has seen a change ``other`` has not (KubeEdge's conflict rule)."""
        return self.cloud > other.cloud or self.edge > other.edge


class ValueMetadataOut(_Out):
    timestamp: int


class TwinValueOut(_Out):
    value: str | None = None
    metadata: ValueMetadataOut | None = None


class TypeMetadataOut(_Out):
    type: str


class MsgTwinOut(_Out):
    expected: TwinValueOut | None = None
    actual: TwinValueOut | None = None
    optional: bool | None = None
    metadata: TypeMetadataOut | None = None
    expected_version: Version | None = None
    actual_version: Version | None = None


class TwinDoc(_Out):
    """``last`` and ``current`` are always written, ``null`` when the twin did not exist."""

    last: MsgTwinOut | None = None
    current: MsgTwinOut | None = None

    @model_serializer(mode="wrap")
    def _keep_nulls(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        body: dict[str, Any] = handler(self)
        return {"last": body.get("last"), "current": body.get("current")}


class _BaseOut(_Out):
    event_id: str = ""
    timestamp: int = 0


class TwinUpdateResult(_BaseOut):
    twin: dict[str, MsgTwinOut | None]


class TwinErrorResult(_BaseOut):
    code: int
    reason: str


class TwinDeltaMessage(_BaseOut):
    twin: dict[str, MsgTwinOut]
    delta: dict[str, str]


class TwinDocumentMessage(_BaseOut):
    twin: dict[str, TwinDoc]


class TwinGetResult(_BaseOut):
    twin: dict[str, MsgTwinOut]


class DeviceStateOut(_Out):
    name: str
    state: str
    lastOnlineTime: str  # camelCase here, ``last_online`` in membership payloads (sic)


class StateUpdateResult(_BaseOut):
    device: DeviceStateOut


class MembershipAttr(_Out):
    value: str | None = None
    optional: bool | None = None
    metadata: TypeMetadataOut | None = None


class MembershipDevice(_Out):
    id: str  # "<namespace>/<name>"
    name: str
    description: str | None = None
    state: str | None = None
    last_online: str | None = None
    attributes: dict[str, MembershipAttr] | None = None
    twin: dict[str, MsgTwinOut] | None = None  # versions stripped in MQTT copies


class MembershipGetResult(_BaseOut):
    devices: list[MembershipDevice]


class MembershipUpdated(_BaseOut):
    added_devices: list[MembershipDevice] = Field(default_factory=list)
    removed_devices: list[MembershipDevice] = Field(default_factory=list)


# --- parsing ---------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's json would accept NaN/Infinity


# One decoder for every request: json.loads with an option builds a new one each call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _event_id_of(data: Any) -> str:
    """Best effort, so that an error result still names the request it answers."""
    if not isinstance(data, dict):
        return ""
    found = ""
    for key, value in data.items():
        if isinstance(key, str) and key.casefold() == "event_id" and isinstance(value, str):
            found = _replace_surrogates(value)
    return found


def _load_object(
    payload: bytes | str, max_bytes: int, what: str, *, empty_ok: bool = False
) -> dict[str, Any] | TwinError:
    size = len(payload.encode() if isinstance(payload, str) else payload)
    if size > max_bytes:
        return TwinError(
            TwinErrorCode.TOO_LARGE, f"{what} of {size} bytes exceeds the limit of {max_bytes}"
        )
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
        if empty_ok and not text.strip():
            return {}
        data = _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return bad_request(f"{what} is not valid JSON: {_short(exc)}")
    if not isinstance(data, dict):
        return bad_request(f"{what} must be a JSON object", _event_id_of(data))
    return data


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def _validation_reason(exc: ValidationError) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


def parse_update_request(
    payload: bytes | str, max_bytes: int = MAX_PAYLOAD_BYTES
) -> TwinUpdateRequest | TwinError:
    """Decode a ``twin/update`` payload and check its keys and values' charset.

    Value types are checked later, against the stored twin, by ``apply_edge_update``."""
    data = _load_object(payload, max_bytes, "update request")
    if isinstance(data, TwinError):
        return data
    event_id = _event_id_of(data)
    if not any(isinstance(k, str) and k.casefold() == "twin" and v is not None
               for k, v in data.items()):
        return bad_request(MISSING_TWIN_REASON, event_id)
    try:
        request = TwinUpdateRequest.model_validate(data)
    except ValidationError as exc:
        return bad_request(f"invalid update request: {_validation_reason(exc)}", event_id)
    problem = check_update_charset(request)
    if problem is not None:
        return bad_request(problem, request.event_id)
    return request


def check_update_charset(request: TwinUpdateRequest) -> str | None:
    """The reason the request breaks KubeEdge's key/value charset rule, or ``None``."""
    for name, msg in request.twin.items():
        if not is_valid_key(name):
            return (f"twin key {name[:140]!r} is invalid: use 1-128 characters from "
                    "a-z A-Z 0-9 - _ . , : / @ #")
        if msg is None:
            continue
        for side, value in (("expected", msg.expected), ("actual", msg.actual)):
            if value is not None and value.value is not None and not is_valid_value(value.value):
                return (f"twin {name}: {side} value is invalid: use at most 512 characters "
                        "from a-z A-Z 0-9 - _ . , : / @ # (no spaces, quotes or JSON)")
    return None


def parse_get_request(
    payload: bytes | str, max_bytes: int = MAX_PAYLOAD_BYTES
) -> BaseRequest | TwinError:
    """Decode a ``twin/get`` or ``membership/get`` payload.  An empty payload is a request
    with no event id (KubeEdge would refuse it; nothing is gained by that)."""
    data = _load_object(payload, max_bytes, "get request", empty_ok=True)
    if isinstance(data, TwinError):
        return data
    try:
        return BaseRequest.model_validate(data)
    except ValidationError as exc:
        return bad_request(f"invalid get request: {_validation_reason(exc)}", _event_id_of(data))


def parse_state_update(
    payload: bytes | str, max_bytes: int = MAX_PAYLOAD_BYTES
) -> StateUpdateRequest | TwinError:
    """Decode a ``state/update`` payload; the state comes back lower-cased.

    KubeEdge silently drops an unknown state.  Here it is answered with a 400 on
    ``state/update/result``, since that topic exists and a silent drop helps nobody.
    The key is matched in any case because KubeEdge's DMI path sends ``"State"``."""
    data = _load_object(payload, max_bytes, "state update")
    if isinstance(data, TwinError):
        return data
    try:
        request = StateUpdateRequest.model_validate(data)
    except ValidationError as exc:
        return bad_request(f"invalid state update: {_validation_reason(exc)}", _event_id_of(data))
    return normalize_state_request(request)


def normalize_state_request(request: StateUpdateRequest) -> StateUpdateRequest | TwinError:
    """Lower-case the state and check it is one of :data:`STATES`."""
    state = request.state.lower()
    if state not in STATES:
        shown = request.state[:64]
        return bad_request(
            f"state {shown!r} is not one of {', '.join(STATES)}", request.event_id
        )
    return request.model_copy(update={"state": state})
