"""The ``statuses`` frame: what the edge writes with :func:`encode_statuses` is a frame
the cloud decodes like any other, and a malformed batch is refused with the offending
field named (the cloud answers it with an ``error`` that says where it went wrong)."""

from __future__ import annotations

from typing import Any

import pytest

from protocol import envelope as wire
from protocol.envelope import MAX_STATUS_BATCH, ObjectRef, Op, StatusesBody
from protocol.errors import FrameDecodeError

ITEMS: list[tuple[str, ObjectRef, dict[str, Any]]] = [
    ("e1", ObjectRef(kind="Device", namespace="default", name="thermo-1"),
     {"twins": [{"propertyName": "temperature", "reported": {"value": "21"}}],
      "state": "online"}),
    # Cluster-scoped: no namespace at all on the wire.
    ("e2", ObjectRef(kind="Node", name="edge-a"), {"phase": "Ready", "unset": None}),
    ("e3", ObjectRef(kind="Device", namespace="usine", name="presse-2"),
     {"twins": [{"propertyName": "état", "reported": {"value": "arrêté ✓ 温度"}}],
      "counts": [1, 2.5, True]}),
]


def _item(i: int) -> dict[str, Any]:
    return {"id": f"e{i}", "ref": {"kind": "Device", "name": f"d{i}"}, "status": {}}


def _refusal(body: Any) -> FrameDecodeError:
    env = wire.make(Op.STATUSES, ts=1, body=body)
    with pytest.raises(FrameDecodeError) as info:
        wire.decode_body(env, StatusesBody)
    return info.value


def test_encoded_statuses_decode_to_the_same_items() -> None:
    frame = wire.encode_statuses("frame-1", 1_700_000_000_123, ITEMS)
    env = wire.decode(frame)
    assert (env.id, env.ts, env.op, env.parent_id, env.ref) == (
        "frame-1", 1_700_000_000_123, Op.STATUSES, None, None)
    body = wire.decode_body(env, StatusesBody)
    assert [(item.id, item.ref, item.status) for item in body.items] == ITEMS
    assert body.items[1].ref.namespace is None
    assert '"ref":{"kind":"Node","name":"edge-a"}' in frame  # no "namespace": null


def test_encoded_statuses_are_what_encode_writes_for_the_same_envelope() -> None:
    # The edge skips the models for speed; the bytes on the wire must not change for it.
    env = wire.make(Op.STATUSES, ts=42, id="frame-2", body={"items": [
        {"id": item_id, "ref": ref.model_dump(exclude_none=True), "status": status}
        for item_id, ref, status in ITEMS]})
    frame = wire.encode_statuses("frame-2", 42, ITEMS)
    assert frame == wire.encode(env)
    assert "arrêté ✓ 温度" in frame  # text as UTF-8, not \u escapes


def test_a_full_batch_is_accepted() -> None:
    body = wire.decode_body(
        wire.make(Op.STATUSES, ts=1, body={"items": [_item(i) for i in range(MAX_STATUS_BATCH)]}),
        StatusesBody)
    assert len(body.items) == MAX_STATUS_BATCH == 256


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"items": []}, "body.items"),
        ({"items": [_item(i) for i in range(MAX_STATUS_BATCH + 1)]}, "body.items"),
        ({}, "body.items"),
        ({"items": [_item(0)], "more": True}, "body.more"),
        ({"items": [_item(0), {**_item(1), "extra": 1}]}, "body.items[1].extra"),
        ({"items": [{**_item(0), "ref": {"kind": "Device", "name": "d", "uid": "u"}}]},
         "body.items[0].ref.uid"),
        ({"items": [{**_item(0), "id": ""}]}, "body.items[0].id"),
        ({"items": [{**_item(0), "status": "up"}]}, "body.items[0].status"),
    ],
    ids=["empty", "257-items", "no-items", "unknown-field", "unknown-item-field",
         "unknown-ref-field", "empty-id", "status-not-object"],
)
def test_a_malformed_batch_is_refused_naming_the_field(body: Any, field: str) -> None:
    assert _refusal(body).field == field


def test_the_id_leading_a_frame_is_found_without_decoding_it() -> None:
    env = wire.make(Op.HEARTBEAT, ts=1, body={"padding": "x" * 5000})
    assert wire.leading_id(wire.encode(env)) == env.id
    assert wire.leading_id(wire.encode(env).encode()) == env.id
    assert wire.leading_id(wire.encode_statuses("f1", 1, [])) == "f1"
    # Not first, or not an id: nothing is guessed.
    assert wire.leading_id('{"op": "sync", "id": "abc"}') is None
    assert wire.leading_id('{"id": "has space"}') is None
    assert wire.leading_id(b"\xff\xfe not json") is None
