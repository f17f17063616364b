"""Objects and paths the API tests share."""

from __future__ import annotations

from typing import Any

DEV_API = "devices.kubeedge.io/v1beta1"
DEV_BASE = f"/apis/{DEV_API}"


def devices_path(ns: str = "default", name: str | None = None) -> str:
    base = f"{DEV_BASE}/namespaces/{ns}/devices"
    return f"{base}/{name}" if name else base


def models_path(ns: str = "default", name: str | None = None) -> str:
    base = f"{DEV_BASE}/namespaces/{ns}/devicemodels"
    return f"{base}/{name}" if name else base


def device_model(name: str = "thermometer", ns: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": DEV_API,
        "kind": "DeviceModel",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "protocol": "modbus",
            "properties": [
                {"name": "temperature", "type": "INT", "accessMode": "ReadOnly", "unit": "C"},
            ],
        },
    }


def device(
    name: str = "temp-sensor-01", ns: str = "default", *, labels: dict[str, str] | None = None,
    report_cycle: Any = 10000, node: str = "edge-1",
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if labels:
        meta["labels"] = labels
    return {
        "apiVersion": DEV_API,
        "kind": "Device",
        "metadata": meta,
        "spec": {
            "deviceModelRef": {"name": "thermometer"},
            "nodeName": node,
            "protocol": {"protocolName": "modbus", "configData": {"ip": "10.0.0.5"}},
            "properties": [
                {
                    "name": "temperature",
                    "reportCycle": report_cycle,
                    "visitors": {"protocolName": "modbus",
                                 "configData": {"register": "HoldingRegister", "offset": 1}},
                },
            ],
        },
    }


def node(name: str, ready: str = "True") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"edgefleet.io/site": "plant-a"}},
        "spec": {},
        "status": {
            "conditions": [{"type": "Ready", "status": ready,
                            "lastHeartbeatTime": "2026-01-01T00:00:00Z"}],
        },
    }
