"""The DMI v1beta1 wire contract: our .proto must describe the bytes KubeEdge's does.

The table below was read field by field from KubeEdge's own definition:

    repository kubeedge/kubeedge
    path       staging/src/github.com/kubeedge/api/apis/dmi/v1beta1/api.proto
    commit     1531e3d8c5754e4d868db85947ee44b0f8884e5b

A mapper built on KubeEdge's mapper-framework (or edgecore talking to one of ours) works
only if every field name, number and type here matches, and gRPC finds the methods only
under the same package, service and method names.  Our file may declare a scalar
``optional`` (same encoding); that is the one liberty it takes, so presence is not
compared.  If KubeEdge changes its file, update this table from the new commit and say
which commit in the comment above.
"""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.descriptor import FieldDescriptor

from protocol.dmi import convert
from protocol.dmi.v1beta1 import api_pb2

PACKAGE = "v1beta1"

_S, _I64, _I32, _B, _BY = "string", "int64", "int32", "bool", "bytes"
_ANY_MAP = "map<string, google.protobuf.Any>"
_STR_MAP = "map<string, string>"

# message -> {field name: (field number, type)}; types as the .proto spells them.
KUBEEDGE_MESSAGES: dict[str, dict[str, tuple[int, str]]] = {
    # DeviceManagerService
    "MapperRegisterRequest": {"withData": (1, _B), "mapper": (2, "MapperInfo")},
    "MapperRegisterResponse": {"modelList": (1, "repeated DeviceModel"),
                               "deviceList": (2, "repeated Device")},
    "MapperInfo": {"name": (1, _S), "version": (2, _S), "api_version": (3, _S),
                   "protocol": (4, _S), "address": (5, _BY), "state": (6, _S)},
    "ReportDeviceStatusRequest": {"deviceName": (1, _S), "reportedDevice": (2, "DeviceStatus"),
                                  "deviceNamespace": (3, _S)},
    "ReportDeviceStatusResponse": {},
    "ReportDeviceStatesRequest": {"deviceName": (1, _S), "deviceNamespace": (2, _S),
                                  "state": (3, _S)},
    "ReportDeviceStatesResponse": {},
    # DeviceMapperService
    "RegisterDeviceRequest": {"device": (1, "Device")},
    "RegisterDeviceResponse": {"deviceName": (1, _S), "deviceNamespace": (2, _S)},
    "RemoveDeviceRequest": {"deviceName": (1, _S), "deviceNamespace": (2, _S)},
    "RemoveDeviceResponse": {},
    "UpdateDeviceRequest": {"device": (1, "Device")},
    "UpdateDeviceResponse": {},
    "CreateDeviceModelRequest": {"model": (1, "DeviceModel")},
    "CreateDeviceModelResponse": {"deviceModelName": (1, _S), "deviceModelNamespace": (2, _S)},
    "RemoveDeviceModelRequest": {"modelName": (1, _S), "modelNamespace": (2, _S)},
    "RemoveDeviceModelResponse": {},
    "UpdateDeviceModelRequest": {"model": (1, "DeviceModel")},
    "UpdateDeviceModelResponse": {},
    "GetDeviceRequest": {"deviceName": (1, _S), "deviceNamespace": (2, _S)},
    "GetDeviceResponse": {"device": (1, "Device")},
    # DeviceModel
    "DeviceModel": {"name": (1, _S), "spec": (2, "DeviceModelSpec"), "namespace": (3, _S)},
    "DeviceModelSpec": {"properties": (1, "repeated ModelProperty"),
                        "commands": (2, "repeated DeviceCommand")},
    "ModelProperty": {"name": (1, _S), "description": (2, _S), "type": (3, _S),
                      "accessMode": (4, _S), "minimum": (5, _S), "maximum": (6, _S),
                      "unit": (7, _S)},
    "DeviceCommand": {"name": (1, _S), "url": (2, _S), "method": (3, _S),
                      "status_code": (4, "repeated string"),
                      "parameters": (5, "repeated string"), "response": (6, _BY)},
    # Device
    "Device": {"name": (1, _S), "spec": (2, "DeviceSpec"), "status": (3, "DeviceStatus"),
               "namespace": (4, _S)},
    "DeviceSpec": {"deviceModelReference": (1, _S), "protocol": (2, "ProtocolConfig"),
                   "properties": (3, "repeated DeviceProperty"),
                   "methods": (4, "repeated DeviceMethod")},
    "DeviceMethod": {"name": (1, _S), "description": (2, _S),
                     "propertyNames": (3, "repeated string")},
    "DeviceProperty": {"name": (1, _S), "desired": (2, "TwinProperty"),
                       "visitors": (3, "VisitorConfig"), "reportCycle": (4, _I64),
                       "collectCycle": (5, _I64), "reportToCloud": (6, _B),
                       "pushMethod": (7, "PushMethod")},
    "ProtocolConfig": {"protocolName": (1, _S), "configData": (2, "CustomizedValue")},
    "VisitorConfig": {"protocolName": (1, _S), "configData": (2, "CustomizedValue")},
    "CustomizedValue": {"data": (1, _ANY_MAP)},
    "PushMethod": {"http": (1, "PushMethodHTTP"), "mqtt": (2, "PushMethodMQTT"),
                   "dbMethod": (3, "DBMethod"), "otel": (4, "PushMethodOTEL"),
                   "anomalyDetection": (5, "AnomalyDetection")},
    "PushMethodHTTP": {"hostname": (1, _S), "port": (2, _I64), "requestpath": (3, _S),
                       "timeout": (4, _I64)},
    "PushMethodMQTT": {"address": (1, _S), "topic": (2, _S), "qos": (3, _I32),
                       "retained": (4, _B)},
    "PushMethodOTEL": {"endpointURL": (1, _S)},
    "AnomalyDetection": {"data": (1, _ANY_MAP)},
    "DBMethod": {"influxdb2": (1, "DBMethodInfluxdb2"), "redis": (2, "DBMethodRedis"),
                 "tdengine": (3, "DBMethodTDEngine"), "mysql": (4, "DBMethodMySQL")},
    "DBMethodInfluxdb2": {"influxdb2ClientConfig": (1, "Influxdb2ClientConfig"),
                          "influxdb2DataConfig": (2, "Influxdb2DataConfig")},
    "Influxdb2ClientConfig": {"url": (1, _S), "org": (2, _S), "bucket": (3, _S)},
    "Influxdb2DataConfig": {"measurement": (1, _S), "tag": (2, _STR_MAP), "fieldKey": (3, _S)},
    "DBMethodRedis": {"redisClientConfig": (1, "RedisClientConfig")},
    "RedisClientConfig": {"addr": (1, _S), "db": (2, _I32), "poolsize": (3, _I32),
                          "minIdleConns": (4, _I32)},
    "DBMethodTDEngine": {"tdEngineClientConfig": (1, "TDEngineClientConfig")},
    "TDEngineClientConfig": {"addr": (1, _S), "dbname": (2, _S)},
    "DBMethodMySQL": {"mysqlClientConfig": (1, "MySQLClientConfig")},
    "MySQLClientConfig": {"addr": (1, _S), "database": (2, _S), "userName": (3, _S)},
    "DBMethodOTEL": {"otelExporterConfig": (1, "OTELExporterConfig")},
    "OTELExporterConfig": {"endpointURL": (1, _S)},
    # Status and twins
    "DeviceStatus": {"twins": (1, "repeated Twin"), "reportToCloud": (2, _B),
                     "reportCycle": (3, _I64)},
    "Twin": {"propertyName": (1, _S), "observedDesired": (2, "TwinProperty"),
             "reported": (3, "TwinProperty")},
    "TwinProperty": {"value": (1, _S), "metadata": (2, _STR_MAP)},
}

