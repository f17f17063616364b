"""The device twin algebra: pure functions over a device's twin.

A twin is ``dict[str, TwinProperty]``, one entry per device property.  Each property
holds the *expected* value (desired: set by the cloud, or locally over MQTT) and the
*actual* value (reported by the mapper or device), each with the time it last changed and
a KubeEdge ``{cloud, edge}`` version pair (reference/kubeedge-protocol.md §1.4-1.5).

Who wins:

- **Reported values: the edge.**  :func:`apply_edge_update` takes a ``twin/update``
  from MQTT or DMI, bumps ``edge`` on the side it changed and never checks versions,
  as KubeEdge does, unless the request itself carries a version: then the update is
  refused with 409 if the stored side has seen a change the requester had not.
- **Desired values: the cloud.**  :func:`apply_desired_from_cloud` takes the Device's
  ``spec.properties[].desired`` and overwrites expected wherever it differs, bumping
  ``cloud``.  An expected value set locally lasts until the next Device update.

Nothing here reads a clock or opens anything: callers pass ``now_ms`` and publish,
store and upload what the functions return.

Choices where KubeEdge is silent or odd, made here on purpose:

- Values that did not change are not changes: no version bump, no new timestamp, no
  document.  A value's timestamp is the time it last *changed*.  (KubeEdge bumps on
  every report, so a mapper polling once a second floods the cloud with versions.)
- An empty value means "no value": it passes any type, and an empty expected value
  never produces a delta.
- Numbers are compared as numbers for the delta (``30`` equals ``30.0`` for a float).
- Deleting a property leaves a tombstone (type ``deleted``, no values) that keeps its
  versions, so versions never go backwards when the name comes back.  A delete, a
  revival and a type change bump both sides' versions, so that every change visible in
  the cloud's status moves a version (:func:`pending_reports` relies on it).  Tombstones are
  hidden from get, delta and status.  ``metadata.type: "deleted"`` in an update is a
  delete, exactly as a ``null`` property is.
- The type of a live property is fixed: a different ``metadata.type`` in an update is
  ignored (KubeEdge does the same); the cloud may change it through the DeviceModel.
- Properties declared by the Device spec (``in_spec``) are not optional: they cannot be
  deleted from the edge.  When one leaves the spec it becomes a tombstone.  Properties
  created over MQTT (optional by default, as in KubeEdge) belong to the edge and are
  left alone by the cloud.
- The delta is published after every successful update while any property still
  differs, as KubeEdge does; a mapper that missed one delta gets it again with the next
  report.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, TypeAdapter
from pydantic_core import to_json

from protocol.twin_messages import (
    DeviceStateOut,
    MsgTwinIn,
    MsgTwinOut,
    StateUpdateRequest,
    StateUpdateResult,
    TwinDeltaMessage,
    TwinDocumentMessage,
    TwinError,
    TwinErrorCode,
    TwinErrorResult,
    TwinGetResult,
    TwinUpdateRequest,
    TwinUpdateResult,
    TwinValueIn,
    TypeMetadataIn,
    Version,
    bad_request,
    check_update_charset,
    device_not_found,
    normalize_state_request,
)
from protocol.twin_values import (
    TwinType,
    parse_twin_type,
    twin_type_for_model_type,
    value_fits_type,
    values_equal,
)

# --- state -----------------------------------------------------------------------------


class TwinValue(BaseModel):
    model_config = ConfigDict(frozen=True)

    value: str
    timestamp: int  # ms since the epoch when this value last changed


class TwinProperty(BaseModel):
    """One property's twin, as stored on the edge (``model_dump_json`` persists it)."""

    model_config = ConfigDict(frozen=True)

    expected: TwinValue | None = None
    actual: TwinValue | None = None
    optional: bool = True
    value_type: TwinType = TwinType.STRING
    expected_version: Version = Version()
    actual_version: Version = Version()
    in_spec: bool = False  # declared by the Device spec: owned by the cloud

    @property
    def deleted(self) -> bool:
        return self.value_type is TwinType.DELETED

    def to_msg(self, *, versions: bool) -> MsgTwinOut:
        """The KubeEdge ``MsgTwin`` shape, with or without the version pairs."""
        return MsgTwinOut.model_validate(self.msg_dict(versions=versions))

    def msg_dict(self, *, versions: bool) -> dict[str, Any]:
        """:meth:`to_msg` as the plain JSON object its ``to_json`` writes (fields in the
        same order, absent ones left out).  The ``*_payload`` functions serialise these
        directly: building the pydantic models cost more than the rest of a twin update
        (scripts/bench/twin), and a property test keeps the two byte-identical."""
        out: dict[str, Any] = {}
        if self.expected is not None:
            out["expected"] = _value_dict(self.expected)
        if self.actual is not None:
            out["actual"] = _value_dict(self.actual)
        out["optional"] = self.optional
        out["metadata"] = {"type": self.value_type.value}
        if versions:
            out["expected_version"] = {"cloud": self.expected_version.cloud,
                                       "edge": self.expected_version.edge}
            out["actual_version"] = {"cloud": self.actual_version.cloud,
                                     "edge": self.actual_version.edge}
        return out


