"""The real efctl executable against the real HTTPS API."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
from pathlib import Path

import httpx
import yaml

from cloudcore.auth import Role
from efctl.config import load_efctl_config, write_efctl_config
from tests.integration.api.api_harness import RunningApi
from tests.integration.api.api_objects import devices_path
from tests.integration.efctl.conftest import Efctl

MANIFEST = """\
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: thermometer
spec:
  protocol: modbus
  properties:
    - name: temperature
      type: INT
      accessMode: ReadOnly
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: temp-sensor-01
  labels:
    room: boiler
spec:
  deviceModelRef:
    name: thermometer
  nodeName: edge-1
  protocol:
    protocolName: modbus
  properties:
    - name: temperature
      reportCycle: 10000
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """Assert a failed run printed exactly one line on stderr; return it."""
    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def stored_devices(api: RunningApi) -> list[str]:
    with api.admin() as c:
        items = c.get("/apis/devices.kubeedge.io/v1beta1/devices").json()["items"]
        items += c.get("/apis/devices.kubeedge.io/v1beta1/devicemodels").json()["items"]
    return sorted(f"{o['kind']}/{o['metadata']['name']}" for o in items)


def test_apply_creates_then_leaves_unchanged_then_configures(
    efctl: Efctl, api: RunningApi, tmp_path: Path,
) -> None:
    path = write(tmp_path, "fleet.yaml", MANIFEST)
    first = efctl("apply", "-f", str(path))
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        "devicemodel.devices.kubeedge.io/thermometer created",
        "device.devices.kubeedge.io/temp-sensor-01 created",
    ]
    again = efctl("apply", "-f", str(path))
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        "devicemodel.devices.kubeedge.io/thermometer unchanged",
        "device.devices.kubeedge.io/temp-sensor-01 unchanged",
    ]
    path.write_text(MANIFEST.replace("reportCycle: 10000", "reportCycle: 500"))
    edited = efctl("apply", "-f", str(path))
    assert edited.returncode == 0, edited.stderr
    assert edited.stdout.splitlines() == [
        "devicemodel.devices.kubeedge.io/thermometer unchanged",
        "device.devices.kubeedge.io/temp-sensor-01 configured",
    ]
    with api.admin() as c:
        dev = c.get(devices_path(name="temp-sensor-01")).json()
    assert dev["spec"]["properties"][0]["reportCycle"] == 500


def test_apply_reads_stdin(efctl: Efctl, api: RunningApi) -> None:
    result = efctl("apply", "-f", "-", stdin=MANIFEST)
    assert result.returncode == 0, result.stderr
    assert stored_devices(api) == ["Device/temp-sensor-01", "DeviceModel/thermometer"]