# gRPC path -> (request, response); KubeEdge's api_grpc.pb.go uses exactly these paths.
KUBEEDGE_METHODS: dict[str, tuple[str, str]] = {
    "/v1beta1.DeviceManagerService/MapperRegister":
        ("MapperRegisterRequest", "MapperRegisterResponse"),
    "/v1beta1.DeviceManagerService/ReportDeviceStatus":
        ("ReportDeviceStatusRequest", "ReportDeviceStatusResponse"),
    "/v1beta1.DeviceManagerService/ReportDeviceStates":
        ("ReportDeviceStatesRequest", "ReportDeviceStatesResponse"),
    "/v1beta1.DeviceMapperService/RegisterDevice":
        ("RegisterDeviceRequest", "RegisterDeviceResponse"),
    "/v1beta1.DeviceMapperService/RemoveDevice": ("RemoveDeviceRequest", "RemoveDeviceResponse"),
    "/v1beta1.DeviceMapperService/UpdateDevice": ("UpdateDeviceRequest", "UpdateDeviceResponse"),
    "/v1beta1.DeviceMapperService/CreateDeviceModel":
        ("CreateDeviceModelRequest", "CreateDeviceModelResponse"),
    "/v1beta1.DeviceMapperService/RemoveDeviceModel":
        ("RemoveDeviceModelRequest", "RemoveDeviceModelResponse"),
    "/v1beta1.DeviceMapperService/UpdateDeviceModel":
        ("UpdateDeviceModelRequest", "UpdateDeviceModelResponse"),
    "/v1beta1.DeviceMapperService/GetDevice": ("GetDeviceRequest", "GetDeviceResponse"),
}

_SCALAR_NAMES = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_SINT32: "sint32",
    FieldDescriptor.TYPE_SINT64: "sint64",
    FieldDescriptor.TYPE_DOUBLE: "double",
    FieldDescriptor.TYPE_FLOAT: "float",
}