def _value_dict(value: TwinValue) -> dict[str, Any]:
    return {"value": value.value, "metadata": {"timestamp": value.timestamp}}


Twin = dict[str, TwinProperty]
"""A device's twin: property name -> property."""

_TWIN_ADAPTER: TypeAdapter[dict[str, TwinProperty]] = TypeAdapter(dict[str, TwinProperty])


def twin_to_json(twin: Mapping[str, TwinProperty]) -> bytes:
    """Serialise a whole twin (tombstones included) for storage."""
    return _TWIN_ADAPTER.dump_json(dict(twin))


def twin_from_json(data: bytes | str) -> Twin:
    return _TWIN_ADAPTER.validate_json(data)


def _new_event_id() -> str:
    return str(uuid.uuid4())


def _tombstone(prop: TwinProperty, bump: str) -> TwinProperty:
    """The property deleted: values gone, both versions bumped on the ``bump`` side."""
    return _bump_both(prop, bump).model_copy(update={
        "expected": None, "actual": None, "value_type": TwinType.DELETED, "in_spec": False,
    })


def _bump(version: Version, side: str) -> Version:
    return version.bump_cloud() if side == "cloud" else version.bump_edge()


def _bump_both(prop: TwinProperty, side: str) -> TwinProperty:
    # For changes that touch both sides' status: a delete, a revival, a new type.  Keeping
    # "every visible change moves a version" is what makes pending_reports exact.
    return prop.model_copy(update={
        "expected_version": _bump(prop.expected_version, side),
        "actual_version": _bump(prop.actual_version, side),
    })


# --- the edge's updates ----------------------------------------------------------------


