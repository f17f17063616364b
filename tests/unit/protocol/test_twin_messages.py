"""Parsing the device MQTT payloads: what is accepted, and the code and reason of a refusal."""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocol import errors
from protocol.twin_messages import (
    MISSING_TWIN_REASON,
    STATES,
    BaseRequest,
    MembershipDevice,
    MembershipGetResult,
    MembershipUpdated,
    StateUpdateRequest,
    TwinError,
    TwinUpdateRequest,
    parse_get_request,
    parse_state_update,
    parse_update_request,
)

KUBEEDGE_EXAMPLE = (b'{"event_id":"","timestamp":1700000000000,'
                    b'"twin":{"temperature":{"actual":{"value":"23"},"metadata":{"type":"int"}}}}')


def body(twin: Any, **extra: Any) -> bytes:
    return json.dumps({"event_id": "ev-1", "timestamp": 1, "twin": twin, **extra}).encode()


def refused(payload: bytes | str, max_bytes: int = 1 << 20) -> TwinError:
    out = parse_update_request(payload, max_bytes)
    assert isinstance(out, TwinError), out
    return out


def test_kubeedge_update_example_parses() -> None:
    request = parse_update_request(KUBEEDGE_EXAMPLE)
    assert isinstance(request, TwinUpdateRequest)
    assert request.timestamp == 1700000000000
    prop = request.twin["temperature"]
    assert prop is not None and prop.actual is not None and prop.metadata is not None
    assert prop.actual.value == "23"
    assert prop.metadata.type == "int"
    assert prop.expected is None


@pytest.mark.parametrize("payload", [b'{"event_id":"ev-1"}', b'{"event_id":"ev-1","twin":null}'])
def test_missing_twin_key_is_kubeedges_400(payload: bytes) -> None:
    err = refused(payload)
    assert (err.code, err.reason, err.event_id) == (400, MISSING_TWIN_REASON, "ev-1")


def test_null_property_is_kept_as_a_delete_request() -> None:
    request = parse_update_request(body({"temperature": None}))
    assert isinstance(request, TwinUpdateRequest)
    assert request.twin == {"temperature": None}


def test_field_names_match_in_any_case_like_gos_decoder() -> None:
    request = parse_update_request(
        b'{"EVENT_ID":"e","Twin":{"Temp":{"Actual":{"Value":"1"},"OPTIONAL":false}}}')
    assert isinstance(request, TwinUpdateRequest)
    assert request.event_id == "e"
    prop = request.twin["Temp"]  # property names themselves keep their case
    assert prop is not None and prop.actual is not None
    assert prop.actual.value == "1" and prop.optional is False


def test_unknown_fields_are_ignored() -> None:
    assert isinstance(parse_update_request(body({"t": {"actual": {"value": "1"}, "x": 1}},
                                                extra=[1])), TwinUpdateRequest)


@pytest.mark.parametrize("payload", [
    b"",
    b"not json",
    b"[1, 2]",
    b'"twin"',
    b'{"twin": {"t": {"actual": {"value": "1"}}}',  # truncated
    b'{"twin": {"t": {"actual": {"value": NaN}}}}',
    b"\xff\xfe{}",
    b"[" * 100_000,
])
def test_malformed_json_is_400(payload: bytes) -> None:
    assert refused(payload).code == 400


@pytest.mark.parametrize("twin,where", [
    ([], "twin"),
    ({"t": {"actual": {"value": 23}}}, "twin.t.actual.value"),
    ({"t": {"actual": "23"}}, "twin.t.actual"),
    ({"t": {"optional": "true"}}, "twin.t.optional"),
    ({"t": {"metadata": {"type": 1}}}, "twin.t.metadata.type"),
    ({"t": {"actual_version": {"cloud": -1, "edge": 0}}}, "twin.t.actual_version.cloud"),
    ({"t": 5}, "twin.t"),
])
def test_wrong_json_types_are_400_and_name_the_field(twin: Any, where: str) -> None:
    err = refused(body(twin))
    assert err.code == 400
    assert where in err.reason
    assert err.event_id == "ev-1"


def test_wrong_base_field_types_are_400() -> None:
    assert refused(b'{"event_id": 5, "twin": {}}').code == 400
    assert refused(b'{"timestamp": 1.5, "twin": {}}').code == 400
    assert refused(b'{"timestamp": 99999999999999999999, "twin": {}}').code == 400


def test_an_oversized_payload_is_413_before_any_parsing() -> None:
    payload = body({"t": {"actual": {"value": "x" * 500}}})
    err = refused(payload, max_bytes=len(payload) - 1)
    assert err.code == 413
    assert isinstance(parse_update_request(payload, len(payload)), TwinUpdateRequest)


@pytest.mark.parametrize("key", ["a" * 128, "temp-1_a.b,c:d/e@f#g", "A9"])
def test_keys_in_the_kubeedge_charset_are_accepted(key: str) -> None:
    assert isinstance(parse_update_request(body({key: {"actual": {"value": "1"}}})),
                      TwinUpdateRequest)


