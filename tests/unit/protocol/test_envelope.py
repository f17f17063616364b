"""Envelope decoding: every frame either decodes or raises a typed FrameDecodeError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import envelope as wire
from protocol.envelope import Op
from protocol.errors import FrameDecodeError


def test_round_trip() -> None:
    ref = wire.ObjectRef(kind="Device", namespace="default", name="d1")
    env = wire.make(Op.UPSERT, ts=1700000000000, ref=ref, rv=42, body={"kind": "Device"})
    back = wire.decode(wire.encode(env))
    assert back == env
    assert back.rv == 42 and back.ref is not None and back.ref.key == "Device/default/d1"


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ("not json", None),
        ("[1, 2]", None),
        ('{"id": "x", "ts": 1, "op": "explode"}', "op"),
        ('{"id": "x", "ts": -1, "op": "ack"}', "ts"),
        ('{"id": "x", "ts": 1, "op": "ack", "extra": 1}', "extra"),
        ('{"id": "x", "ts": 1, "op": "upsert", "resource_version": "12a"}', "resource_version"),
        ('{"ts": 1, "op": "ack"}', "id"),
    ],
)
def test_bad_frames_name_the_problem(frame: str, field: str | None) -> None:
    with pytest.raises(FrameDecodeError) as info:
        wire.decode(frame)
    assert info.value.field == field


def test_a_deeply_nested_frame_is_a_decode_error_not_a_crash() -> None:
    with pytest.raises(FrameDecodeError):
        wire.decode("[" * 100_000 + "]" * 100_000)


def test_a_lone_surrogate_is_a_decode_error_and_a_surrogate_pair_is_text() -> None:
    # Found by tests/fuzz: "\ud800" parses, and then no UTF-8 encoder can send it on.
    with pytest.raises(FrameDecodeError, match="lone UTF-16 surrogate"):
        wire.decode('{"id": "a", "ts": 1, "op": "ack", "body": {"k\\ud800": 1}}')
    env = wire.decode('{"id": "a", "ts": 1, "op": "ack", "body": {"v": "\\ud83d\\ude00"}}')
    assert env.body == {"v": "\U0001f600"}
    assert wire.decode(wire.encode(env)) == env


def test_body_validation_names_the_body_field() -> None:
    env = wire.make(Op.SYNC, ts=1, body={"holdings": {"Device/default/a": "many"}})
    with pytest.raises(FrameDecodeError) as info:
        wire.decode_body(env, wire.SyncBody)
    assert info.value.field is not None and info.value.field.startswith("body.holdings")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_never_escape_as_anything_but_a_decode_error(data: bytes) -> None:
    try:
        wire.decode(data)
    except FrameDecodeError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["id", "parent_id", "ts", "op", "ref",
                                        "resource_version", "body", "x"]), json_values))
def test_random_json_objects_decode_or_fail_cleanly(obj: dict[str, object]) -> None:
    try:
        env = wire.decode(json.dumps(obj))
    except FrameDecodeError:
        return
    assert isinstance(env.op, Op)