@dataclass(frozen=True)
class UpdateOutcome:
    """What :func:`apply_edge_update` decided.

    Store ``twin`` only when ``error`` is ``None`` (on an error it is the input, or an
    empty twin for an unknown device).  Publish ``result`` on ``.../twin/update/result``,
    ``document`` (if any) on ``.../twin/update/document`` and ``delta`` (if any) on
    ``.../twin/update/delta``.  ``changed`` names the properties whose stored state
    changed; their new versions are what :func:`pending_reports` will find.

    ``result``, ``document`` and ``delta`` are built when first read: a caller that
    knows nobody listens on a topic skips that message's cost.
    """

    twin: Twin
    changed: frozenset[str]
    error: TwinError | None = None
    before: Mapping[str, TwinProperty] = field(default_factory=dict)
    request: TwinUpdateRequest | None = None
    now_ms: int = 0

    @cached_property
    def result(self) -> TwinUpdateResult | TwinErrorResult:
        if self.error is not None:
            return self.error.to_result(self.now_ms)
        return TwinUpdateResult.model_validate(self._result_dict())

    @cached_property
    def delta(self) -> TwinDeltaMessage | None:
        if self.error is not None:
            return None
        return build_delta_message(self.twin, event_id=self._delta_event_id, now_ms=self.now_ms)

    @cached_property
    def document(self) -> TwinDocumentMessage | None:
        if self.error is not None or self.request is None:
            return None
        return build_document(self.before, self.twin, sorted(self.changed),
                              event_id=self.request.event_id, now_ms=self.now_ms)

    @property
    def publish_delta(self) -> bool:
        return self.delta is not None

    # The same three messages as MQTT payloads, without building the models.

    def result_payload(self) -> bytes:
        if self.error is not None:
            return self.result.to_json()
        return to_json(self._result_dict())

    def delta_payload(self) -> bytes | None:
        if self.error is not None or not delta(self.twin):
            return None  # (checked first: no event id is drawn for nothing)
        return delta_payload(self.twin, event_id=self._delta_event_id, now_ms=self.now_ms)

    def document_payload(self) -> bytes | None:
        if self.error is not None or self.request is None:
            return None
        return document_payload(self.before, self.twin, sorted(self.changed),
                                event_id=self.request.event_id, now_ms=self.now_ms)

    @cached_property
    def _delta_event_id(self) -> str:
        return _new_event_id()

    def _result_dict(self) -> dict[str, Any]:
        assert self.request is not None
        twin = self.twin
        return {"event_id": self.request.event_id, "timestamp": self.now_ms, "twin": {
            name: None if twin[name].deleted else twin[name].msg_dict(versions=True)
            for name in self.request.twin
        }}


def _refused(
    twin: Mapping[str, TwinProperty] | None, error: TwinError, now_ms: int
) -> UpdateOutcome:
    return UpdateOutcome(twin=dict(twin or {}), changed=frozenset(), error=error, now_ms=now_ms)


def apply_edge_update(
    twin: Mapping[str, TwinProperty] | None, request: TwinUpdateRequest, now_ms: int,
    *, charset_checked: bool = False,
) -> UpdateOutcome:
    """Apply a ``twin/update`` (MQTT, or DMI's ReportDeviceStatus) to a device's twin.

    ``twin`` is ``None`` when the device is unknown (404).  Every property is checked
    before any is applied: one bad property refuses the whole request (400, or 409 on a
    version conflict) and leaves the twin as it was.  ``charset_checked``: the request
    comes from :func:`~protocol.twin_messages.parse_update_request`, which has already
    checked its keys and values (MQTT input), so they are not checked twice.
    """
    event_id = request.event_id
    if twin is None:
        return _refused(None, device_not_found(event_id=event_id), now_ms)
    problem = None if charset_checked else check_update_charset(request)
    if problem is not None:
        return _refused(twin, bad_request(problem, event_id), now_ms)

    new_twin = dict(twin)
    changed: set[str] = set()
    for name, msg in request.twin.items():
        planned = _apply_one(name, twin.get(name), msg, now_ms)
        if isinstance(planned, TwinError):
            return _refused(twin, TwinError(planned.code, planned.reason, event_id), now_ms)
        # _apply_one hands back the stored property itself when nothing changes, and a
        # new one (with a bumped version) whenever something does: identity is the test,
        # without a deep comparison of two models per property.
        if planned is not twin.get(name):
            new_twin[name] = planned
            changed.add(name)

    return UpdateOutcome(twin=new_twin, changed=frozenset(changed), before=twin,
                         request=request, now_ms=now_ms)


