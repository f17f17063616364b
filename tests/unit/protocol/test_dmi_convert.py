"""Stored Device/DeviceModel objects <-> DMI v1beta1 messages (protocol.dmi.convert)."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
from google.protobuf import any_pb2, wrappers_pb2
from hypothesis import given
from hypothesis import strategies as st

from protocol.dmi import convert
from protocol.dmi.v1beta1 import api_pb2
from protocol.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    EdgefleetError,
    InvalidObject,
    NotFound,
    RateLimited,
)

# Only fields the DMI carries, so a round trip must give back exactly this.
DEVICE: dict[str, Any] = {
    "apiVersion": "devices.kubeedge.io/v1beta1",
    "kind": "Device",
    "metadata": {"name": "temp-sensor-01", "namespace": "default"},
    "spec": {
        "deviceModelRef": {"name": "temp-model"},
        "protocol": {
            "protocolName": "modbus",
            "configData": {"communicateMode": "TCP", "ip": "192.168.1.50", "port": 502,
                           "slaveID": 1, "tcp": {"ip": "10.0.0.1", "port": 503}},
        },
        "properties": [{
            "name": "temperature",
            "collectCycle": 2000,
            "reportCycle": 2000,
            "reportToCloud": True,
            "desired": {"value": "30", "metadata": {"type": "int"}},
            "visitors": {
                "protocolName": "modbus",
                "configData": {"register": "HoldingRegister", "offset": 2, "limit": 1,
                               "scale": 0.5, "isSwap": False, "isRegisterSwap": False},
            },
            "pushMethod": {
                "http": {"hostName": "sink.local", "port": 8080, "requestPath": "/t",
                         "timeout": 3},
                "mqtt": {"address": "tcp://127.0.0.1:1883", "topic": "temp", "qos": 0,
                         "retained": False},
                "otel": {"endpointURL": "http://otel:4318"},
                "dbMethod": {
                    "influxdb2": {
                        "influxdb2ClientConfig": {"url": "http://i", "org": "o", "bucket": "b"},
                        "influxdb2DataConfig": {"measurement": "m", "tag": {"site": "a"},
                                                "fieldKey": "f"},
                    },
                    "redis": {"redisClientConfig": {"addr": "r:6379", "db": 0, "poolsize": 4,
                                                    "minIdleConns": 1}},
                    "TDEngine": {"TDEngineClientConfig": {"addr": "td", "dbName": "d"}},
                    "mysql": {"mysqlClientConfig": {"addr": "my", "database": "d",
                                                    "userName": "u"}},
                },
                "anomalyDetection": {"window": 10},
            },
        }],
        "methods": [{"name": "setTemp", "description": "set", "propertyNames": ["temperature"]}],
    },
    "status": {
        "twins": [{
            "propertyName": "temperature",
            "reported": {"value": "29", "metadata": {"timestamp": "1700000000000"}},
            "observedDesired": {"value": "30"},
        }],
        "reportToCloud": True,
        "reportCycle": 1000,
    },
}

MODEL: dict[str, Any] = {
    "apiVersion": "devices.kubeedge.io/v1beta1",
    "kind": "DeviceModel",
    "metadata": {"name": "temp-model", "namespace": "default"},
    "spec": {
        "properties": [{"name": "temperature", "description": "degrees", "type": "INT",
                        "accessMode": "ReadWrite", "minimum": "0", "maximum": "100",
                        "unit": "celsius"}],
    },
}


def wire(msg: Any) -> Any:
    """Through real bytes, as the other end sees it."""
    return type(msg).FromString(msg.SerializeToString())


def test_a_device_survives_the_wire_unchanged() -> None:
    assert convert.device_from_proto(wire(convert.device_to_proto(DEVICE))) == DEVICE


def test_crd_spellings_map_to_the_proto_field_names() -> None:
    push = convert.device_to_proto(DEVICE).spec.properties[0].pushMethod
    assert push.http.hostname == "sink.local" and push.http.requestpath == "/t"
    assert push.dbMethod.tdengine.tdEngineClientConfig.addr == "td"
    assert push.dbMethod.tdengine.tdEngineClientConfig.dbname == "d"


def test_falsy_values_are_kept_distinct_from_absent() -> None:
    device = copy.deepcopy(DEVICE)
    device["spec"]["properties"] = [{"name": "p", "reportCycle": 0, "reportToCloud": False,
                                     "visitors": {"configData": {}}}]
    back = convert.device_from_proto(wire(convert.device_to_proto(device)))
    assert back["spec"]["properties"] == [{"name": "p", "reportCycle": 0, "reportToCloud": False,
                                           "visitors": {"configData": {}}}]


def test_what_the_dmi_does_not_carry_is_dropped() -> None:
    device = copy.deepcopy(DEVICE)
    device["metadata"]["labels"] = {"a": "b"}
    device["spec"]["nodeName"] = "edge-1"
    device["status"]["state"] = "online"
    back = convert.device_from_proto(convert.device_to_proto(device))
    assert back == DEVICE


def test_state_report_travels_in_status() -> None:
    device = copy.deepcopy(DEVICE)
    device["spec"]["stateReport"] = {"reportToCloud": False, "reportCycle": 5000}
    msg = convert.device_to_proto(device)
    assert msg.status.reportToCloud is False and msg.status.reportCycle == 5000
    assert len(msg.status.twins) == 1


def test_a_model_survives_the_wire_without_its_defaults() -> None:
    model = copy.deepcopy(MODEL)
    assert convert.model_from_proto(wire(convert.model_to_proto(model))) == MODEL
    model["spec"]["protocol"] = "modbus"
    model["spec"]["protocolConfigData"] = {"port": 502}
    model["spec"]["properties"][0]["visitors"] = {"configData": {"offset": 1}}
    assert convert.model_from_proto(convert.model_to_proto(model)) == MODEL


def test_model_commands_survive_the_wire_with_bytes_as_base64() -> None:
    # The CRD has no commands, but a peer's DeviceModel may carry them.
    model = copy.deepcopy(MODEL)
    model["spec"]["commands"] = [{"name": "reset", "url": "/reset", "method": "POST",
                                  "status_code": ["200", "500"], "parameters": ["force"],
                                  "response": "b2s="}]
    msg = wire(convert.model_to_proto(model))
    assert msg.spec.commands[0].response == b"ok"
    assert convert.model_from_proto(msg) == model


def test_a_command_response_that_is_not_base64_is_named() -> None:
    model = copy.deepcopy(MODEL)
    model["spec"]["commands"] = [{"name": "reset", "response": "not base64!"}]
    with pytest.raises(InvalidObject) as err:
        convert.model_to_proto(model)
    assert err.value.field == "spec.commands[0].response"


def test_redis_sizes_beyond_int32_are_refused_not_truncated() -> None:
    # KubeEdge's DMI declares them int32; the CRD accepts any integer.
    device = copy.deepcopy(DEVICE)
    redis = device["spec"]["properties"][0]["pushMethod"]["dbMethod"]["redis"]
    redis["redisClientConfig"]["poolsize"] = 2**31
    with pytest.raises(InvalidObject) as err:
        convert.device_to_proto(device)
    assert err.value.field == (
        "spec.properties[0].pushMethod.dbMethod.redis.redisClientConfig.poolsize")


def test_anomaly_detection_travels_as_a_free_form_object() -> None:
    push = convert.device_to_proto(DEVICE).spec.properties[0].pushMethod
    assert convert.customized_from_proto(push.anomalyDetection) == {"window": 10}


def test_twins_round_trip() -> None:
    twins = DEVICE["status"]["twins"]
    assert convert.twins_from_proto(
        [wire(t) for t in convert.twins_to_proto(twins)]) == twins


def test_mapper_info_round_trip_with_the_address_as_bytes() -> None:
    info = {"name": "m", "version": "1", "api_version": "v1beta1", "protocol": "modbus",
            "address": "/run/edgefleet/modbus.sock", "state": "ok"}
    msg = convert.mapper_info_to_proto(info)
    assert msg.address == b"/run/edgefleet/modbus.sock"
    assert convert.mapper_info_from_proto(wire(msg)) == info


# --- configData values ------------------------------------------------------------------

int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)
scalars = st.one_of(st.text(), int64s, st.floats(allow_nan=False), st.booleans())
nested_numbers = st.one_of(
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.text(), nested_numbers),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.text(), scalars | json_values, max_size=6))
def test_config_data_round_trips(data: dict[str, Any]) -> None:
    msg = wire(convert.customized_to_proto(data))
    back = convert.customized_from_proto(msg)
    assert back == data
    # bool stays bool and int stays int (True == 1 would hide a mix-up).
    for key, value in data.items():
        assert type(back[key]) is type(value)


@pytest.mark.parametrize(("value", "type_name"), [
    ("HoldingRegister", "google.protobuf.StringValue"),
    (502, "google.protobuf.Int64Value"),
    (0.5, "google.protobuf.DoubleValue"),
    (True, "google.protobuf.BoolValue"),
    ({"ip": "x"}, "google.protobuf.Struct"),
    ([1, 2], "google.protobuf.ListValue"),
])
def test_values_use_the_well_known_wrappers_a_go_mapper_expects(value: Any,
                                                                type_name: str) -> None:
    packed = convert.pack_value(value)
    assert packed.type_url == f"type.googleapis.com/{type_name}"


def test_wrappers_a_go_mapper_may_send_are_understood() -> None:
    def packed(inner: Any) -> any_pb2.Any:
        out = any_pb2.Any()
        out.Pack(inner)
        return out

    assert convert.unpack_value(packed(wrappers_pb2.Int32Value(value=-7))) == -7
    assert convert.unpack_value(packed(wrappers_pb2.UInt64Value(value=2**64 - 1))) == 2**64 - 1
    assert math.isclose(convert.unpack_value(packed(wrappers_pb2.FloatValue(value=0.25))), 0.25)
    assert convert.unpack_value(packed(wrappers_pb2.BytesValue(value=b"\x00\x01"))) == "AAE="


def test_an_unknown_any_type_is_refused_with_its_path() -> None:
    msg = api_pb2.CustomizedValue()
    msg.data["odd"].Pack(api_pb2.MapperInfo(name="x"))
    with pytest.raises(BadRequest) as err:
        convert.customized_from_proto(msg, "spec.protocol.configData")
    assert err.value.field == "spec.protocol.configData.odd"


def test_values_that_cannot_travel_exactly_are_refused_with_their_path() -> None:
    device = copy.deepcopy(DEVICE)
    device["spec"]["protocol"]["configData"]["huge"] = 2**63
    with pytest.raises(InvalidObject) as err:
        convert.device_to_proto(device)
    assert err.value.field == "spec.protocol.configData.huge"

    device = copy.deepcopy(DEVICE)
    device["spec"]["protocol"]["configData"]["tcp"]["port"] = 2**60
    with pytest.raises(InvalidObject) as err:
        convert.device_to_proto(device)
    assert err.value.field == "spec.protocol.configData.tcp.port"


def test_a_wrongly_typed_field_is_named() -> None:
    device = copy.deepcopy(DEVICE)
    device["spec"]["properties"][0]["reportCycle"] = "2000"
    with pytest.raises(InvalidObject) as err:
        convert.device_to_proto(device)
    assert err.value.field == "spec.properties[0].reportCycle"


# --- model defaults -----------------------------------------------------------------------


def test_model_defaults_fill_what_the_device_leaves_out() -> None:
    model = {
        "metadata": {"name": "temp-model", "namespace": "default"},
        "spec": {
            "protocol": "modbus",
            "protocolConfigData": {"communicateMode": "TCP", "port": 502},
            "properties": [
                {"name": "temperature",
                 "visitors": {"protocolName": "modbus",
                              "configData": {"register": "InputRegister", "offset": 2,
                                             "limit": 1}}},
                {"name": "humidity", "visitors": {"configData": {"offset": 9}}},
            ],
        },
    }
    device = {
        "metadata": {"name": "d", "namespace": "default"},
        "spec": {
            "deviceModelRef": {"name": "temp-model"},
            "protocol": {"configData": {"ip": "10.0.0.5", "port": 1502}},
            "properties": [{"name": "temperature",
                            "visitors": {"configData": {"register": "HoldingRegister"}}}],
        },
    }
    before = copy.deepcopy((device, model))
    merged = convert.merge_model_defaults(device, model)
    assert merged["spec"]["protocol"] == {
        "protocolName": "modbus",
        "configData": {"communicateMode": "TCP", "ip": "10.0.0.5", "port": 1502},
    }
    assert merged["spec"]["properties"] == [{
        "name": "temperature",
        "visitors": {"protocolName": "modbus",
                     "configData": {"register": "HoldingRegister", "offset": 2, "limit": 1}},
    }]  # humidity is not added: the device does not collect it
    assert (device, model) == before
    msg = convert.device_to_proto(device, model)
    assert convert.customized_from_proto(msg.spec.properties[0].visitors.configData)["offset"] == 2


def test_a_device_protocol_name_wins_over_the_model() -> None:
    merged = convert.merge_model_defaults(
        {"metadata": {"name": "d"}, "spec": {"protocol": {"protocolName": "opcua"}}},
        {"metadata": {"name": "m"}, "spec": {"protocol": "modbus"}},
    )
    assert merged["spec"]["protocol"] == {"protocolName": "opcua"}


# --- errors <-> status codes --------------------------------------------------------------


@pytest.mark.parametrize(("err", "code", "back"), [
    (InvalidObject("x", field="f"), "INVALID_ARGUMENT", BadRequest),
    (NotFound("x"), "NOT_FOUND", NotFound),
    (AlreadyExists("x"), "ALREADY_EXISTS", AlreadyExists),
    (Conflict("x"), "ABORTED", Conflict),
    (RateLimited("x"), "RESOURCE_EXHAUSTED", RateLimited),
    (EdgefleetError("x"), "INTERNAL", EdgefleetError),
])
def test_errors_map_to_grpc_codes_and_back(err: EdgefleetError, code: str,
                                           back: type[EdgefleetError]) -> None:
    assert convert.grpc_code_name(err) == code
    assert type(convert.error_from_grpc(code, "details")) is back
