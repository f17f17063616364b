"""The twin algebra: edge updates, cloud desired values, delta, document, get, state,
and what must be uploaded after a reconnect."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from protocol.kinds.devices import Twin as StatusTwin
from protocol.twin import (
    DesiredValue,
    TwinProperty,
    apply_desired_from_cloud,
    apply_edge_update,
    apply_state_update,
    build_delta_message,
    build_document,
    build_get_result,
    delta,
    desired_from_spec,
    pending_reports,
    report_request,
    sent_marker,
    status_twins,
    twin_from_json,
    twin_to_json,
)
from protocol.twin_messages import (
    StateUpdateRequest,
    TwinErrorResult,
    TwinUpdateRequest,
    TwinUpdateResult,
    Version,
    parse_update_request,
)
from protocol.twin_values import TwinType

T0 = 1_700_000_000_000


def update(twin: Any, event_id: str = "ev") -> TwinUpdateRequest:
    request = parse_update_request(json.dumps({"event_id": event_id, "timestamp": 1,
                                               "twin": twin}))
    assert isinstance(request, TwinUpdateRequest), request
    return request


def ok(twin: Mapping[str, TwinProperty], request: TwinUpdateRequest, now: int = T0
       ) -> tuple[dict[str, TwinProperty], dict[str, Any]]:
    """Apply an update that must succeed; return the new twin and the result as JSON."""
    outcome = apply_edge_update(twin, request, now)
    assert outcome.error is None, outcome.error
    return outcome.twin, json.loads(outcome.result.to_json())


def refused(twin: Mapping[str, TwinProperty], request: TwinUpdateRequest) -> tuple[int, str]:
    outcome = apply_edge_update(twin, request, T0)
    assert outcome.error is not None
    assert outcome.twin == twin  # nothing applied
    assert outcome.changed == frozenset()
    assert outcome.delta is None and outcome.document is None
    assert isinstance(outcome.result, TwinErrorResult)
    assert outcome.result.event_id == request.event_id
    return outcome.error.code, outcome.error.reason


def reported(name: str, value: str, kind: str | None = None) -> TwinUpdateRequest:
    prop: dict[str, Any] = {"actual": {"value": value}}
    if kind is not None:
        prop["metadata"] = {"type": kind}
    return update({name: prop})


def spec_twin(**desired: str | None) -> dict[str, TwinProperty]:
    twin, _ = apply_desired_from_cloud({}, {k: DesiredValue(value=v) for k, v in desired.items()},
                                       T0)
    return twin


# --- KubeEdge's example ----------------------------------------------------------------


def test_kubeedge_example_update_creates_the_twin_and_answers_with_it() -> None:
    request = parse_update_request(
        b'{"event_id":"","timestamp":1700000000000,'
        b'"twin":{"temperature":{"actual":{"value":"23"},"metadata":{"type":"int"}}}}')
    assert isinstance(request, TwinUpdateRequest)
    outcome = apply_edge_update({}, request, T0 + 5)
    assert outcome.error is None
    assert json.loads(outcome.result.to_json()) == {
        "event_id": "", "timestamp": T0 + 5,
        "twin": {"temperature": {
            "actual": {"value": "23", "metadata": {"timestamp": T0 + 5}},
            "optional": True,  # KubeEdge's default for a twin created over MQTT
            "metadata": {"type": "int"},
            "expected_version": {"cloud": 0, "edge": 0},
            "actual_version": {"cloud": 0, "edge": 1},
        }},
    }
    assert outcome.changed == {"temperature"}
    assert outcome.delta is None  # nothing desired, nothing to do
    assert outcome.document is not None
    assert json.loads(outcome.document.to_json())["twin"] == {"temperature": {
        "last": None,
        "current": {"actual": {"value": "23", "metadata": {"timestamp": T0 + 5}},
                    "optional": True, "metadata": {"type": "int"}},
    }}


def test_an_unknown_device_is_404() -> None:
    outcome = apply_edge_update(None, reported("t", "1"), T0)
    assert outcome.error is not None and outcome.error.code == 404
    assert isinstance(outcome.result, TwinErrorResult) and outcome.result.code == 404


# --- versions --------------------------------------------------------------------------


def test_each_changed_side_bumps_its_edge_version() -> None:
    twin, _ = ok({}, reported("t", "1"))
    twin, _ = ok(twin, reported("t", "2"))
    twin, result = ok(twin, update({"t": {"expected": {"value": "5"}}}))
    assert twin["t"].actual_version == Version(cloud=0, edge=2)
    assert twin["t"].expected_version == Version(cloud=0, edge=1)
    assert result["twin"]["t"]["expected_version"] == {"cloud": 0, "edge": 1}


def test_a_repeated_value_is_not_a_change() -> None:
    twin, _ = ok({}, reported("t", "1"), now=T0)
    outcome = apply_edge_update(twin, reported("t", "1"), T0 + 1000)
    assert outcome.error is None
    assert outcome.changed == frozenset()
    assert outcome.document is None
    assert outcome.twin == twin  # same version, same timestamp
    assert isinstance(outcome.result, TwinUpdateResult)
    result = outcome.result.twin["t"]
    assert result is not None and result.actual_version == Version(cloud=0, edge=1)


def test_the_cloud_bumps_cloud_and_the_edge_bumps_edge_on_the_same_side() -> None:
    twin = spec_twin(t="30")
    assert twin["t"].expected_version == Version(cloud=1, edge=0)
    twin, _ = ok(twin, update({"t": {"expected": {"value": "31"}}}))
    assert twin["t"].expected_version == Version(cloud=1, edge=1)
    twin, changed = apply_desired_from_cloud(twin, {"t": DesiredValue(value="30")}, T0)
    assert changed == {"t"}
    assert twin["t"].expected is not None and twin["t"].expected.value == "30"  # cloud wins
    assert twin["t"].expected_version == Version(cloud=2, edge=1)


def test_a_request_carrying_an_older_version_is_a_409_conflict() -> None:
    twin, _ = ok({}, reported("t", "1"))
    twin, _ = ok(twin, reported("t", "2"))
    stale = update({"t": {"actual": {"value": "9"}, "actual_version": {"cloud": 0, "edge": 1}}})
    code, reason = refused(twin, stale)
    assert code == 409 and "version conflict" in reason
    fresh = update({"t": {"actual": {"value": "9"}, "actual_version": {"cloud": 0, "edge": 2}}})
    twin, _ = ok(twin, fresh)
    assert twin["t"].actual_version == Version(cloud=0, edge=3)


# --- delta -----------------------------------------------------------------------------


def test_delta_only_while_expected_differs_from_actual() -> None:
    twin = spec_twin(t="30", idle=None)
    assert delta(twin) == {"t": "30"}  # no reported value yet
    outcome = apply_edge_update(twin, reported("t", "25"), T0)
    assert outcome.delta is not None
    assert outcome.delta.delta == {"t": "30"}
    assert set(outcome.delta.twin) == {"t"}  # only twins with a desired value
    assert outcome.delta.twin["t"].expected_version is None  # versions stripped
    outcome = apply_edge_update(outcome.twin, reported("t", "30"), T0)
    assert outcome.delta is None
    assert delta(outcome.twin) == {}


def test_a_cloud_desired_value_that_differs_from_the_reported_one_yields_a_delta() -> None:
    twin, _ = ok({}, reported("t", "25", "int"))
    twin, changed = apply_desired_from_cloud(twin, {"t": DesiredValue(value="40")}, T0)
    assert changed == {"t"}
    message = build_delta_message(twin, event_id="d1", now_ms=T0)
    assert message is not None
    assert json.loads(message.to_json())["delta"] == {"t": "40"}


def test_the_delta_is_repeated_with_every_report_while_it_stands() -> None:
    twin = spec_twin(t="30")
    for value in ("1", "1", "2"):
        outcome = apply_edge_update(twin, reported("t", value), T0)
        assert outcome.delta is not None and outcome.delta.delta == {"t": "30"}
        twin = outcome.twin


@pytest.mark.parametrize("kind,desired,actual,differs", [
    ("float", "30", "30.0", False),
    ("float", "0.1", "1e-1", False),
    ("float", "30", "30.5", True),
    ("int", "7", "07", False),
    ("int", "7", "-7", True),
    ("string", "30", "30.0", True),
    ("boolean", "true", "true", False),
])
def test_numbers_are_compared_as_numbers(kind: str, desired: str, actual: str,
                                         differs: bool) -> None:
    twin, _ = apply_desired_from_cloud(
        {}, {"t": DesiredValue(value=desired, value_type=TwinType(kind))}, T0)
    twin, _ = ok(twin, reported("t", actual))
    assert (delta(twin) != {}) is differs


def test_an_empty_desired_value_asks_for_nothing() -> None:
    twin = spec_twin(t="")
    assert delta(twin) == {}
    assert build_delta_message(twin, event_id="x", now_ms=T0) is None


# --- delete and optional ---------------------------------------------------------------


def test_null_deletes_an_optional_twin_and_leaves_a_tombstone() -> None:
    twin, _ = ok({}, update({"t": {"actual": {"value": "1"}, "expected": {"value": "2"}}}))
    outcome = apply_edge_update(twin, update({"t": None}), T0)
    assert outcome.error is None
    assert json.loads(outcome.result.to_json())["twin"] == {"t": None}
    assert outcome.document is not None
    assert outcome.document.twin["t"].current is None
    assert outcome.document.twin["t"].last is not None
    assert outcome.twin["t"].deleted
    assert build_get_result(outcome.twin, event_id="g", now_ms=T0).twin == {}
    assert delta(outcome.twin) == {}
    assert status_twins(outcome.twin) == []
    again = apply_edge_update(outcome.twin, update({"t": None}), T0)
    assert again.error is None and again.changed == frozenset()


def test_metadata_type_deleted_is_a_delete_too() -> None:
    twin, _ = ok({}, reported("t", "1"))
    twin, result = ok(twin, update({"t": {"metadata": {"type": "deleted"}}}))
    assert result["twin"] == {"t": None}
    assert twin["t"].deleted


def test_a_deleted_twin_comes_back_with_versions_still_rising() -> None:
    twin, _ = ok({}, reported("t", "1"))
    twin, _ = ok(twin, update({"t": None}))
    assert twin["t"].actual_version == Version(cloud=0, edge=2)
    twin, _ = ok(twin, reported("t", "1", "int"))
    # the delete and the revival each move both sides; the new value moves actual again
    assert twin["t"].actual_version == Version(cloud=0, edge=4)
    assert twin["t"].expected_version == Version(cloud=0, edge=2)
    assert twin["t"].value_type is TwinType.INT  # a revived twin takes the new type


def test_a_non_optional_twin_cannot_be_deleted() -> None:
    twin, _ = ok({}, update({"t": {"actual": {"value": "1"}, "optional": False}}))
    assert refused(twin, update({"t": None}))[0] == 400
    spec = spec_twin(t="1")
    code, reason = refused(spec, update({"t": None}))
    assert code == 400 and "not optional" in reason


def test_deleting_a_twin_that_never_existed_is_400() -> None:
    assert refused({}, update({"ghost": None}))[0] == 400


def test_optional_can_only_go_from_true_to_false() -> None:
    twin, _ = ok({}, reported("t", "1"))
    twin, _ = ok(twin, update({"t": {"optional": False}}))
    assert twin["t"].optional is False
    twin, _ = ok(twin, update({"t": {"optional": True}}))
    assert twin["t"].optional is False


# --- types -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind,value", [
    ("int", "42"), ("int", "-42"), ("integer", "9223372036854775807"),
    ("float", "1.5"), ("float", "-2e-3"), ("float", "NaN"), ("float", "inf"), ("float", "7"),
    ("boolean", "true"), ("boolean", "false"), ("string", "anything-at:all"), ("", "x"),
    ("int", ""),  # an empty value means "no value" and fits every type
])
def test_values_that_parse_as_their_type_are_accepted(kind: str, value: str) -> None:
    ok({}, reported("t", value, kind))


@pytest.mark.parametrize("kind,value", [
    ("int", "abc"), ("int", "1.5"), ("int", "9223372036854775808"), ("integer", "1e3"),
    ("float", "abc"), ("float", "1e999"), ("float", "1_000"), ("float", "0x1p3"),
    ("boolean", "True"), ("boolean", "1"), ("boolean", "yes"),
])
def test_values_that_do_not_parse_as_their_type_are_400(kind: str, value: str) -> None:
    code, reason = refused({}, reported("t", value, kind))
    assert code == 400 and f"not a valid {kind}" in reason


@pytest.mark.parametrize("kind", ["double", "bytes", "INT", "number"])
def test_types_outside_kubeedges_list_are_400(kind: str) -> None:
    code, reason = refused({}, reported("t", "1", kind))
    assert code == 400 and "not allowed" in reason


def test_the_stored_type_decides_and_an_update_cannot_change_it() -> None:
    twin, _ = ok({}, reported("t", "1", "int"))
    assert refused(twin, reported("t", "abc", "string"))[0] == 400
    twin, _ = ok(twin, reported("t", "2", "string"))
    assert twin["t"].value_type is TwinType.INT


def test_one_bad_property_refuses_the_whole_request() -> None:
    twin, _ = ok({}, reported("t", "1", "int"))
    request = update({"a": {"actual": {"value": "1"}}, "t": {"actual": {"value": "x"}}})
    refused(twin, request)


def test_an_expected_or_actual_without_value_is_400() -> None:
    assert refused({}, update({"t": {"actual": {}}}))[0] == 400
    assert refused({}, update({"t": {"expected": {"value": None}}}))[0] == 400


# --- the cloud's desired values --------------------------------------------------------


def test_spec_properties_become_non_optional_twins_owned_by_the_cloud() -> None:
    twin = spec_twin(t="30", h=None)
    assert set(twin) == {"t", "h"}
    assert twin["t"].in_spec and not twin["t"].optional
    assert twin["h"].expected is None
    assert twin["h"].expected_version == Version()
    _, changed = apply_desired_from_cloud(twin, {"t": DesiredValue(value="30"),
                                                 "h": DesiredValue()}, T0 + 1)
    assert changed == frozenset()  # the same spec again changes nothing


def test_clearing_a_desired_value_clears_expected_and_bumps_cloud() -> None:
    twin = spec_twin(t="30")
    twin, changed = apply_desired_from_cloud(twin, {"t": DesiredValue()}, T0)
    assert changed == {"t"}
    assert twin["t"].expected is None
    assert twin["t"].expected_version == Version(cloud=2, edge=0)


def test_a_property_removed_from_the_spec_becomes_a_tombstone() -> None:
    twin = spec_twin(t="30", h="1")
    twin, _ = ok(twin, reported("t", "29"))
    twin, changed = apply_desired_from_cloud(twin, {"h": DesiredValue(value="1")}, T0)
    assert changed == {"t"}
    assert twin["t"].deleted
    assert twin["t"].expected_version == Version(cloud=2, edge=0)
    assert twin["t"].actual_version == Version(cloud=1, edge=1)
    twin, changed = apply_desired_from_cloud(twin, {"t": DesiredValue(value="5"),
                                                    "h": DesiredValue(value="1")}, T0)
    assert changed == {"t"} and not twin["t"].deleted
    assert twin["t"].expected_version == Version(cloud=4, edge=0)  # revived, then set


def test_twins_created_by_edge_apps_are_left_alone_by_the_cloud() -> None:
    twin, _ = ok({}, reported("local", "1"))
    twin, changed = apply_desired_from_cloud(twin, {"t": DesiredValue(value="2")}, T0)
    assert changed == {"t"}
    assert twin["local"].actual is not None and not twin["local"].deleted


def test_the_device_model_sets_the_type() -> None:
    twin, _ = ok({}, reported("t", "1"))
    assert twin["t"].value_type is TwinType.STRING
    twin, changed = apply_desired_from_cloud(
        twin, {"t": DesiredValue(value="2", value_type=TwinType.INT)}, T0)
    assert changed == {"t"}
    assert twin["t"].value_type is TwinType.INT
    assert refused(twin, reported("t", "x"))[0] == 400


def test_desired_values_from_a_kubeedge_device_and_model() -> None:
    device_spec = {
        "deviceModelRef": {"name": "temp-model"},
        "nodeName": "edge-node-1",
        "properties": [
            {"name": "temperature", "desired": {"value": "30"}, "reportCycle": 2000},
            {"name": "switch", "desired": {"value": "on", "metadata": {"type": "string"}}},
            {"name": "humidity"},
            {"name": "ratio", "desired": {"value": "0.5", "metadata": {"type": "float"}}},
        ],
    }
    model_spec = {"protocol": "modbus", "properties": [
        {"name": "temperature", "type": "INT", "accessMode": "ReadWrite"},
        {"name": "humidity", "type": "DOUBLE"},
        {"name": "switch", "type": "BOOLEAN"},
    ]}
    assert desired_from_spec(device_spec, model_spec) == {
        "temperature": DesiredValue(value="30", value_type=TwinType.INT),
        "switch": DesiredValue(value="on", value_type=TwinType.BOOLEAN),
        "humidity": DesiredValue(value=None, value_type=TwinType.FLOAT),
        "ratio": DesiredValue(value="0.5", value_type=TwinType.FLOAT),
    }
    assert desired_from_spec({"properties": "junk"}) == {}


# --- get, document ---------------------------------------------------------------------


def test_get_result_is_the_whole_twin_without_versions() -> None:
    twin = spec_twin(t="30", h=None)
    twin, _ = ok(twin, reported("t", "29"))
    got = json.loads(build_get_result(twin, event_id="g1", now_ms=T0 + 9).to_json())
    assert got["event_id"] == "g1" and got["timestamp"] == T0 + 9
    assert set(got["twin"]) == {"t", "h"}
    assert got["twin"]["t"] == {
        "expected": {"value": "30", "metadata": {"timestamp": T0}},
        "actual": {"value": "29", "metadata": {"timestamp": T0}},
        "optional": False, "metadata": {"type": "string"},
    }


def test_document_holds_last_and_current_for_the_changed_keys_only() -> None:
    before, _ = ok({}, reported("a", "1"))
    before, _ = ok(before, reported("b", "1"))
    outcome = apply_edge_update(before, reported("a", "2"), T0 + 1)
    assert outcome.document is not None
    doc = json.loads(outcome.document.to_json())
    assert set(doc["twin"]) == {"a"}
    assert doc["twin"]["a"]["last"]["actual"]["value"] == "1"
    assert doc["twin"]["a"]["current"]["actual"]["value"] == "2"
    assert build_document(before, before, [], event_id="x", now_ms=T0) is None


# --- state -----------------------------------------------------------------------------


def test_online_and_ok_stamp_last_online_other_states_clear_it() -> None:
    outcome = apply_state_update("temp-1", StateUpdateRequest(event_id="s", state="ONLINE"),
                                 1_700_000_000_999)
    assert outcome.error is None
    assert (outcome.state, outcome.last_online) == ("online", "2023-11-14T22:13:20Z")
    assert json.loads(outcome.result.to_json()) == {
        "event_id": "s", "timestamp": 1_700_000_000_999,
        "device": {"name": "temp-1", "state": "online",
                   "lastOnlineTime": "2023-11-14T22:13:20Z"}}
    assert apply_state_update("d", StateUpdateRequest(state="ok"), T0).last_online != ""
    for state in ("offline", "unknown", "unhealthy"):
        outcome = apply_state_update("d", StateUpdateRequest(state=state), T0)
        assert (outcome.state, outcome.last_online) == (state, "")


def test_state_update_errors() -> None:
    missing = apply_state_update(None, StateUpdateRequest(state="online"), T0)
    assert missing.error is not None and missing.error.code == 404 and missing.state is None
    bad = apply_state_update("d", StateUpdateRequest(event_id="e", state="gone"), T0)
    assert bad.error is not None and bad.error.code == 400
    assert isinstance(bad.result, TwinErrorResult) and bad.result.event_id == "e"


# --- reconcile after reconnect ---------------------------------------------------------


def test_reports_made_offline_coalesce_into_one_pending_value_per_property() -> None:
    twin = spec_twin(t="30")
    twin, _ = ok(twin, reported("t", "1"))
    sent = {name: sent_marker(prop) for name, prop in twin.items()}
    assert pending_reports(twin, sent) == {}
    for value in ("2", "3", "4"):  # cloud away
        twin, _ = ok(twin, reported("t", value))
    pending = pending_reports(twin, sent)
    assert set(pending) == {"t"}
    assert pending["t"].actual is not None and pending["t"].actual.value == "4"


def test_a_desired_value_applied_while_reports_were_unacknowledged_is_pending_too() -> None:
    twin = spec_twin(t="30")
    sent = {name: sent_marker(prop) for name, prop in twin.items()}
    twin, _ = apply_desired_from_cloud(twin, {"t": DesiredValue(value="35")}, T0)
    assert set(pending_reports(twin, sent)) == {"t"}  # observedDesired must catch up


def test_pending_reports_include_deletions_but_not_empty_twins() -> None:
    twin = spec_twin(never=None)
    assert pending_reports(twin, {}) == {}
    twin, _ = ok(twin, reported("t", "1"))
    sent = {name: sent_marker(prop) for name, prop in twin.items()}
    twin, _ = ok(twin, update({"t": None}))
    pending = pending_reports(twin, sent)
    assert set(pending) == {"t"} and pending["t"].deleted


def test_status_twins_have_the_device_status_shape() -> None:
    twin = spec_twin(t="30", h=None, z="1")
    twin, _ = ok(twin, update({"t": {"actual": {"value": "29"}}, "x": {"actual": {"value": "1"}}}))
    twin, _ = apply_desired_from_cloud(twin, {"t": DesiredValue(value="30"),
                                              "h": DesiredValue()}, T0)
    entries = status_twins(twin)
    assert [e["propertyName"] for e in entries] == ["h", "t", "x"]  # z became a tombstone
    assert entries[0] == {"propertyName": "h"}
    assert entries[1] == {
        "propertyName": "t",
        "reported": {"value": "29", "metadata": {"timestamp": str(T0), "type": "string"}},
        "observedDesired": {"value": "30", "metadata": {"timestamp": str(T0), "type": "string"}},
    }
    for entry in entries:
        StatusTwin.model_validate(entry)  # what the Device status schema accepts
    assert [e["propertyName"] for e in status_twins(twin, names=["x"])] == ["x"]


# --- helpers ---------------------------------------------------------------------------


def test_a_twin_survives_storage() -> None:
    twin = spec_twin(t="30")
    twin, _ = ok(twin, update({"l": {"actual": {"value": "1"}}}))
    twin, _ = ok(twin, update({"l": None}))
    assert twin_from_json(twin_to_json(twin)) == twin


def test_report_request_sets_only_reported_values() -> None:
    request = report_request({"t": "23"}, types={"t": "int"}, event_id="r", timestamp=T0)
    twin = spec_twin(t="30")
    twin, _ = ok(twin, request)
    assert twin["t"].actual is not None and twin["t"].actual.value == "23"
    assert twin["t"].expected is not None and twin["t"].expected.value == "30"
    assert twin["t"].expected_version == Version(cloud=1, edge=0)