def _apply_one(
    name: str, current: TwinProperty | None, msg: MsgTwinIn | None, now_ms: int
) -> TwinProperty | TwinError:
    """The property after the request, or why the request is refused."""
    live = current is not None and not current.deleted
    requested_type: TwinType | None = None
    if msg is not None and msg.metadata is not None and msg.metadata.type is not None:
        requested_type = parse_twin_type(msg.metadata.type)
        if requested_type is None:
            return bad_request(
                f"twin {name}: type {msg.metadata.type[:64]!r} is not allowed "
                "(int, integer, float, boolean, string, deleted)"
            )
    conflict = _version_conflict(name, current, msg)
    if conflict is not None:
        return conflict

    if msg is None or requested_type is TwinType.DELETED:
        if current is None:
            return bad_request(f"twin {name} does not exist, so it cannot be deleted")
        if not live:
            return current  # already deleted: deleting again changes nothing
        if not current.optional:
            return bad_request(f"twin {name} is not optional and cannot be deleted")
        return _tombstone(current, "edge")

    value_type = current.value_type if live and current else requested_type or TwinType.STRING
    for side, sent in (("expected", msg.expected), ("actual", msg.actual)):
        if sent is None:
            continue
        if sent.value is None:
            return bad_request(f"twin {name}: {side}.value is missing")
        if sent.value and not value_fits_type(sent.value, value_type):
            return bad_request(
                f"twin {name}: {side} value {sent.value!r} is not a valid {value_type.value}"
            )

    if live and current is not None:
        prop = current
        if msg.optional is False and prop.optional:
            prop = prop.model_copy(update={"optional": False})  # only ever true -> false
    else:
        # New, or a tombstone coming back: versions carry on from the tombstone.
        base = TwinProperty() if current is None else _bump_both(current, "edge")
        prop = base.model_copy(update={
            "value_type": value_type,
            "optional": True if msg.optional is None else msg.optional,
            "expected": None, "actual": None, "in_spec": False,
        })
    prop = _set_side(prop, "expected", msg.expected, "edge", now_ms)
    return _set_side(prop, "actual", msg.actual, "edge", now_ms)


def _version_conflict(
    name: str, current: TwinProperty | None, msg: MsgTwinIn | None
) -> TwinError | None:
    if msg is None:
        return None
    stored = current or TwinProperty()
    for side, sent, have in (
        ("expected", msg.expected_version, stored.expected_version),
        ("actual", msg.actual_version, stored.actual_version),
    ):
        if sent is not None and have.newer_than(Version(cloud=sent.cloud, edge=sent.edge)):
            return TwinError(
                TwinErrorCode.CONFLICT,
                f"twin {name}: {side} version conflict: the request is based on "
                f"{{cloud: {sent.cloud}, edge: {sent.edge}}} but the twin is at "
                f"{{cloud: {have.cloud}, edge: {have.edge}}}",
            )
    return None


def _set_side(
    prop: TwinProperty, side: str, sent: TwinValueIn | None, bump: str, now_ms: int
) -> TwinProperty:
    if sent is None or sent.value is None:
        return prop
    old: TwinValue | None = getattr(prop, side)
    if old is not None and old.value == sent.value:
        return prop
    version: Version = getattr(prop, f"{side}_version")
    return prop.model_copy(update={
        side: TwinValue(value=sent.value, timestamp=now_ms),
        f"{side}_version": _bump(version, bump),
    })


def report_request(
    reported: Mapping[str, str],
    *,
    types: Mapping[str, str] | None = None,
    event_id: str = "",
    timestamp: int = 0,
) -> TwinUpdateRequest:
    """An update that sets only reported (actual) values, e.g. from DMI ReportDeviceStatus.

    DMI's ``observedDesired`` is deliberately not turned into ``expected``: it is the
    mapper's possibly stale copy of the desired value, and writing it back would undo a
    newer desired value from the cloud."""
    types = types or {}
    return TwinUpdateRequest(event_id=event_id, timestamp=timestamp, twin={
        name: MsgTwinIn(
            actual=TwinValueIn(value=value),
            metadata=TypeMetadataIn(type=types[name]) if name in types else None,
        )
        for name, value in reported.items()
    })


# --- the cloud's desired values --------------------------------------------------------


class DesiredValue(BaseModel):
    """One ``spec.properties[]`` entry as the twin needs it."""

    model_config = ConfigDict(frozen=True)

    value: str | None = None  # None: the property has no desired value
    value_type: TwinType | None = None  # None: keep the property's current type


