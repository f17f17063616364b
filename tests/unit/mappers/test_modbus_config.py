from __future__ import annotations

from typing import Any

import pytest

from mappers.modbus.codec import DataType, RegisterKind
from mappers.modbus.config import (
    ConfigError,
    Mode,
    Parity,
    SerialEndpoint,
    TcpEndpoint,
    bus_key,
    parse_device,
    parse_property,
    parse_protocol,
)

# The example manifests of reference/kubeedge-protocol.md section 2.6.
MODEL_SPEC: dict[str, Any] = {
    "protocol": "modbus",
    "properties": [{"name": "temperature", "description": "temperature in degree celsius",
                    "type": "INT", "accessMode": "ReadWrite", "minimum": "0",
                    "maximum": "100", "unit": "celsius"}],
}
DEVICE_SPEC: dict[str, Any] = {
    "deviceModelRef": {"name": "temp-model"},
    "nodeName": "edge-node-1",
    "protocol": {"protocolName": "modbus",
                 "configData": {"communicateMode": "TCP", "ip": "192.168.1.50", "port": 502,
                                "slaveID": 1}},
    "properties": [{
        "name": "temperature", "collectCycle": 2000, "reportCycle": 2000,
        "reportToCloud": True, "desired": {"value": "30"},
        "visitors": {"protocolName": "modbus",
                     "configData": {"register": "HoldingRegister", "offset": 2, "limit": 1,
                                    "scale": 1, "isSwap": False, "isRegisterSwap": False}},
    }],
}


def test_the_kubeedge_example_manifest_parses() -> None:
    device = parse_device(DEVICE_SPEC, MODEL_SPEC)
    assert device.protocol.slave_id == 1
    assert device.protocol.mode is Mode.TCP
    assert device.protocol.endpoint == TcpEndpoint(host="192.168.1.50", port=502, timeout=3.0)
    temp = device.prop("temperature")
    assert (temp.kind, temp.offset, temp.data_type, temp.count) == (
        RegisterKind.HOLDING, 2, DataType.INT16, 1)
    assert temp.writable


def test_protocol_accepts_kubeedge_spellings_and_loose_numbers() -> None:
    cfg = parse_protocol({"slaveId": "7", "ip": "10.0.0.5", "port": "1502", "timeout": 500})
    assert cfg.slave_id == 7
    assert cfg.endpoint == TcpEndpoint(host="10.0.0.5", port=1502, timeout=0.5)
    assert parse_protocol({"ip": "h", "timeout": "2s"}).endpoint.timeout == 2.0
    assert parse_protocol({"ip": "h", "timeout": "250ms"}).endpoint.timeout == 0.25
    assert parse_protocol({"ip": "h"}).slave_id == 1  # slaveID defaults to 1


@pytest.mark.parametrize(("written", "parity"), [
    ("None", Parity.NONE), ("n", Parity.NONE), ("EVEN", Parity.EVEN), ("e", Parity.EVEN),
    ("Odd", Parity.ODD), ("O", Parity.ODD),
])
def test_rtu_line_settings(written: str, parity: Parity) -> None:
    cfg = parse_protocol({"communicateMode": "rtu", "serialName": "/dev/ttyS1", "slaveID": 3,
                          "baudRate": "9600", "dataBits": 8, "parity": written, "stopBits": 2})
    assert cfg.mode is Mode.RTU
    assert cfg.endpoint == SerialEndpoint(port="/dev/ttyS1", baudrate=9600, bytesize=8,
                                          parity=parity, stopbits=2, timeout=3.0)


def test_rtu_defaults_are_the_modbus_serial_line_defaults() -> None:
    ep = parse_protocol({"communicateMode": "RTU", "serialPort": "/dev/ttyUSB0"}).endpoint
    assert ep == SerialEndpoint(port="/dev/ttyUSB0", baudrate=19200, bytesize=8,
                                parity=Parity.EVEN, stopbits=1, timeout=3.0)


def test_bus_key_identifies_the_physical_bus_not_the_unit() -> None:
    a = parse_protocol({"ip": "PLC.local", "port": 502, "slaveID": 1})
    b = parse_protocol({"ip": "plc.local", "port": "502", "slaveID": 2})
    c = parse_protocol({"ip": "plc.local", "port": 503, "slaveID": 1})
    assert bus_key(a) == bus_key(b) == ("tcp", "plc.local", 502)
    assert bus_key(c) != bus_key(a)
    r1 = parse_protocol({"communicateMode": "RTU", "serialPort": "/dev/ttyS0", "slaveID": 1})
    r2 = parse_protocol({"communicateMode": "RTU", "serialName": "/dev/ttyS0", "slaveID": 9})
    assert bus_key(r1) == bus_key(r2) == ("rtu", "/dev/ttyS0")


