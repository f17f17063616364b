"""Real processes on 127.0.0.1 for integration and system tests.

``Cloud`` runs ``cloudcore run`` and ``Edge`` runs ``edgecore join``/``edgecore run`` as
subprocesses with their own data directories, log files and free ports; tests talk to
them over the real API (HTTPS, bearer token), the real link (mTLS websockets) and the
edge's metaserver.  Nothing here sleeps to synchronise: :func:`wait_until` polls a
condition against a deadline.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

import protocol.kinds  # noqa: F401  (registers every kind)
from protocol.resources import REGISTRY

T = TypeVar("T")
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], T], timeout: float = 20.0, interval: float = 0.05,
               what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # the thing we wait for may not answer yet
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f" (last error: {last_exc!r})" if last_exc else ""))


def dump_stacks_and_kill(proc: subprocess.Popen[bytes]) -> None:
    """Ask a hung process for its stacks (faulthandler on SIGUSR1), then kill it."""
    proc.send_signal(signal.SIGUSR1)
    try:
        proc.wait(1)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def command(name: str) -> list[str]:
    exe = BIN / name
    if exe.exists():
        return [str(exe)]
    module = {"cloudcore": "cloudcore.cli", "edgecore": "edgecore.cli", "efctl": "efctl.cli"}
    return [sys.executable, "-m", module[name]]


class Cloud:
    def __init__(self, root: Path, *, settings: dict[str, Any] | None = None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.dir = root / "cloud"
        self.hub_port = free_port()
        self.api_port = free_port()
        self.log_path = root / "cloud.log"
        self.config_path = root / "cloud-config.yaml"
        self.config_path.write_text(yaml.safe_dump(settings or {}))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def efctl_config(self) -> Path:
        return self.dir / "efctl.yaml"

    def start(self) -> Cloud:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*command("cloudcore"), "run", "--data-dir", str(self.dir),
             "--hub-listen", f"127.0.0.1:{self.hub_port}",
             "--api-listen", f"127.0.0.1:{self.api_port}",
             "--config", str(self.config_path), "--log-level", "debug"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        wait_until(self._healthy, 30, what=f"cloudcore healthy (log {self.log_path})")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"cloudcore exited {self.proc.returncode}:\n{self.log()}")
        if not self.efctl_config.exists():
            return False
        with self.api() as client:
            return bool(client.get("/healthz").status_code == 200)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def admin_token(self) -> str:
        return str(yaml.safe_load(self.efctl_config.read_text())["token"])

    def ca_pem(self) -> str:
        return str(yaml.safe_load(self.efctl_config.read_text())["certificateAuthorityData"])

    def api(self, token: str | None = None) -> httpx.Client:
        import ssl

        ctx = ssl.create_default_context(cadata=self.ca_pem())
        headers = {"Authorization": f"Bearer {token or self.admin_token()}"}
        return httpx.Client(base_url=self.url, verify=ctx, headers=headers, timeout=10)

    def join_token(self, ttl: str = "1h") -> str:
        with self.api() as c:
            r = c.post("/auth/jointokens", json={"ttl": ttl})
            r.raise_for_status()
            return str(r.json()["token"])

    def apply(self, obj: dict[str, Any], token: str | None = None) -> httpx.Response:
        info = REGISTRY.by_kind(obj["kind"])
        meta = obj["metadata"]
        path = info.object_path(meta.get("namespace", "default") if info.namespaced else None,
                                meta["name"])
        with self.api(token) as c:
            return c.put(path, json=obj)

    def delete(self, kind: str, name: str, namespace: str | None = "default") -> httpx.Response:
        info = REGISTRY.by_kind(kind)
        with self.api() as c:
            return c.delete(info.object_path(namespace if info.namespaced else None, name))

    def get(self, kind: str, name: str, namespace: str | None = "default") -> dict[str, Any]:
        info = REGISTRY.by_kind(kind)
        with self.api() as c:
            r = c.get(info.object_path(namespace if info.namespaced else None, name))
            r.raise_for_status()
            return dict(r.json())

    def list(self, kind: str) -> list[dict[str, Any]]:
        info = REGISTRY.by_kind(kind)
        with self.api() as c:
            r = c.get(info.collection_path(None))
            r.raise_for_status()
            return list(r.json()["items"])

    def store_rv(self) -> int:
        with self.api() as c:
            r = c.get("/api/v1/nodes")
            r.raise_for_status()
            return int(r.json()["metadata"]["resourceVersion"])

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            dump_stacks_and_kill(self.proc)
            raise AssertionError(
                f"cloudcore did not stop on SIGTERM; its stacks:\n{self.log()[-8000:]}") from None


FAST_LINK = {"heartbeatSeconds": 1.0, "reconnectBaseSeconds": 0.2, "reconnectCapSeconds": 1.0,
             "ackTimeoutSeconds": 2.0}


class Edge:
    def __init__(self, root: Path, name: str, cloud: Cloud, *,
                 link: dict[str, Any] | None = None) -> None:
        self.name = name
        self.cloud = cloud
        self.dir = root / name
        self.log_path = root / f"{name}.log"
        self.meta_port = free_port()
        self.mqtt_port = free_port()
        self.mqtt_url: str | None = None  # set to use an external broker
        self.run_args: list[str] = []  # more `edgecore run` flags (e.g. --servicebus)
        self.link = {**FAST_LINK, **(link or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def join(self, token: str, labels: str | None = None) -> subprocess.CompletedProcess[str]:
        args = [*command("edgecore"), "join", "--server", self.cloud.url, "--token", token,
                "--node-name", self.name, "--data-dir", str(self.dir)]
        if labels:
            args += ["--labels", labels]
        result = subprocess.run(args, capture_output=True, text=True, timeout=60)
        if result.returncode == 0:
            cfg_path = self.dir / "edgecore.yaml"
            cfg = yaml.safe_load(cfg_path.read_text())
            cfg["link"].update(self.link)
            cfg_path.write_text(yaml.safe_dump(cfg))
        return result

    def start(self, *, wait_connected: bool = True) -> Edge:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*command("edgecore"), "run", "--data-dir", str(self.dir),
             "--metaserver", f"127.0.0.1:{self.meta_port}", "--log-level", "debug",
             *(["--mqtt", "external", "--mqtt-url", self.mqtt_url] if self.mqtt_url
               else ["--mqtt-listen", f"127.0.0.1:{self.mqtt_port}"]), *self.run_args],
            stdout=log, stderr=subprocess.STDOUT,
        )
        wait_until(self._serving, 20, what=f"edgecore {self.name} metaserver")
        if wait_connected:
            self.wait_synced()
        return self

    def _serving(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"edgecore exited {self.proc.returncode}:\n{self.log()}")
        return httpx.get(f"{self.meta_url}/healthz", timeout=2).status_code == 200

    def wait_synced(self, after: int = 0) -> None:
        """Wait for the (after+1)-th completed resync in this edge's log."""
        wait_until(lambda: self.log().count("resync with the cloud") > after, 30,
                   what=f"{self.name} resync")

    @property
    def meta_url(self) -> str:
        return f"http://127.0.0.1:{self.meta_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cached(self, kind: str) -> list[dict[str, Any]]:
        info = REGISTRY.by_kind(kind)
        r = httpx.get(self.meta_url + info.collection_path(None), timeout=5)
        r.raise_for_status()
        return list(r.json()["items"])

    def cached_one(self, kind: str, name: str, namespace: str = "default") -> dict[str, Any] | None:
        info = REGISTRY.by_kind(kind)
        r = httpx.get(self.meta_url + info.object_path(namespace, name), timeout=5)
        return dict(r.json()) if r.status_code == 200 else None

    def applied(self) -> Iterator[tuple[str, str, int]]:
        """(op, key, rv) of every change this edge's cache applied, from its DEBUG log."""
        for line in self.log().splitlines():
            if "edgecore.meta: applied " in line:
                _, _, rest = line.partition("edgecore.meta: applied ")
                op, key, rv = rest.split()
                yield op, key, int(rv.removeprefix("rv="))

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGCONT)
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            dump_stacks_and_kill(self.proc)
            raise AssertionError(f"edgecore {self.name} did not stop on SIGTERM; its stacks:\n"
                                 f"{self.log()[-8000:]}") from None