class DesiredOutcome(NamedTuple):
    twin: Twin
    changed: frozenset[str]  # updated, created or tombstoned properties


def apply_desired_from_cloud(
    twin: Mapping[str, TwinProperty], desired: Mapping[str, DesiredValue], now_ms: int
) -> DesiredOutcome:
    """Apply the Device spec's properties (cloud wins for desired values).

    ``desired`` must name **every** property of the spec, with ``value=None`` for one
    without a desired value: each gets a live, non-optional property; its expected value
    is set (or cleared) wherever it differs, bumping ``cloud``.  A property that was in
    the spec and is no longer becomes a tombstone, as KubeEdge keeps twins only for spec
    properties.  Properties the edge created over MQTT are not touched.

    Cloud values are not charset- or type-checked: the cloud is the authority, and
    refusing here would only hide the value.  Publish
    ``build_delta_message``/``build_document`` for ``changed`` afterwards.
    """
    new_twin = dict(twin)
    changed: set[str] = set()
    for name, want in desired.items():
        current = twin.get(name)
        if current is None or current.deleted:
            base = TwinProperty() if current is None else _bump_both(current, "cloud")
            prop = base.model_copy(update={
                "expected": None, "actual": None,
                "value_type": want.value_type or TwinType.STRING,
            })
        else:
            prop = current
            new_type = want.value_type
            if new_type not in (None, TwinType.DELETED, prop.value_type):
                prop = _bump_both(prop, "cloud").model_copy(update={"value_type": new_type})
        prop = prop.model_copy(update={"in_spec": True, "optional": False})
        have = prop.expected.value if prop.expected is not None else None
        if want.value != have:
            prop = prop.model_copy(update={
                "expected": None if want.value is None
                else TwinValue(value=want.value, timestamp=now_ms),
                "expected_version": prop.expected_version.bump_cloud(),
            })
        if prop != current:
            new_twin[name] = prop
            changed.add(name)
    for name, prop in twin.items():
        if prop.in_spec and not prop.deleted and name not in desired:
            new_twin[name] = _tombstone(prop, "cloud")
            changed.add(name)
    return DesiredOutcome(new_twin, frozenset(changed))


def desired_from_spec(
    device_spec: Mapping[str, Any], model_spec: Mapping[str, Any] | None = None
) -> dict[str, DesiredValue]:
    """The ``desired`` argument of :func:`apply_desired_from_cloud` for a Device spec.

    Types come from the DeviceModel's ``properties[].type`` (``INT`` -> ``int``, ...),
    else from ``desired.metadata.type`` when it names a twin type.  Malformed entries
    are skipped (the API validated the objects already)."""
    model_types: dict[str, TwinType] = {}
    for entry in _entries(model_spec, "properties"):
        name, kind = entry.get("name"), entry.get("type")
        if isinstance(name, str) and isinstance(kind, str):
            twin_type = twin_type_for_model_type(kind)
            if twin_type is not None:
                model_types[name] = twin_type
    out: dict[str, DesiredValue] = {}
    for entry in _entries(device_spec, "properties"):
        name = entry.get("name")
        if not isinstance(name, str):
            continue
        desired = entry.get("desired")
        value: str | None = None
        value_type = model_types.get(name)
        if isinstance(desired, Mapping):
            raw = desired.get("value")
            value = raw if isinstance(raw, str) else None
            meta = desired.get("metadata")
            if value_type is None and isinstance(meta, Mapping):
                meta_type = meta.get("type")
                if isinstance(meta_type, str):
                    value_type = parse_twin_type(meta_type)
        if value_type is TwinType.DELETED:
            value_type = None
        out[name] = DesiredValue(value=value, value_type=value_type)
    return out


def _entries(spec: Mapping[str, Any] | None, key: str) -> list[Mapping[str, Any]]:
    items = spec.get(key) if isinstance(spec, Mapping) else None
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, Mapping)]


# --- views and messages ----------------------------------------------------------------