def test_get_in_every_output_format(efctl: Efctl, api: RunningApi, tmp_path: Path) -> None:
    assert efctl("apply", "-f", str(write(tmp_path, "f.yaml", MANIFEST))).returncode == 0

    table = efctl("get", "devices")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "NODE", "MODEL", "AGE"]
    assert lines[1].split()[:3] == ["temp-sensor-01", "edge-1", "thermometer"]

    wide = efctl("get", "dev", "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "NODE", "MODEL", "PROTOCOL", "STATE", "AGE"]
    assert wide[1].split()[:5] == ["temp-sensor-01", "edge-1", "thermometer", "modbus", "<none>"]

    as_json = efctl("get", "device", "temp-sensor-01", "-o", "json")
    assert as_json.returncode == 0
    obj = json.loads(as_json.stdout)
    assert obj["kind"] == "Device" and obj["metadata"]["name"] == "temp-sensor-01"

    listing = json.loads(efctl("get", "Device", "-o", "json").stdout)
    assert listing["kind"] == "DeviceList"
    assert [o["metadata"]["name"] for o in listing["items"]] == ["temp-sensor-01"]

    as_yaml = yaml.safe_load(efctl("get", "dm", "thermometer", "-o", "yaml").stdout)
    assert as_yaml["kind"] == "DeviceModel" and as_yaml["spec"]["protocol"] == "modbus"
    yaml_list = yaml.safe_load(efctl("get", "devicemodels", "-o", "yaml").stdout)
    assert yaml_list["kind"] == "DeviceModelList" and len(yaml_list["items"]) == 1

    one = efctl("get", "devicemodel", "thermometer").stdout.splitlines()
    assert one[0].split() == ["NAME", "PROTOCOL", "AGE"]
    assert one[1].split()[:2] == ["thermometer", "modbus"]


def test_get_across_namespaces_and_by_label(efctl: Efctl, tmp_path: Path) -> None:
    other = MANIFEST.split("---\n")[1].replace("name: temp-sensor-01", "name: far-sensor")
    other = other.replace("metadata:\n", "metadata:\n  namespace: plant-b\n", 1)
    other = other.replace("room: boiler", "room: office")
    path = write(tmp_path, "f.yaml", MANIFEST + "---\n" + other)
    assert efctl("apply", "-f", str(path)).returncode == 0

    assert [ln.split()[0] for ln in efctl("get", "devices").stdout.splitlines()[1:]] == [
        "temp-sensor-01"]
    assert [ln.split()[0] for ln in efctl("get", "devices", "-n", "plant-b")
            .stdout.splitlines()[1:]] == ["far-sensor"]
    everywhere = efctl("get", "devices", "-A").stdout.splitlines()
    assert everywhere[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert [ln.split()[:2] for ln in everywhere[1:]] == [
        ["default", "temp-sensor-01"], ["plant-b", "far-sensor"]]
    office = efctl("get", "devices", "-A", "-l", "room=office").stdout.splitlines()
    assert [ln.split()[1] for ln in office[1:]] == ["far-sensor"]
    nothing = efctl("get", "devices", "-l", "room=attic")
    assert nothing.returncode == 0 and nothing.stdout == ""
    assert "No resources found" in nothing.stderr


def test_nodes_show_their_readiness(efctl: Efctl, api: RunningApi) -> None:
    api.add_node("edge-1", ready="True")
    api.add_node("edge-2", ready="False")
    for alias in ("nodes", "node", "no", "Node"):
        result = efctl("get", alias)
        assert result.returncode == 0, result.stderr
        rows = [ln.split()[:2] for ln in result.stdout.splitlines()]
        assert rows == [["NAME", "STATUS"], ["edge-1", "Ready"], ["edge-2", "NotReady"]]


def test_describe_shows_the_whole_object(efctl: Efctl, tmp_path: Path) -> None:
    assert efctl("apply", "-f", str(write(tmp_path, "f.yaml", MANIFEST))).returncode == 0
    result = efctl("describe", "dev", "temp-sensor-01")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "Name:         temp-sensor-01" in text
    assert "Namespace:    default" in text
    assert "Labels:       room=boiler" in text
    assert "Kind:         Device" in text
    assert "Spec:\n  deviceModelRef:\n    name: thermometer" in text
    assert "reportCycle: 10000" in text


def test_delete_by_name_and_by_file(efctl: Efctl, api: RunningApi, tmp_path: Path) -> None:
    path = write(tmp_path, "f.yaml", MANIFEST)
    assert efctl("apply", "-f", str(path)).returncode == 0
    by_name = efctl("delete", "device", "temp-sensor-01")
    assert by_name.returncode == 0, by_name.stderr
    assert by_name.stdout.strip() == 'device.devices.kubeedge.io "temp-sensor-01" deleted'
    assert stored_devices(api) == ["DeviceModel/thermometer"]

    assert efctl("apply", "-f", str(path)).returncode == 0
    by_file = efctl("delete", "-f", str(path))
    assert by_file.returncode == 0, by_file.stderr
    assert by_file.stdout.splitlines() == [
        'devicemodel.devices.kubeedge.io "thermometer" deleted',
        'device.devices.kubeedge.io "temp-sensor-01" deleted',
    ]
    assert stored_devices(api) == []

    missing = one_error_line(efctl("delete", "dev", "temp-sensor-01"))
    assert "not found" in missing and "temp-sensor-01" in missing


def test_invalid_yaml_is_one_line_and_changes_nothing(
    efctl: Efctl, api: RunningApi, tmp_path: Path,
) -> None:
    broken = MANIFEST + "---\nkind: Device\nmetadata:\n  name: [oops\n"
    path = write(tmp_path, "broken.yaml", broken)
    line = one_error_line(efctl("apply", "-f", str(path)))
    assert line.startswith(f"error: {path}: invalid YAML at line ")
    assert ", column " in line
    assert stored_devices(api) == []


def test_wrong_type_field_is_one_line_naming_it_and_changes_nothing(
    efctl: Efctl, api: RunningApi, tmp_path: Path,
) -> None:
    path = write(tmp_path, "bad.yaml", MANIFEST.replace("reportCycle: 10000", "reportCycle: fast"))
    line = one_error_line(efctl("apply", "-f", str(path)))
    assert line.startswith(
        "error: Device default/temp-sensor-01: spec.properties[0].reportCycle: "
        "Input should be a valid integer")
    assert f"({path}, document 2)" in line
    # The valid first document was not applied either.
    assert stored_devices(api) == []


def test_server_side_refusal_names_the_document(
    efctl: Efctl, api: RunningApi, tmp_path: Path,
) -> None:
    assert efctl("apply", "-f", str(write(tmp_path, "f.yaml", MANIFEST))).returncode == 0
    stale = MANIFEST.replace("  name: temp-sensor-01\n",
                             "  name: temp-sensor-01\n  resourceVersion: \"1\"\n")
    line = one_error_line(efctl("apply", "-f", str(write(tmp_path, "stale.yaml", stale))))
    assert line.startswith("error: Device default/temp-sensor-01: metadata.resourceVersion: ")
    assert "document 2)" in line


def test_unknown_kind_and_missing_object_are_one_line(efctl: Efctl) -> None:
    line = one_error_line(efctl("get", "widgets"))
    assert line.startswith("error: unknown kind 'widgets'")
    line = one_error_line(efctl("get", "dev", "nope"))
    assert line == 'error: Device "default/nope" not found'
    line = one_error_line(efctl("describe", "no", "nope"))
    assert "not found" in line


def test_unreachable_server_is_one_line(efctl: Efctl, api: RunningApi, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before efctl runs: nothing listens
    config = tmp_path / "down.yaml"
    write_efctl_config(config, f"https://127.0.0.1:{port}", api.ca_pem, api.admin_token)
    line = one_error_line(efctl("get", "nodes", config=config))
    assert line == f"error: cannot reach https://127.0.0.1:{port}: connection refused"


def test_unauthorised_and_forbidden_are_one_line(
    efctl: Efctl, api: RunningApi, tmp_path: Path,
) -> None:
    config = tmp_path / "stranger.yaml"
    write_efctl_config(config, api.url, api.ca_pem, "efu_not-a-token")
    line = one_error_line(efctl("get", "nodes", config=config))
    assert "invalid bearer token" in line

    viewer = tmp_path / "viewer.yaml"
    write_efctl_config(viewer, api.url, api.ca_pem, api.user("vic", Role.VIEWER))
    assert efctl("get", "devices", config=viewer).returncode == 0
    line = one_error_line(efctl("apply", "-f", str(write(tmp_path, "f.yaml", MANIFEST)),
                                config=viewer))
    assert "user 'vic' (viewer) may not update devicemodels" in line
    assert stored_devices(api) == []


def test_missing_config_is_one_line(efctl: Efctl, tmp_path: Path) -> None:
    line = one_error_line(efctl("get", "nodes", config=tmp_path / "nowhere.yaml"))
    assert "no efctl config at" in line


def test_tokens_and_users(efctl: Efctl, api: RunningApi) -> None:
    token = efctl("token", "create", "--ttl", "1h")
    assert token.returncode == 0, token.stderr
    assert token.stdout.count("\n") == 1 and token.stdout.count(".") == 2
    assert api.join_tokens.ca.ca_hash == token.stdout.split(".")[0]

    user = efctl("user", "create", "ci-bot", "--role", "operator")
    assert user.returncode == 0, user.stderr
    bearer = user.stdout.strip()
    assert bearer.startswith("efu_")
    with httpx.Client(base_url=api.url, verify=api.ssl_context(),
                      headers={"Authorization": f"Bearer {bearer}"}) as c:
        assert c.get(devices_path()).status_code == 200
    assert "already exists" in one_error_line(
        efctl("user", "create", "ci-bot", "--role", "viewer"))
    assert "ttl" in one_error_line(efctl("token", "create", "--ttl", "soon"))


def test_config_file_is_private_and_explicit_flag_wins(
    efctl: Efctl, api: RunningApi, tmp_path: Path,
) -> None:
    assert stat.S_IMODE(efctl.config.stat().st_mode) == 0o600
    loaded = load_efctl_config(efctl.config)
    assert loaded.server == api.url and loaded.token == api.admin_token
    assert loaded.certificateAuthorityData == api.ca_pem
    # --config beats $EFCTL_CONFIG (which points nowhere here).
    result = efctl("--config", str(efctl.config), "get", "nodes",
                   config=tmp_path / "nowhere.yaml")
    assert result.returncode == 0, result.stderr
