"""The one frame type on the cloud-edge link.

Every websocket text frame carries exactly one JSON ``Envelope``::

    {"id": "…", "parent_id": null, "ts": 1700000000000, "op": "upsert",
     "ref": {"kind": "Device", "namespace": "default", "name": "temp-1"},
     "resource_version": "42", "body": {…}}

``op`` is an enum (never parsed out of a resource string, unlike KubeEdge's
``node/<id>/<ns>/<type>/<name>`` routes), ``parent_id`` names the envelope an ``ack`` or
``error`` answers, ``ts`` is milliseconds since the epoch.  Bodies are validated per
operation by :func:`decode_body`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocol.errors import FrameDecodeError
from protocol.jsondepth import (
    MAX_DEPTH,
    lone_surrogate,
    may_be_too_deep,
    may_hold_surrogates,
    too_deep,
)
from protocol.kinds.core import NodeStatus
from protocol.resources import ObjectKey, make_key, pydantic_path
from protocol.routes import Encoding


class Op(StrEnum):
    # edge -> cloud
    SYNC = "sync"            # on every (re)connect: what the edge holds, key -> resourceVersion
    HEARTBEAT = "heartbeat"  # node status, every heartbeat interval
    STATUS = "status"        # a status the node may write (its Node, later its Devices/Apps)
    STATUSES = "statuses"    # several statuses in one frame, one ack (StatusesBody)
    CSR = "csr"              # certificate renewal over the authenticated link
    MESSAGE = "message"      # a routed or uploaded edge MQTT message (through the outbox)
    # cloud -> edge
    UPSERT = "upsert"        # the newest version of an object addressed to this node
    DELETE = "delete"        # the object left this node's scope (or was deleted)
    SYNC_DONE = "sync_done"  # every difference the resync found has been queued
    CERT = "cert"            # answer to CSR
    PUBLISH = "publish"      # deliver a routed message on the edge (MQTT or servicebus)
    # both ways
    ACK = "ack"              # parent_id = the envelope durably handled (body: a result)
    ERROR = "error"          # parent_id = the envelope refused (when known)


class ObjectRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(min_length=1, max_length=63)
    namespace: str | None = Field(default=None, max_length=63)
    name: str = Field(min_length=1, max_length=253)

    @property
    def key(self) -> ObjectKey:
        return make_key(self.kind, self.namespace, self.name)


MAX_TS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: the last millisecond a ``datetime`` can hold, so every
accepted ``ts`` converts to one."""


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    parent_id: str | None = Field(default=None, max_length=64)
    ts: int = Field(ge=0, le=MAX_TS)
    op: Op
    ref: ObjectRef | None = None
    resource_version: str | None = Field(default=None, pattern=r"^[0-9]{1,20}$")
    body: Any = None

    @property
    def rv(self) -> int:
        return int(self.resource_version) if self.resource_version else 0


def new_id() -> str:
    return uuid.uuid4().hex


def make(op: Op, *, ts: int, ref: ObjectRef | None = None, rv: int | None = None,
         body: Any = None, parent_id: str | None = None, id: str | None = None) -> Envelope:
    return Envelope(
        id=id or new_id(), parent_id=parent_id, ts=ts, op=op, ref=ref,
        resource_version=str(rv) if rv is not None else None, body=body,
    )


def encode(env: Envelope) -> str:
    return env.model_dump_json(exclude_none=True)


def encode_statuses(frame_id: str, ts: int,
                    items: Sequence[tuple[str, ObjectRef, dict[str, Any]]]) -> str:
    """A ``statuses`` frame of (outbox entry id, object, status) items, as
    :func:`encode` would write it, without building the models (the edge sends a few
    hundred a second under load; the items were validated when they were queued)."""
    return json.dumps({
        "id": frame_id, "ts": ts, "op": Op.STATUSES.value,
        "body": {"items": [
            {"id": item_id, "ref": ref.model_dump(exclude_none=True), "status": status}
            for item_id, ref, status in items
        ]},
    }, separators=(",", ":"), ensure_ascii=False)


_LEADING_ID = re.compile(r'\{\s*"id"\s*:\s*"([0-9A-Za-z_-]{1,64})"')


def leading_id(frame: str | bytes) -> str | None:
    """The envelope id of a frame too large to decode, when it is the first field (as
    :func:`encode` and :func:`encode_statuses` write it); else None."""
    head = frame[:100]
    text = head.decode("utf-8", "replace") if isinstance(head, bytes) else head
    found = _LEADING_ID.match(text)
    return found[1] if found else None