def delta(twin: Mapping[str, TwinProperty]) -> dict[str, str]:
    """Property -> expected value, for every live property whose non-empty expected value
    differs from its actual value (or that has no actual value yet)."""
    out: dict[str, str] = {}
    for name, prop in twin.items():
        if prop.deleted or prop.expected is None or prop.expected.value == "":
            continue
        if prop.actual is None or not values_equal(
            prop.expected.value, prop.actual.value, prop.value_type
        ):
            out[name] = prop.expected.value
    return out


def build_delta_message(
    twin: Mapping[str, TwinProperty], *, event_id: str, now_ms: int
) -> TwinDeltaMessage | None:
    """The ``.../twin/update/delta`` payload, or ``None`` when nothing differs.

    ``twin`` holds every live property with an expected value, without versions."""
    body = _delta_dict(twin, event_id, now_ms)
    return None if body is None else TwinDeltaMessage.model_validate(body)


def delta_payload(twin: Mapping[str, TwinProperty], *, event_id: str,
                  now_ms: int) -> bytes | None:
    """``build_delta_message(...).to_json()``, without building the model."""
    body = _delta_dict(twin, event_id, now_ms)
    return None if body is None else to_json(body)


def _delta_dict(twin: Mapping[str, TwinProperty], event_id: str,
                now_ms: int) -> dict[str, Any] | None:
    differs = delta(twin)
    if not differs:
        return None
    return {
        "event_id": event_id,
        "timestamp": now_ms,
        "twin": {
            name: prop.msg_dict(versions=False)
            for name, prop in sorted(twin.items())
            if not prop.deleted and prop.expected is not None and prop.expected.value != ""
        },
        "delta": differs,
    }


def build_document(
    before: Mapping[str, TwinProperty],
    after: Mapping[str, TwinProperty],
    keys: Iterable[str],
    *,
    event_id: str,
    now_ms: int,
) -> TwinDocumentMessage | None:
    """The ``.../twin/update/document`` payload for ``keys``: last and current state
    (``null`` where the property did not exist or was deleted), or ``None`` for no keys."""
    body = _document_dict(before, after, keys, event_id, now_ms)
    return None if body is None else TwinDocumentMessage.model_validate(body)


def document_payload(
    before: Mapping[str, TwinProperty],
    after: Mapping[str, TwinProperty],
    keys: Iterable[str],
    *,
    event_id: str,
    now_ms: int,
) -> bytes | None:
    """``build_document(...).to_json()``, without building the model."""
    body = _document_dict(before, after, keys, event_id, now_ms)
    return None if body is None else to_json(body)


def _document_dict(before: Mapping[str, TwinProperty], after: Mapping[str, TwinProperty],
                   keys: Iterable[str], event_id: str, now_ms: int) -> dict[str, Any] | None:
    docs = {name: {"last": _live_msg(before.get(name)), "current": _live_msg(after.get(name))}
            for name in keys}
    if not docs:
        return None
    return {"event_id": event_id, "timestamp": now_ms, "twin": docs}


def _live_msg(prop: TwinProperty | None) -> dict[str, Any] | None:
    return None if prop is None or prop.deleted else prop.msg_dict(versions=False)


def build_get_result(
    twin: Mapping[str, TwinProperty], *, event_id: str, now_ms: int
) -> TwinGetResult:
    """The ``.../twin/get/result`` payload: every live property, without versions."""
    return TwinGetResult(event_id=event_id, timestamp=now_ms, twin={
        name: prop.to_msg(versions=False)
        for name, prop in sorted(twin.items())
        if not prop.deleted
    })


def error_result(error: TwinError, *, event_id: str, now_ms: int) -> TwinErrorResult:
    """An error payload for any result topic, answering ``event_id``."""
    return TwinErrorResult(
        event_id=event_id or error.event_id, timestamp=now_ms, code=error.code,
        reason=error.reason,
    )


# --- device state ----------------------------------------------------------------------


