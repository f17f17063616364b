"""The link's frame decoder under hostile input.

Every frame a peer sends goes through :func:`protocol.envelope.decode` and its body
through :func:`decode_body`; the hubs answer a :class:`FrameDecodeError` with an ``error``
envelope and keep the link, while any other exception would drop it.  So: whatever the
bytes, the decoder returns an Envelope or raises that one typed error, and what it
accepts is plain JSON that survives a trip through ``encode`` unchanged.
(tests/unit/protocol/test_envelope.py already throws random bytes and random objects
at it; these start from valid frames and break them a little, which gets further in.)
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from protocol import envelope as wire
from protocol.envelope import Envelope, ObjectRef, Op
from protocol.errors import FrameDecodeError
from tests.fuzz.budget import Tally, fuzz

INTERFACE = "link frame decoder (protocol.envelope)"

BODY_MODELS: list[type[BaseModel]] = [
    wire.SyncBody, wire.HeartbeatBody, wire.StatusBody, wire.DeleteBody, wire.CsrBody,
    wire.CertBody, wire.SyncDoneBody, wire.ErrorBody, wire.MessageBody, wire.PublishBody,
    wire.DeliveryBody,
]

json_leaves = (st.none() | st.booleans() | st.text(max_size=12)
               | st.integers(min_value=-(2**70), max_value=2**70)
               | st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=25,
)

envelopes = st.builds(
    wire.make,
    st.sampled_from(list(Op)),
    ts=st.integers(min_value=0, max_value=wire.MAX_TS),
    ref=st.none() | st.builds(
        ObjectRef, kind=st.text(min_size=1, max_size=63),
        namespace=st.none() | st.text(max_size=63), name=st.text(min_size=1, max_size=253)),
    rv=st.none() | st.integers(min_value=0, max_value=10**20 - 1),
    body=json_values,
    parent_id=st.none() | st.text(max_size=64),
    id=st.text(min_size=1, max_size=64),
)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@st.composite
def broken_frames(draw: st.DrawFn) -> bytes:
    """A valid frame with one thing wrong: a field of the wrong type or size, a field
    missing or unknown, a deep or huge body, non-JSON numbers, truncation, bad UTF-8."""
    obj: dict[str, Any] = json.loads(wire.encode(draw(envelopes)))
    how = draw(st.sampled_from(["retype", "drop", "extra", "deep", "huge", "constant",
                                "truncate", "bad-utf8"]))
    field = draw(st.sampled_from(["id", "parent_id", "ts", "op", "ref", "resource_version",
                                  "body"]))
    if how == "retype":
        obj[field] = draw(json_values)
    elif how == "drop":
        obj.pop(field, None)
    elif how == "extra":
        obj[draw(st.text(max_size=10))] = draw(json_values)
    elif how == "huge":
        obj[field] = draw(st.sampled_from([2**63, -(2**63) - 1, 10**30, 1e308, -1, "9" * 30]))
    text = json.dumps(obj)
    if how == "deep":
        text = text[:-1] + f', "{field}": {_nested(draw(st.integers(500, 5000)))}}}'
    elif how == "constant":
        text = text[:-1] + f', "body": {draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))}}}'
    data = text.encode()
    if how == "truncate":
        data = data[:draw(st.integers(0, max(0, len(data) - 1)))]
    elif how == "bad-utf8":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"])) \
            + data[at:]
    return data


def _check_decode(data: bytes | str) -> Envelope | None:
    try:
        env = wire.decode(data)
    except FrameDecodeError as exc:
        assert exc.code == 400
        json.dumps(exc.to_status())  # the error envelope can always be sent
        return None
    # Accepted: plain JSON that encodes back to the same frame, at a time that exists.
    again = wire.decode(wire.encode(env))
    assert again == env
    datetime.fromtimestamp(env.ts / 1000, UTC)
    return env


@fuzz()
@given(envelopes)
def test_every_valid_frame_survives_encode_and_decode(tally: Tally, env: Envelope) -> None:
    with tally.example(INTERFACE):
        assert wire.decode(wire.encode(env)) == env
        assert wire.decode(wire.encode(env).encode()) == env


@fuzz()
@given(broken_frames())
def test_broken_frames_decode_or_fail_with_a_typed_error(tally: Tally, data: bytes) -> None:
    with tally.example(INTERFACE):
        _check_decode(data)
        try:
            text = data.decode()
        except UnicodeDecodeError:
            return
        _check_decode(text)


@fuzz()
@given(st.sampled_from(BODY_MODELS), json_values)
def test_bodies_validate_or_fail_with_a_typed_error_naming_the_body(
        tally: Tally, model: type[BaseModel], body: Any) -> None:
    env = wire.make(Op.MESSAGE, ts=0, body=body)
    with tally.example(INTERFACE):
        try:
            parsed = wire.decode_body(env, model)
        except FrameDecodeError as exc:
            assert exc.field is None or exc.field.startswith("body"), exc.field
            return
        assert isinstance(parsed, model)