def _type_name(field: Any) -> str:
    """The field's type as a .proto would spell it (our own package's prefix dropped)."""
    message = field.message_type
    if message is not None and message.GetOptions().map_entry:
        key, value = message.fields_by_name["key"], message.fields_by_name["value"]
        return f"map<{_type_name(key)}, {_type_name(value)}>"
    if message is not None:
        name = str(message.full_name).removeprefix(f"{PACKAGE}.")
    else:
        name = _SCALAR_NAMES.get(field.type, f"type#{field.type}")
    return f"repeated {name}" if field.is_repeated else name


def _ours(message: Any) -> dict[str, tuple[int, str]]:
    return {str(f.name): (int(f.number), _type_name(f)) for f in message.fields}


def test_the_package_is_kubeedges() -> None:
    assert api_pb2.DESCRIPTOR.package == PACKAGE


def test_we_declare_exactly_kubeedges_messages() -> None:
    assert sorted(api_pb2.DESCRIPTOR.message_types_by_name) == sorted(KUBEEDGE_MESSAGES)


@pytest.mark.parametrize("name", sorted(KUBEEDGE_MESSAGES))
def test_field_names_numbers_and_types_match_kubeedge(name: str) -> None:
    assert _ours(api_pb2.DESCRIPTOR.message_types_by_name[name]) == KUBEEDGE_MESSAGES[name]


def test_the_grpc_paths_and_their_messages_are_kubeedges() -> None:
    ours: dict[str, tuple[str, str]] = {}
    for service in api_pb2.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            assert not method.client_streaming and not method.server_streaming
            path = f"/{service.full_name}/{method.name}"
            ours[path] = (str(method.input_type.full_name).removeprefix(f"{PACKAGE}."),
                          str(method.output_type.full_name).removeprefix(f"{PACKAGE}."))
    assert ours == KUBEEDGE_METHODS


# --- bytes a Go peer sends, encoded by hand from the numbers above ------------------------


def _tag(number: int, wire_type: int) -> bytes:
    return bytes([number << 3 | wire_type])  # every number here is < 16: one byte


def _bytes_field(number: int, payload: bytes) -> bytes:
    assert len(payload) < 128  # a one-byte length
    return _tag(number, 2) + bytes([len(payload)]) + payload


def _varint_field(number: int, value: int) -> bytes:
    assert 0 <= value < 128
    return _tag(number, 0) + bytes([value])


def test_a_go_mappers_registration_decodes() -> None:
    mapper = (_bytes_field(1, b"modbus-mapper") + _bytes_field(4, b"modbus")
              + _bytes_field(5, b"/etc/kubeedge/modbus.sock"))
    wire = _varint_field(1, 1) + _bytes_field(2, mapper)
    request = api_pb2.MapperRegisterRequest.FromString(wire)
    assert request.withData is True
    assert convert.mapper_info_from_proto(request.mapper) == {
        "name": "modbus-mapper", "version": "", "api_version": "", "protocol": "modbus",
        "address": "/etc/kubeedge/modbus.sock", "state": ""}


def test_a_go_mappers_twin_report_decodes() -> None:
    twin = (_bytes_field(1, b"temperature") + _bytes_field(2, _bytes_field(1, b"30"))
            + _bytes_field(3, _bytes_field(1, b"29")))
    status = _bytes_field(1, twin) + _varint_field(2, 1) + _varint_field(3, 100)
    wire = _bytes_field(1, b"sensor-1") + _bytes_field(2, status) + _bytes_field(3, b"default")
    request = api_pb2.ReportDeviceStatusRequest.FromString(wire)
    assert (request.deviceName, request.deviceNamespace) == ("sensor-1", "default")
    assert convert.twins_from_proto(request.reportedDevice.twins) == [{
        "propertyName": "temperature", "observedDesired": {"value": "30"},
        "reported": {"value": "29"}}]
    assert request.reportedDevice.reportToCloud is True
    assert request.reportedDevice.reportCycle == 100


def test_push_methods_land_where_kubeedge_puts_them() -> None:
    # dbMethod is field 3 and otel field 4 in KubeEdge's PushMethod; a swap would send a
    # database config where a Go mapper expects an OpenTelemetry endpoint.
    tdengine = _bytes_field(1, _bytes_field(1, b"td:6041") + _bytes_field(2, b"metrics"))
    wire = (_bytes_field(3, _bytes_field(3, tdengine))
            + _bytes_field(4, _bytes_field(1, b"http://otel:4318")))
    device = {"metadata": {"name": "d"}, "spec": {"properties": [{
        "name": "p", "pushMethod": {
            "dbMethod": {"TDEngine": {"TDEngineClientConfig": {"addr": "td:6041",
                                                               "dbName": "metrics"}}},
            "otel": {"endpointURL": "http://otel:4318"}}}]}}
    ours = convert.device_to_proto(device).spec.properties[0].pushMethod
    assert api_pb2.PushMethod.FromString(wire) == ours
    assert convert.device_from_proto(convert.device_to_proto(device))["spec"] == device["spec"]