def rfc3339_utc(now_ms: int) -> str:
    """Go's ``time.RFC3339`` in UTC, whole seconds: ``2023-11-14T22:13:20Z``."""
    return datetime.fromtimestamp(now_ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class StateOutcome:
    """What a ``state/update`` decided.  On success store ``state`` and ``last_online``
    (``""`` clears it) and publish ``result`` on ``.../state/update/result``."""

    result: StateUpdateResult | TwinErrorResult
    state: str | None = None
    last_online: str | None = None
    error: TwinError | None = None


def apply_state_update(
    device_name: str | None, request: StateUpdateRequest, now_ms: int
) -> StateOutcome:
    """Set a device's state.  ``device_name`` is ``None`` for an unknown device (404).

    ``online`` and ``ok`` stamp ``lastOnlineTime`` with ``now_ms``; other states clear it,
    as KubeEdge does."""
    if device_name is None:
        err = device_not_found(event_id=request.event_id)
        return StateOutcome(result=err.to_result(now_ms), error=err)
    checked = normalize_state_request(request)
    if isinstance(checked, TwinError):
        return StateOutcome(result=checked.to_result(now_ms), error=checked)
    last_online = rfc3339_utc(now_ms) if checked.state in ("online", "ok") else ""
    return StateOutcome(
        result=StateUpdateResult(
            event_id=checked.event_id,
            timestamp=now_ms,
            device=DeviceStateOut(
                name=device_name, state=checked.state, lastOnlineTime=last_online
            ),
        ),
        state=checked.state,
        last_online=last_online,
    )


# --- reconcile with the cloud ----------------------------------------------------------


class SentMarker(NamedTuple):
    """The versions of a property the cloud has acknowledged."""

    expected: Version
    actual: Version


NEVER_SENT = SentMarker(Version(), Version())


def sent_marker(prop: TwinProperty) -> SentMarker:
    """Record this after the cloud acknowledges an upload of ``prop``."""
    return SentMarker(prop.expected_version, prop.actual_version)


def pending_reports(
    twin: Mapping[str, TwinProperty], last_sent: Mapping[str, SentMarker]
) -> dict[str, TwinProperty]:
    """The properties whose current state the cloud has not acknowledged yet.

    Only the latest state of each property is returned, so changes made while offline
    coalesce into one upload.  Versions only move on a change and tombstones keep them,
    so "the versions differ from what was acknowledged" is exactly "the cloud has not seen
    this"; a property that never had a value (all versions zero) is not pending.
    Tombstones are returned too (``prop.deleted``): the cloud should drop that entry.
    Cloud-side changes count as well: through ``observedDesired`` the cloud learns that
    the edge applied its desired value.
    """
    return {
        name: prop
        for name, prop in twin.items()
        if sent_marker(prop) != last_sent.get(name, NEVER_SENT)
    }


def status_twins(
    twin: Mapping[str, TwinProperty], names: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """The Device ``status.twins[]`` entries, sorted by name, tombstones left out::

        {"propertyName": "temperature",
         "reported": {"value": "23", "metadata": {"timestamp": "1700000000000", "type": "int"}},
         "observedDesired": {"value": "30", "metadata": {...}}}

    ``reported``/``observedDesired`` are left out while there is no such value.  Metadata
    values are strings, as KubeEdge writes them.  ``names`` limits the output (e.g. to
    the keys of :func:`pending_reports`)."""
    wanted = None if names is None else set(names)
    out: list[dict[str, Any]] = []
    for name in sorted(twin):
        prop = twin[name]
        if prop.deleted or (wanted is not None and name not in wanted):
            continue
        entry: dict[str, Any] = {"propertyName": name}
        if prop.actual is not None:
            entry["reported"] = _status_value(prop.actual, prop.value_type)
        if prop.expected is not None:
            entry["observedDesired"] = _status_value(prop.expected, prop.value_type)
        out.append(entry)
    return out


def _status_value(value: TwinValue, value_type: TwinType) -> dict[str, Any]:
    return {
        "value": value.value,
        "metadata": {"timestamp": str(value.timestamp), "type": value_type.value},
    }