def device_model(name: str = "temp-model", ns: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"protocol": "modbus", "properties": [
            {"name": "temperature", "type": "INT", "accessMode": "ReadWrite"}]},
    }


def device(name: str, node: str | None, *, desired: str = "30", model: str = "temp-model",
           ns: str = "default") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "deviceModelRef": {"name": model},
        "protocol": {"protocolName": "modbus",
                     "configData": {"ip": "127.0.0.1", "port": 5020, "slaveID": 1}},
        "properties": [{"name": "temperature", "desired": {"value": desired},
                        "reportCycle": 1000, "collectCycle": 1000, "reportToCloud": True}],
    }
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def reported(cloud: Cloud, device: str, prop: str, namespace: str = "default") -> str | None:
    """The value the cloud's Device ``device`` holds as reported for ``prop``, if any."""
    status = cloud.get("Device", device, namespace).get("status") or {}
    for twin in status.get("twins") or []:
        if twin["propertyName"] == prop:
            return (twin.get("reported") or {}).get("value")
    return None


def reported_at(cloud: Cloud, device: str, prop: str, namespace: str = "default") -> int:
    """When the value the cloud holds as reported for ``prop`` was read at the edge
    (ms since the epoch), 0 if there is none yet."""
    status = cloud.get("Device", device, namespace).get("status") or {}
    for twin in status.get("twins") or []:
        if twin["propertyName"] == prop and twin.get("reported"):
            return int(twin["reported"]["metadata"]["timestamp"])
    return 0


def holding_register(port: int, address: int = 0) -> int:
    """Read one holding register of the Modbus/TCP device on 127.0.0.1:``port``."""
    from pymodbus.client import AsyncModbusTcpClient  # only the Modbus tests need it

    async def read() -> int:
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2)
        await client.connect()
        try:
            reply = await client.read_holding_registers(address, count=1, device_id=1)
            return int(reply.registers[0])
        finally:
            client.close()
    return asyncio.run(read())


def node_ready(cloud: Cloud, name: str) -> str | None:
    node = cloud.get("Node", name, None)
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond["type"] == "Ready":
            return str(cond["status"])
    return None


def strip_volatile(objs: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(o, sort_keys=True) for o in objs)


def kubeedge_crds_dir() -> Path:
    """shared/reference/kubeedge-crds: beside the checkout (as CI lays it out), else the
    workspace's copy.  Missing only outside this workspace."""
    beside = Path(__file__).resolve().parents[2] / "shared" / "reference" / "kubeedge-crds"
    return beside if beside.exists() else Path("/work/shared/reference/kubeedge-crds")