@pytest.mark.parametrize("key", ["", "a" * 129, "has space", "a+b", "é", "a\nb", 'q"'])
def test_keys_outside_the_charset_are_400(key: str) -> None:
    err = refused(body({key: {"actual": {"value": "1"}}}))
    assert err.code == 400 and "key" in err.reason


@pytest.mark.parametrize("value", ["", "x" * 512, "-1.5e3", "a:b/c@d#e,f_g"])
def test_values_in_the_charset_are_accepted(value: str) -> None:
    assert isinstance(parse_update_request(body({"t": {"expected": {"value": value}}})),
                      TwinUpdateRequest)


@pytest.mark.parametrize("value", ["x" * 513, "two words", "1+1", '{"a":1}', "'q'", "tab\t"])
def test_values_outside_the_charset_are_400(value: str) -> None:
    for side in ("expected", "actual"):
        err = refused(body({"t": {side: {"value": value}}}))
        assert err.code == 400 and f"{side} value" in err.reason


def test_errors_map_onto_the_project_error_tree() -> None:
    assert isinstance(TwinError(400, "x").to_exception(), errors.BadRequest)
    assert isinstance(TwinError(404, "x").to_exception(), errors.NotFound)
    assert isinstance(TwinError(409, "x").to_exception(), errors.Conflict)
    assert isinstance(TwinError(413, "x").to_exception(), errors.TooLarge)
    assert TwinError(500, "db").to_exception().code == 500


def test_error_result_payload_shape() -> None:
    err = refused(b'{"event_id":"abc"}')
    assert json.loads(err.to_result(77).to_json()) == {
        "event_id": "abc", "timestamp": 77, "code": 400, "reason": MISSING_TWIN_REASON}


def test_a_lone_surrogate_in_event_id_can_still_be_echoed() -> None:
    request = parse_update_request(b'{"event_id":"a\\ud800b","twin":{}}')
    assert isinstance(request, TwinUpdateRequest)
    assert request.event_id == "a\ufffdb"


# --- get -------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"  ", b"{}"])
def test_an_empty_get_request_is_accepted(payload: bytes) -> None:
    assert parse_get_request(payload) == BaseRequest()


def test_get_request_keeps_its_event_id_and_refuses_garbage() -> None:
    assert parse_get_request(b'{"event_id":"g1","timestamp":5}') == BaseRequest(
        event_id="g1", timestamp=5)
    bad = parse_get_request(b"{oops")
    assert isinstance(bad, TwinError) and bad.code == 400
    wrong = parse_get_request(b'{"event_id":"g2","timestamp":"now"}')
    assert isinstance(wrong, TwinError) and wrong.code == 400 and wrong.event_id == "g2"


# --- state -----------------------------------------------------------------------------


@pytest.mark.parametrize("payload,state", [
    (b'{"event_id":"","timestamp":1,"state":"online"}', "online"),
    (b'{"timestamp":1,"State":"OFFLINE"}', "offline"),  # KubeEdge's DMI path sends "State"
    (b'{"STATE":"Ok"}', "ok"),
    (b'{"sTaTe":"unHealthy"}', "unhealthy"),
    (b'{"state":"unknown"}', "unknown"),
])
def test_state_is_read_in_any_case_and_lower_cased(payload: bytes, state: str) -> None:
    request = parse_state_update(payload)
    assert isinstance(request, StateUpdateRequest)
    assert request.state == state


@pytest.mark.parametrize("payload", [
    b'{"state":"disconnected"}',  # mapper-framework's state, dropped by KubeEdge too
    b'{"state":""}',
    b'{"event_id":"x"}',
    b'{"state":1}',
    b'{"state":["online"]}',
    b"online",
])
def test_an_unknown_or_missing_state_is_answered_with_400(payload: bytes) -> None:
    err = parse_state_update(payload)
    assert isinstance(err, TwinError) and err.code == 400


def test_state_refusal_lists_the_allowed_states() -> None:
    err = parse_state_update(b'{"event_id":"s1","state":"broken"}')
    assert isinstance(err, TwinError)
    assert err.event_id == "s1"
    assert all(state in err.reason for state in STATES)


# --- membership ------------------------------------------------------------------------


def test_membership_payload_shapes() -> None:
    device = MembershipDevice(id="default/temp-1", name="temp-1", description="boiler",
                              state="online", last_online="2023-11-14T22:13:20Z",
                              attributes={})
    got = json.loads(MembershipGetResult(event_id="m", timestamp=3, devices=[device]).to_json())
    assert got == {"event_id": "m", "timestamp": 3, "devices": [{
        "id": "default/temp-1", "name": "temp-1", "description": "boiler", "state": "online",
        "last_online": "2023-11-14T22:13:20Z", "attributes": {}}]}
    updated = json.loads(MembershipUpdated(event_id="u", timestamp=4,
                                           added_devices=[device]).to_json())
    assert updated["removed_devices"] == []
    assert updated["added_devices"][0]["id"] == "default/temp-1"