@pytest.mark.parametrize(("data", "field", "words"), [
    ({"ip": "h", "slaveID": "one"}, "slaveID", "valid integer"),
    ({"ip": "h", "slaveId": 300}, "slaveId", "0..255"),
    ({"communicateMode": "RTU", "serialPort": "/x", "slaveID": 0}, "slaveID", "1..247"),
    ({"communicateMode": "UDP", "ip": "h"}, "communicateMode", "TCP or RTU"),
    ({"port": 502}, "ip", "needs ip"),
    ({"ip": "h", "port": 70000}, "port", "1..65535"),
    ({"ip": "h", "port": "http"}, "port", "valid integer"),
    ({"ip": "h", "timeout": "soon"}, "timeout", "not a duration"),
    ({"communicateMode": "RTU"}, "serialPort", "needs serialPort"),
    ({"communicateMode": "RTU", "serialPort": "/x", "parity": "mark"}, "parity", "Even"),
    ({"communicateMode": "RTU", "serialPort": "/x", "stopBits": 3}, "stopBits", "1 or 2"),
    ({"communicateMode": "RTU", "serialPort": "/x", "dataBits": 9}, "dataBits", "5..8"),
])
def test_bad_protocol_config_names_the_field(data: dict[str, Any], field: str,
                                             words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_protocol(data)
    assert err.value.field == f"spec.protocol.configData.{field}"
    assert words in err.value.message


def prop(**config: Any) -> dict[str, Any]:
    return config


@pytest.mark.parametrize(("config", "model_type", "data_type", "count"), [
    (prop(register="CoilRegister", offset=0), None, DataType.BOOLEAN, 1),
    (prop(register="DiscreteInputRegister", offset=3, limit=1), None, DataType.BOOLEAN, 1),
    (prop(register="HoldingRegister", offset=0), None, DataType.INT16, 1),
    (prop(register="InputRegister", offset=0, limit=2), None, DataType.INT32, 2),
    (prop(register="HoldingRegister", offset=0, dataType="uint16"), None, DataType.UINT16, 1),
    (prop(register="HoldingRegister", offset=0, dataType="FLOAT64"), None, DataType.FLOAT64, 4),
    (prop(register="HoldingRegister", offset=0, dataType="float32", limit=2), None,
     DataType.FLOAT32, 2),
    # KubeEdge example names, sized by limit
    (prop(register="HoldingRegister", offset=0, dataType="int"), None, DataType.INT16, 1),
    (prop(register="HoldingRegister", offset=0, dataType="int", limit=2), None,
     DataType.INT32, 2),
    (prop(register="HoldingRegister", offset=0, dataType="float"), None, DataType.FLOAT32, 2),
    (prop(register="HoldingRegister", offset=0, dataType="double"), None, DataType.FLOAT64, 4),
    (prop(register="HoldingRegister", offset=0, dataType="bool"), None, DataType.BOOLEAN, 1),
    (prop(register="HoldingRegister", offset=0, dataType="string", limit=5), None,
     DataType.STRING, 5),
    (prop(register="HoldingRegister", offset=0, dataType="bytes", limit=3), None,
     DataType.BYTES, 3),
    # the DeviceModel's type as the fallback
    (prop(register="InputRegister", offset=0, limit=1, scale=0.1), "FLOAT", DataType.INT16, 1),
    (prop(register="InputRegister", offset=0, limit=2), "FLOAT", DataType.FLOAT32, 2),
    (prop(register="InputRegister", offset=0), "DOUBLE", DataType.FLOAT64, 4),
    (prop(register="InputRegister", offset=0, limit=2), "INT", DataType.INT32, 2),
    (prop(register="InputRegister", offset=0, limit=8), "STRING", DataType.STRING, 8),
    (prop(register="HoldingRegister", offset=0), "BOOLEAN", DataType.BOOLEAN, 1),
    # an explicit dataType wins over the model's type
    (prop(register="InputRegister", offset=0, dataType="uint32"), "INT", DataType.UINT32, 2),
])
def test_data_type_resolution(config: dict[str, Any], model_type: str | None,
                              data_type: DataType, count: int) -> None:
    parsed = parse_property(config, name="p", model_type=model_type)
    assert (parsed.data_type, parsed.count) == (data_type, count)


def test_visitor_fields_and_loose_values() -> None:
    parsed = parse_property({"register": "holdingregister", "offset": "10", "scale": "0.1",
                             "isSwap": "true", "isRegisterSwap": 1, "dataType": "int32"},
                            name="p")
    assert parsed.kind is RegisterKind.HOLDING
    assert parsed.offset == 10 and parsed.scale == 0.1
    assert parsed.is_swap and parsed.is_register_swap
    assert parsed.spec.count == 2


def test_only_coils_and_holding_registers_of_readwrite_properties_are_writable() -> None:
    assert parse_property({"register": "CoilRegister", "offset": 0}, name="p").writable
    assert parse_property({"register": "HoldingRegister", "offset": 0}, name="p").writable
    assert not parse_property({"register": "InputRegister", "offset": 0}, name="p").writable
    assert not parse_property({"register": "DiscreteInputRegister", "offset": 0},
                              name="p").writable
    assert not parse_property({"register": "HoldingRegister", "offset": 0}, name="p",
                              access_mode="ReadOnly").writable


BASE = "spec.properties[2].visitors.configData"


@pytest.mark.parametrize(("config", "model_type", "field", "words"), [
    (prop(offset=1), None, "register", "required"),
    (prop(register="Holding2", offset=1), None, "register", "one of CoilRegister"),
    (prop(register="HoldingRegister"), None, "offset", "required"),
    (prop(register="HoldingRegister", offset=-1), None, "offset", "0..65535"),
    (prop(register="HoldingRegister", offset="x"), None, "offset", "valid integer"),
    (prop(register="HoldingRegister", offset=65535, dataType="int32"), None, "offset",
     "past address 65535"),
    (prop(register="HoldingRegister", offset=1, limit=0), None, "limit", "at least 1"),
    (prop(register="HoldingRegister", offset=1, scale=0), None, "scale", "non-zero"),
    (prop(register="HoldingRegister", offset=1, isSwap="sometimes"), None, "isSwap",
     "valid boolean"),
    (prop(register="CoilRegister", offset=1, dataType="float"), None, "dataType", "booleans"),
    (prop(register="CoilRegister", offset=1, limit=4), None, "limit", "one bit"),
    (prop(register="HoldingRegister", offset=1, dataType="int64"), None, "dataType",
     "must be one of"),
    (prop(register="HoldingRegister", offset=1, dataType="int32", limit=1), None, "limit",
     "occupies 2"),
    (prop(register="HoldingRegister", offset=1, dataType="string"), None, "limit",
     "needs limit"),
    (prop(register="HoldingRegister", offset=1, dataType="string", limit=126), None, "limit",
     "more than one request"),
    (prop(register="HoldingRegister", offset=1, dataType="int", limit=3), None, "limit",
     "not 3"),
    (prop(register="HoldingRegister", offset=1, limit=3), None, "dataType", "required"),
    (prop(register="HoldingRegister", offset=1), "STREAM", "dataType", "cannot be read"),
])
def test_bad_visitor_config_names_the_field(config: dict[str, Any], model_type: str | None,
                                            field: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_property(config, name="p", model_type=model_type, path=BASE)
    assert err.value.field == f"{BASE}.{field}"
    assert words in err.value.message


def test_device_errors_point_into_the_device_spec() -> None:
    spec = {
        "protocol": {"configData": {"ip": "h"}},
        "properties": [
            {"name": "a", "visitors": {"configData": {"register": "CoilRegister", "offset": 0}}},
            {"name": "b", "visitors": {"configData": {"register": "Coil", "offset": 1}}},
            {"name": "c", "visitors": {"configData": {"register": "Bogus", "offset": 2}}},
        ],
    }
    with pytest.raises(ConfigError) as err:
        parse_device(spec)
    assert err.value.field == "spec.properties[2].visitors.configData.register"
    assert str(err.value).startswith("spec.properties[2].visitors.configData.register: ")


def test_device_without_protocol_config_or_visitor_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        parse_device({"properties": []})
    assert err.value.field == "spec.protocol.configData"
    with pytest.raises(ConfigError) as err:
        parse_device({"protocol": {"configData": {"ip": "h"}}, "properties": [{"name": "x"}]})
    assert err.value.field == "spec.properties[0].visitors.configData"


def test_model_defaults_are_overridden_by_the_device() -> None:
    model = {
        "protocolConfigData": {"ip": "10.0.0.1", "port": 1502, "slaveID": 4},
        "properties": [{"name": "t", "type": "FLOAT", "accessMode": "ReadOnly",
                        "visitors": {"configData": {"register": "HoldingRegister",
                                                    "offset": 0, "limit": 1, "scale": 0.1}}}],
    }
    device = {"protocol": {"configData": {"ip": "10.0.0.2"}},
              "properties": [{"name": "t", "visitors": {"configData": {"offset": 5}}}]}
    cfg = parse_device(device, model)
    assert cfg.protocol.endpoint == TcpEndpoint(host="10.0.0.2", port=1502, timeout=3.0)
    assert cfg.protocol.slave_id == 4
    t = cfg.prop("t")
    assert (t.kind, t.offset, t.scale, t.data_type) == (
        RegisterKind.HOLDING, 5, 0.1, DataType.INT16)
    assert not t.writable