def _not_json(name: str) -> Any:
    # json.loads takes NaN and Infinity, which are not JSON: a body holding one would be
    # re-encoded as null and, stored, would make the API answer invalid JSON.
    raise ValueError(f"{name} is not a JSON value")


def decode(data: str | bytes) -> Envelope:
    """Parse one frame.  Anything that is not a valid Envelope raises
    :class:`FrameDecodeError` naming the problem; nothing else escapes."""
    try:
        raw = json.loads(data, parse_constant=_not_json)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FrameDecodeError(f"frame is not JSON: {exc}") from None
    except RecursionError:
        raise FrameDecodeError("frame is nested too deeply") from None
    if not isinstance(raw, dict):
        raise FrameDecodeError("frame must be a JSON object")
    if may_be_too_deep(data) and too_deep(raw):
        raise FrameDecodeError(f"frame is nested more than {MAX_DEPTH} levels deep")
    if may_hold_surrogates(data) and lone_surrogate(raw):
        raise FrameDecodeError("frame holds a lone UTF-16 surrogate (\\uD800-\\uDFFF), "
                               "which is not text")
    try:
        return Envelope.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise FrameDecodeError(
            str(err.get("msg")), field=pydantic_path(tuple(err["loc"]))
        ) from None


# ---- bodies -------------------------------------------------------------------------


class SyncBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    holdings: dict[str, int] = {}


class HeartbeatBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: NodeStatus


class StatusBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: dict[str, Any]


MAX_STATUS_BATCH = 256
"""Most statuses one ``statuses`` frame may carry (the edge sends at most its outbox
window, 64 by default)."""


class StatusItem(BaseModel):
    """One status of a ``statuses`` frame: ``id`` is the outbox entry it comes from, which
    the ack's ``refused`` list names."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    ref: ObjectRef
    status: dict[str, Any]


class StatusesBody(BaseModel):
    """Edge → cloud: statuses written in one transaction and answered by one ``ack``
    (:class:`StatusesAckBody`).  An item the cloud refuses (not found, not this node's,
    invalid) is named in the ack and the others are written; an ``error`` instead means
    none was written (rate limited, store full or unavailable: resend them all later)."""

    model_config = ConfigDict(extra="forbid")

    items: list[StatusItem] = Field(min_length=1, max_length=MAX_STATUS_BATCH)


class RefusedItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    code: int
    reason: str
    message: str
    field: str | None = None


class StatusesAckBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refused: list[RefusedItem] = []


class DeleteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # True: the object left the node's scope but still exists; drop it without a
    # tombstone, since the same version may be sent again when it comes back.
    evict: bool = False


class CsrBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    csr: str = Field(max_length=16384)


class CertBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    certificate: str


class SyncDoneBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    upserts: int
    deletes: int


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: int
    reason: str
    message: str
    field: str | None = None


B = TypeVar("B", bound=BaseModel)


def decode_body(env: Envelope, model: type[B]) -> B:
    try:
        return model.model_validate(env.body if env.body is not None else {})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise FrameDecodeError(
            str(err.get("msg")), field=pydantic_path(tuple(err["loc"]), "body")
        ) from None


class MessageBody(BaseModel):
    """Edge → cloud: one MQTT message on a topic a rule of this node listens to, or on
    ``$hw/events/upload/#``.  The cloud matches it against the rules."""

    model_config = ConfigDict(extra="forbid")

    topic: str = Field(min_length=1, max_length=65535)
    payload: str
    encoding: Encoding = Encoding.UTF8
    ts: int = Field(ge=0)


class PublishBody(BaseModel):
    """Cloud → edge: deliver ``payload`` for ``rule`` on the edge's MQTT broker
    (``topic``) or to a local HTTP service (``port`` + ``path``)."""

    model_config = ConfigDict(extra="forbid")

    rule: str
    target: Literal["eventbus", "servicebus"]
    topic: str | None = None
    port: int | None = Field(default=None, gt=0, lt=65536)
    path: str | None = None
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    content_type: str | None = None
    payload: str
    encoding: Encoding = Encoding.UTF8


class DeliveryBody(BaseModel):
    """The body of the edge's ``ack`` to a servicebus ``publish``: the local service's
    answer, relayed to whoever POSTed to the cloud."""

    model_config = ConfigDict(extra="forbid")

    status: int
    content_type: str | None = None
    payload: str = ""
    encoding: Encoding = Encoding.UTF8
