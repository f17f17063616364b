"""The fan-out benchmark: thousands of simulated edge nodes against one real cloudcore.

Phases (each with a deadline; every process and the temp dir are removed at the end):

1. keys and CSRs for N nodes (process pool), then cloudcore starts (temp data dir,
   loopback ports, default settings) and N real ``POST /join`` calls sign them;
2. baseline: a plain websockets server with the same certificate, TLS policy and
   websockets settings; the simulators connect all N nodes to it, it broadcasts a 1 KB
   frame to all of them a few times; its RSS per connection; then it is killed with
   SIGKILL and restarted (the reconnect storm baseline);
3. the simulators connect all N nodes to the hub (sync, heartbeats every 15 s) and hold
   them; cloudcore's RSS per connected node and CPU; every Node must be Ready=True;
4. one change per node: a Device addressed to each node, PUT through the API with
   bounded concurrency; latency from the PUT's start to the edge's ack;
5. one change to all nodes: the DeviceModel every node holds, updated a few times --
   the like-for-like comparison with the raw broadcast;
6. reconnect storm: a few updates and deletes, then cloudcore is killed with SIGKILL and
   started again on the same data dir and ports; time until every node has reconnected,
   finished its resync and holds exactly what the store says it should.

With two or more CPUs, cloudcore (and the baseline server) run pinned to CPU 0 and
everything else (this process, the simulators) to the other CPUs, so the server side
is measured on one core of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]
import yaml
from fanout_http import Pool
from fanout_ipc import Helper, open_log, pinned, tail
from fanout_join import NodeIdentity, join_all, make_keys
from fanout_report import Dist, median_dist, render

import protocol.kinds  # noqa: F401  (registers every kind)
from protocol.resources import REGISTRY, make_key

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
NS = "default"
MODEL = "bench-model"
MODEL_KEY = make_key("DeviceModel", NS, MODEL)
POLL = 0.2


class BenchError(RuntimeError):
    pass


@dataclass(frozen=True)
class Options:
    nodes: int
    sims: int
    hold: float
    inflight: int
    apply_concurrency: int
    broadcasts: int
    fanouts: int
    storm_deadline: float
    keep: bool
    json_out: Path | None


def parse_args(argv: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(
        prog="scripts/bench/fanout",
        description="Simulated edge nodes (real mTLS websockets, real certificates) against "
                    "one cloudcore: nodes held, RSS per node, apply->ack latency, reconnect "
                    "storm, with a raw websockets broadcast baseline in the same run.")
    p.add_argument("--nodes", type=int, default=None, help="simulated nodes (default 2000)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 200 nodes and a 20 s hold (unless given)")
    p.add_argument("--sims", type=int, default=1, help="simulator processes (default 1)")
    p.add_argument("--hold", type=float, default=None,
                   help="seconds to hold all nodes with heartbeats (default 45; must "
                        "exceed the 40 s grace period to show heartbeats keep nodes Ready)")
    p.add_argument("--apply-concurrency", type=int, default=32,
                   help="PUTs in flight during the per-node changes (default 32)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs) afterwards")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = p.parse_args(argv)
    nodes = a.nodes if a.nodes is not None else (200 if a.quick else 2000)
    hold = a.hold if a.hold is not None else (20.0 if a.quick else 45.0)
    if nodes < 1 or a.sims < 1 or a.sims > nodes:
        p.error("need --nodes >= 1 and 1 <= --sims <= --nodes")
    return Options(nodes=nodes, sims=a.sims, hold=hold, inflight=100,
                   apply_concurrency=a.apply_concurrency, broadcasts=5, fanouts=3,
                   storm_deadline=240.0, keep=a.keep, json_out=a.json)


def node_names(n: int) -> list[str]:
    return [f"bench-{i:05d}" for i in range(n)]


def device_name(node: str) -> str:
    return f"dev-{node}"


def device_key(node: str) -> str:
    return make_key("Device", NS, device_name(node))


def device(node: str, desired: str) -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
        "metadata": {"name": device_name(node), "namespace": NS},
        "spec": {
            "deviceModelRef": {"name": MODEL},
            "nodeName": node,
            "protocol": {"protocolName": "modbus",
                         "configData": {"ip": "192.168.1.20", "port": 502, "slaveID": 1}},
            "properties": [{"name": "temperature", "desired": {"value": desired},
                            "reportCycle": 10000, "collectCycle": 5000,
                            "reportToCloud": True}],
        },
    }


def device_model(revision: int) -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
        "metadata": {"name": MODEL, "namespace": NS},
        "spec": {"protocol": "modbus", "properties": [
            {"name": "temperature", "type": "INT", "accessMode": "ReadWrite",
             "unit": "Celsius", "description": f"revision {revision}"}]},
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(check: Callable[[], Awaitable[bool]], within: float, what: str,
                   every: float = POLL) -> float:
    """Poll ``check`` until true; returns the monotonic time it first was."""
    deadline = time.monotonic() + within
    while True:
        if await check():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {within:.0f} s waiting for {what}")
        await asyncio.sleep(every)


def count_lines(path: Path, text: str, since: int) -> int:
    """Lines of a log containing ``text``, written after byte offset ``since``."""
    with open(path, "rb") as fh:
        fh.seek(since)
        needle = text.encode()
        return sum(1 for line in fh if needle in line)


# ---- cloudcore -------------------------------------------------------------------------


class CloudProcess:
    def __init__(self, root: Path, cpus: set[int] | None) -> None:
        self.data = root / "cloud"
        self.log_path = root / "cloudcore.log"
        self.hub_port = free_port()
        self.api_port = free_port()
        self.cpus = cpus
        self.proc: asyncio.subprocess.Process | None = None
        self.ps: psutil.Process | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def hub_url(self) -> str:
        return f"wss://127.0.0.1:{self.hub_port}"

    @property
    def pki(self) -> Path:
        return self.data / "pki"

    def _efctl(self) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load((self.data / "efctl.yaml").read_text())
        return loaded

    def ca_pem(self) -> str:
        return str(self._efctl()["certificateAuthorityData"])

    def admin_token(self) -> str:
        return str(self._efctl()["token"])

    async def start(self, within: float = 60.0) -> float:
        """Spawn and wait until the API answers; returns that moment (monotonic)."""
        exe = BIN / "cloudcore"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "cloudcore.cli"]
        cmd += ["run", "--data-dir", str(self.data),
                "--hub-listen", f"127.0.0.1:{self.hub_port}",
                "--api-listen", f"127.0.0.1:{self.api_port}"]
        with open_log(self.log_path) as log:
            self.proc = await asyncio.create_subprocess_exec(
                *pinned(cmd, self.cpus), stdout=log, stderr=asyncio.subprocess.STDOUT)
        self.ps = psutil.Process(self.proc.pid)
        return await wait_for(self._healthy, within, f"cloudcore to serve (log {self.log_path})")

    async def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.returncode is not None:
            raise BenchError(f"cloudcore exited with {self.proc.returncode}:\n"
                             + tail(self.log_path))
        if not (self.data / "efctl.yaml").exists():
            return False
        ctx = ssl.create_default_context(cadata=self.ca_pem())
        try:
            async with httpx.AsyncClient(verify=ctx, timeout=2) as c:
                return (await c.get(f"{self.url}/healthz")).status_code == 200
        except httpx.HTTPError:
            return False

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_count(self, text: str, since: int) -> int:
        return count_lines(self.log_path, text, since)

    def rss(self) -> int:
        assert self.ps is not None
        return int(self.ps.memory_info().rss)

    def cpu_seconds(self) -> float:
        assert self.ps is not None
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    async def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    @contextlib.asynccontextmanager
    async def api(self, connections: int = 4) -> AsyncIterator[Pool]:
        """Admin connections to the API (see fanout_http for why not httpx)."""
        ctx = ssl.create_default_context(cadata=self.ca_pem())
        pool = await Pool.open("127.0.0.1", self.api_port, ctx, self.admin_token(), connections)
        try:
            yield pool
        finally:
            await pool.close()


class PeakRss:
    """Samples a process's RSS in the background; ``reset`` starts a new phase."""

    def __init__(self, sample: Callable[[], int]) -> None:
        self._sample = sample
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def reset(self) -> None:
        self.peak = 0

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(psutil.Error, AssertionError):
                self.peak = max(self.peak, self._sample())
            await asyncio.sleep(0.25)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class LoadMeter:
    """How busy the machine is with processes that are not part of this run.

    Every half second: the machine's user+system CPU time (from /proc/stat) minus the
    CPU time of this process and all its descendants.  Other work on a 2-CPU machine
    skews every figure here, so the report states how much there was.  Interrupt time
    (mostly the loopback network this run itself drives) is counted apart."""

    def __init__(self) -> None:
        self.me = psutil.Process()
        self._last_cpu: dict[int, float] = {}
        self.other = 0.0       # CPU-seconds used by other processes
        self.ours = 0.0        # CPU-seconds used by this run's processes
        self.irq = 0.0         # CPU-seconds in hard and soft interrupts
        self.wall = 0.0
        self.worst = 0.0       # busiest half second of other work, in CPUs
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def _times() -> tuple[float, float]:
        t = psutil.cpu_times()
        # On Linux "user" already includes guest time.
        busy = t.user + t.nice + t.system - getattr(t, "guest", 0.0)
        irq = getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
        return float(busy), float(irq)

    def _our_delta(self) -> float:
        delta = 0.0
        seen: dict[int, float] = {}
        for proc in [self.me, *self.me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                cpu = float(t.user + t.system)
                seen[proc.pid] = cpu
                delta += cpu - self._last_cpu.get(proc.pid, 0.0)
        self._last_cpu = seen
        return delta

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        (busy, irq), t = self._times(), time.monotonic()
        self._our_delta()
        while True:
            await asyncio.sleep(0.5)
            (busy2, irq2), t2 = self._times(), time.monotonic()
            ours = self._our_delta()
            other = max(0.0, (busy2 - busy) - ours)
            self.other += other
            self.ours += ours
            self.irq += irq2 - irq
            self.wall += t2 - t
            self.worst = max(self.worst, other / (t2 - t))
            busy, irq, t = busy2, irq2, t2

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


# ---- applying objects ------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    name: str      # the node the object is for (or the object's name)
    started: float
    returned: float
    rv: int


def object_path(obj: dict[str, Any]) -> str:
    info = REGISTRY.by_kind(obj["kind"])
    return info.object_path(obj["metadata"].get("namespace"), obj["metadata"]["name"])


async def put(api: Pool, obj: dict[str, Any]) -> tuple[float, float, int]:
    """PUT one object: (sent, answered, resourceVersion).  The clock starts once a
    connection is free, i.e. when the request is really sent."""
    async with api.conn() as conn:
        started = time.monotonic()
        status, body = await conn.request("PUT", object_path(obj), obj)
        returned = time.monotonic()
    if status not in (200, 201):
        raise BenchError(f"PUT {object_path(obj)}: {status} {body}")
    return started, returned, int(body["metadata"]["resourceVersion"])


async def put_all(api: Pool, objs: dict[str, dict[str, Any]]) -> dict[str, Applied]:
    """PUT every object, ``api.size`` in flight."""

    async def one(name: str, obj: dict[str, Any]) -> Applied:
        started, returned, rv = await put(api, obj)
        return Applied(name, started, returned, rv)

    done = await asyncio.gather(*(one(k, o) for k, o in objs.items()))
    return {a.name: a for a in done}


async def delete_all(api: Pool, nodes: Sequence[str]) -> dict[str, int]:
    info = REGISTRY.by_kind("Device")

    async def one(node: str) -> tuple[str, int]:
        status, body = await api.request("DELETE", info.object_path(NS, device_name(node)))
        if status != 200:
            raise BenchError(f"DELETE {device_name(node)}: {status} {body}")
        return node, int(body["metadata"]["resourceVersion"])

    return dict(await asyncio.gather(*(one(n) for n in nodes)))


async def list_items(api: Pool, kind: str) -> list[dict[str, Any]]:
    path = REGISTRY.by_kind(kind).collection_path(None)
    status, body = await api.request("GET", path)
    if status != 200:
        raise BenchError(f"GET {path}: {status} {body}")
    return list(body["items"])


def ready(node: dict[str, Any]) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


# ---- the simulators as one -------------------------------------------------------------


class Fleet:
    """All simulator processes, addressed together."""

    def __init__(self, sims: list[Helper], names: list[set[str]], root: Path) -> None:
        self.sims = sims
        self.names = names  # the nodes each simulator runs
        self.root = root
        self._dumps = 0

    async def call_all(self, cmd: str, **args: Any) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(s.call(cmd, **args) for s in self.sims)))

    async def status(self) -> dict[str, Any]:
        parts = await self.call_all("status")
        total: dict[str, Any] = {k: sum(p[k] for p in parts) for k in (
            "nodes", "connected", "synced", "sessions", "drops", "connect_failures",
            "heartbeats", "errors", "resynced", "cpu_seconds")}
        ups = [p["up"] for p in parts if p["up"]]
        total["up"] = [min(u[0] for u in ups), max(u[1] for u in ups)] if ups else None
        for key in ("last_resynced_at", "last_session_at"):
            lasts = [p[key] for p in parts if p[key] is not None]
            total[key] = max(lasts) if lasts else None
        return total

    async def holding(self, key: str, rv: int) -> int:
        return sum(p["count"] for p in await self.call_all("holding", key=key, rv=rv))

    async def want(self, wanted: dict[str, dict[str, int]]) -> None:
        """Tell each simulator which versions its nodes should come to hold."""
        await asyncio.gather(*(sim.call("want", wanted={
            name: w for name, w in wanted.items() if name in names})
            for sim, names in zip(self.sims, self.names, strict=True)))

    async def wanted_count(self) -> int:
        return sum(p["count"] for p in await self.call_all("wanted_count"))

    async def expect(self, since: float, holdings: dict[str, dict[str, int]]) -> None:
        await asyncio.gather(*(sim.call("expect", since=since, holdings={
            name: h for name, h in holdings.items() if name in names})
            for sim, names in zip(self.sims, self.names, strict=True)))

    async def dump(self) -> dict[str, Any]:
        """Everything the simulators recorded, merged; then their records are cleared."""
        self._dumps += 1
        paths = [self.root / f"dump-{self._dumps}-{i}.json" for i in range(len(self.sims))]
        await asyncio.gather(*(s.call("dump", path=str(p)) for s, p in zip(
            self.sims, paths, strict=True)))
        await self.call_all("clear")
        merged: dict[str, Any] = {"records": [], "raw": [], "holdings": {}, "resynced_at": {}}
        for p in paths:
            part = json.loads(p.read_text())
            p.unlink()
            merged["records"] += part["records"]
            merged["raw"] += part["raw"]
            for k in ("holdings", "resynced_at"):
                merged[k].update(part[k])
        return merged


# ---- the benchmark ---------------------------------------------------------------------


class Bench:
    def __init__(self, opts: Options, root: Path) -> None:
        self.o = opts
        self.root = root
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2:
            self.server_cpus: set[int] | None = {cpus[0]}
            self.client_cpus: set[int] | None = set(cpus[1:])
            self.layout = (f"cloudcore and the raw server pinned to CPU {cpus[0]}, simulators "
                           f"and this process to CPU {','.join(map(str, cpus[1:]))}")
        else:
            self.server_cpus = self.client_cpus = None
            self.layout = "one CPU: servers and simulators share it"
        self.cloud = CloudProcess(root, self.server_cpus)
        self.names = node_names(opts.nodes)
        self.idents: list[NodeIdentity] = []
        self.fleet: Fleet | None = None
        self.raw: Helper | None = None
        self.results: dict[str, Any] = {
            "nodes": opts.nodes, "layout": self.layout,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": f"{platform.system()} {platform.release()} "
                                    f"{platform.machine()}"},
            "edgefleet": {}, "raw": {}, "storm": {},
        }
        self.device_rv: dict[str, int] = {}
        self.model_rv = 0
        self.load = LoadMeter()
        self._client_procs: list[psutil.Process] = [psutil.Process()]

    def say(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    # ---- who used the CPUs during a phase -----------------------------------------------

    def _client_cpu(self) -> float:
        total = 0.0
        for proc in self._client_procs:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
        return total

    def mark(self) -> tuple[float, float, float, float]:
        return time.monotonic(), self.cloud.cpu_seconds(), self._client_cpu(), self.load.other

    def usage(self, since: tuple[float, float, float, float],
              cloud_from: float | None = None) -> dict[str, float]:
        """CPUs used since ``since`` (CPU-seconds per second) by cloudcore, by the
        clients (this process and the simulators) and by everything else."""
        t, cloud, clients, other = since
        wall = max(1e-6, time.monotonic() - t)
        return {
            "seconds": wall,
            "cloud_cpus": (self.cloud.cpu_seconds() - (cloud if cloud_from is None
                                                       else cloud_from)) / wall,
            "client_cpus": (self._client_cpu() - clients) / wall,
            "other_cpus": (self.load.other - other) / wall,
        }

    def say_usage(self, u: dict[str, float]) -> None:
        self.say(f"  CPUs used: cloudcore {u['cloud_cpus']:.2f}, clients {u['client_cpus']:.2f}, "
                 f"other processes {u['other_cpus']:.2f} (over {u['seconds']:.1f} s)")

    # ---- set-up -------------------------------------------------------------------------

    async def setup(self) -> None:
        o = self.o
        self.say(f"generating {o.nodes:,} EC keys and CSRs")
        keys = await asyncio.to_thread(make_keys, self.names, os.cpu_count() or 1)
        if self.client_cpus:
            os.sched_setaffinity(0, self.client_cpus)
        self.say(f"starting cloudcore (log {self.cloud.log_path})")
        await self.cloud.start()
        await asyncio.sleep(2)  # let start-up garbage settle before the idle figure
        e = self.results["edgefleet"]
        e["rss_idle"] = self.cloud.rss()
        async with self.cloud.api(1) as api:
            status, body = await api.request("POST", "/auth/jointokens", {"ttl": "2h"})
            if status != 201:
                raise BenchError(f"POST /auth/jointokens: {status} {body}")
            token = body["token"]
        self.say(f"joining {o.nodes:,} nodes through POST /join")
        (self.root / "nodes").mkdir()
        self.idents, e["join_rate"] = await join_all(
            self.cloud.api_port, self.cloud.ca_pem(), token, self.names, keys, self.root / "nodes")
        e["rss_joined"] = self.cloud.rss()
        self.say(f"  {e['join_rate']:,.0f} joins/s; cloudcore RSS {e['rss_idle'] / 2**20:.1f} MB "
                 f"idle, {e['rss_joined'] / 2**20:.1f} MB with {o.nodes:,} Nodes stored")
        sims: list[Helper] = []
        names: list[set[str]] = []
        for i in range(o.sims):
            mine = self.idents[i::o.sims]
            names.append({n.name for n in mine})
            nodes_file = self.root / f"sim-{i}-nodes.json"
            nodes_file.write_text(json.dumps([
                {"idx": n.idx, "name": n.name, "cert": str(n.cert), "key": str(n.key)}
                for n in mine]))
            sims.append(await Helper.start(
                f"simulator {i}", [sys.executable, str(HERE / "fanout_sim.py"),
                                   str(nodes_file), str(self.cloud.pki / "ca.crt")],
                self.root / f"sim-{i}.log", cpus=self.client_cpus))
        self.fleet = Fleet(sims, names, self.root)
        self._client_procs += [psutil.Process(sim.pid) for sim in sims]

    # ---- connecting ---------------------------------------------------------------------

    async def connect_all(self, url: str, mode: str) -> float:
        """Connect every node; returns connections per second (to connected, or for
        ``edge`` to synced)."""
        fleet = self.fleet
        assert fleet is not None
        n = self.o.nodes
        started = time.monotonic()
        await fleet.call_all("connect", url=url, mode=mode, inflight=self.o.inflight)
        key = "synced" if mode == "edge" else "connected"

        async def all_up() -> bool:
            return bool((await fleet.status())[key] == n)

        await wait_for(all_up, 60 + n / 20, f"all {n:,} nodes to connect ({mode})")
        st = await fleet.status()
        last = st["up"][1] if st["up"] else time.monotonic()
        return n / max(1e-3, last - started)

    # ---- phase 2: raw websockets baseline ----------------------------------------------

    async def baseline(self) -> None:
        fleet = self.fleet
        assert fleet is not None
        n = self.o.nodes
        port = free_port()
        pki = self.cloud.pki
        self.say("baseline: raw websockets mTLS server")
        self.raw = raw = await Helper.start(
            "raw server", [sys.executable, str(HERE / "fanout_raw.py"), str(port),
                           str(pki / "server.crt"), str(pki / "server.key"),
                           str(pki / "ca.crt")],
            self.root / "raw.log", cpus=self.server_cpus)
        raw_ps = psutil.Process(raw.pid)
        await asyncio.sleep(1)
        b = self.results["raw"]
        b["rss_idle"] = raw_ps.memory_info().rss
        b["connect_rate"] = await self.connect_all(f"wss://127.0.0.1:{port}", "raw")
        await asyncio.sleep(2)
        b["rss_connected"] = raw_ps.memory_info().rss
        b["rss_per_node"] = (b["rss_connected"] - b["rss_idle"]) / n
        sent: dict[int, float] = {}
        for i in range(self.o.broadcasts):
            reply = await raw.call("broadcast", id=i)
            if reply["to"] != n:
                raise BenchError(f"raw server has {reply['to']} connections, expected {n}")
            sent[i] = reply["sent"]
            await asyncio.sleep(1.0)
        dump = await fleet.dump()
        rounds = []
        for i, t0 in sent.items():
            lat = [t - t0 for _, mid, t in dump["raw"] if mid == i]
            if len(lat) != n:
                raise BenchError(f"raw broadcast {i}: {len(lat)} of {n} received")
            rounds.append(Dist.of(lat))
        b["rounds"] = len(rounds)
        b["broadcast"] = median_dist(rounds).as_dict()
        b["broadcast_rounds"] = [d.as_dict() for d in rounds]
        self.say(f"  {b['connect_rate']:,.0f} conn/s; RSS {b['rss_per_node'] / 1024:.1f} KB/conn; "
                 f"broadcast {median_dist(rounds).ms()} ms")
        await self.raw_storm(port)
        await fleet.call_all("disconnect")
        await self.raw.stop()
        self.raw = None

    async def raw_storm(self, port: int) -> None:
        """The same reconnect storm against the raw server: kill -9, start it again on
        the same port, time until every node is connected again (same simulators, same
        backoff).  What is left of the hub's storm time beyond this is the hub's own."""
        fleet, raw = self.fleet, self.raw
        assert fleet is not None and raw is not None
        n = self.o.nodes
        b = self.results["raw"]
        pki = self.cloud.pki
        log = self.root / "raw.log"
        log_at = log.stat().st_size
        pre = await fleet.status()
        self.say("  raw server: kill -9 and restart (reconnect storm baseline)")
        killed = time.monotonic()
        raw.kill()
        await raw.proc.wait()
        self.raw = raw = await Helper.start(
            "raw server", [sys.executable, str(HERE / "fanout_raw.py"), str(port),
                           str(pki / "server.crt"), str(pki / "server.key"),
                           str(pki / "ca.crt")],
            log, cpus=self.server_cpus)
        b["storm_restart_s"] = time.monotonic() - killed

        async def all_back() -> bool:
            st = await fleet.status()
            return bool(st["connected"] == n and st["sessions"] - pre["sessions"] >= n)

        try:
            await wait_for(all_back, self.o.storm_deadline, "every node back on the raw server")
        except BenchError as exc:
            self.say(f"  {exc}")
        post = await fleet.status()
        b["storm_reconnected"] = post["connected"]
        b["storm_s"] = (post["last_session_at"] or math.nan) - killed
        b["storm_failures"] = post["connect_failures"] - pre["connect_failures"]
        b["storm_sessions"] = (await raw.call("count"))["sessions"]
        b["storm_handshake_failures"] = count_lines(log, "opening handshake failed", log_at)
        self.say(f"  all {b['storm_reconnected']:,} back {b['storm_s']:.1f} s after the kill "
                 f"({b['storm_sessions']:,} sessions, {b['storm_failures']:,} failed attempts)")

    # ---- phase 3: hold N nodes ---------------------------------------------------------

    async def hold(self) -> None:
        fleet = self.fleet
        assert fleet is not None
        n = self.o.nodes
        e = self.results["edgefleet"]
        self.say(f"connecting {n:,} nodes to the hub")
        e["connect_rate"] = await self.connect_all(self.cloud.hub_url, "edge")
        self.say(f"  {e['connect_rate']:,.0f} conn/s to synced; waiting for every Node Ready")

        async with self.cloud.api() as api:
            async def all_ready() -> bool:
                return sum(map(ready, await list_items(api, "Node"))) == n

            # Listing every Node costs the cloud real work: poll gently.
            await wait_for(all_ready, 120, "every Node to be Ready=True", every=2.0)
            before = await fleet.status()
            since = self.mark()
            self.say(f"holding {n:,} nodes for {self.o.hold:.0f} s")
            await asyncio.sleep(self.o.hold)
            e["hold_usage"] = usage = self.usage(since)
            e["hold_cpu_pct"] = 100 * usage["cloud_cpus"]
            e["rss_connected"] = self.cloud.rss()
            after = await fleet.status()
            e["ready"] = sum(map(ready, await list_items(api, "Node")))
        e["held"] = after["synced"]
        e["hold_seconds"] = self.o.hold
        e["hold_drops"] = after["drops"] - before["drops"]
        e["hold_heartbeats"] = after["heartbeats"] - before["heartbeats"]
        e["rss_per_node"] = (e["rss_connected"] - e["rss_idle"]) / n
        self.say(f"  held {e['held']:,}, {e['hold_drops']} drops, {e['ready']:,} Ready, "
                 f"{e['hold_heartbeats']:,} heartbeats; RSS {e['rss_connected'] / 2**20:.1f} MB "
                 f"= {e['rss_per_node'] / 1024:.1f} KB/node")
        self.say_usage(e["hold_usage"])

    # ---- phase 4 and 5: changes ----------------------------------------------------------

    async def changes(self) -> None:
        fleet = self.fleet
        assert fleet is not None
        n = self.o.nodes
        e = self.results["edgefleet"]
        async with self.cloud.api(self.o.apply_concurrency) as api:
            _, _, self.model_rv = await put(api, device_model(0))
            await fleet.dump()  # start clean
            self.say(f"one change per node: {n:,} Device PUTs, "
                     f"{self.o.apply_concurrency} in flight")
            since = self.mark()
            applied = await put_all(api, {node: device(node, "20") for node in self.names})
            self.device_rv = {node: a.rv for node, a in applied.items()}
            await fleet.want({node: {device_key(node): rv}
                              for node, rv in self.device_rv.items()})

            async def all_acked() -> bool:
                return await fleet.wanted_count() == n

            await wait_for(all_acked, 60 + n / 20, "every node to hold its Device")
            e["per_node_usage"] = self.usage(since)
            dump = await fleet.dump()
            first: dict[tuple[str, int], tuple[float, float]] = {}
            for idx, op, key, rv, recv, ack in dump["records"]:
                if op == "u" and key.startswith("Device/"):
                    k = (self.names[idx], rv)
                    if k not in first or recv < first[k][0]:
                        first[k] = (recv, ack)
            to_ack, to_recv = [], []
            for node, a in applied.items():
                got = first.get((node, a.rv))
                if got is not None:
                    to_ack.append(got[1] - a.started)
                    to_recv.append(got[0] - a.returned)
            starts = [a.started for a in applied.values()]
            last_ack = max(first.values(), key=lambda v: v[1])[1]
            e["per_node_ack"] = Dist.of(to_ack).as_dict()
            e["per_node_recv"] = Dist.of(to_recv).as_dict()
            e["per_node_rate"] = n / (last_ack - min(starts))
            e["apply_concurrency"] = self.o.apply_concurrency
            self.say(f"  PUT start -> edge ack {Dist.of(to_ack).ms()} ms; "
                     f"{e['per_node_rate']:,.0f} changes/s")
            self.say_usage(e["per_node_usage"])

            rounds_ack, rounds_recv = [], []
            for i in range(1, self.o.fanouts + 1):
                await asyncio.sleep(1.0)
                started, _, rv = await put(api, device_model(i))
                self.model_rv = rv

                async def all_have_model(rv: int = rv) -> bool:
                    return await fleet.holding(MODEL_KEY, rv) == n

                await wait_for(all_have_model, 60 + n / 50, f"every node to hold model rv {rv}")
                dump = await fleet.dump()
                seen: dict[int, tuple[float, float]] = {}
                for idx, op, key, r_rv, recv, ack in dump["records"]:
                    if op == "u" and key == MODEL_KEY and r_rv == rv and idx not in seen:
                        seen[idx] = (recv, ack)
                rounds_recv.append(Dist.of([v[0] - started for v in seen.values()]))
                rounds_ack.append(Dist.of([v[1] - started for v in seen.values()]))
            e["fanout_rounds"] = self.o.fanouts
            e["fanout"] = median_dist(rounds_ack).as_dict()
            e["fanout_recv"] = median_dist(rounds_recv).as_dict()
            e["fanout_rounds_ack"] = [d.as_dict() for d in rounds_ack]
            e["rss_after_changes"] = self.cloud.rss()
            self.say(f"  one change to all: PUT start -> edge receive "
                     f"{median_dist(rounds_recv).ms()} ms, -> ack {median_dist(rounds_ack).ms()}")

    # ---- phase 6: reconnect storm ------------------------------------------------------

    async def storm(self) -> None:
        fleet = self.fleet
        assert fleet is not None
        n = self.o.nodes
        s = self.results["storm"]
        k_upd = max(5, n // 40)
        k_del = max(2, n // 200)
        upd_nodes = self.names[:k_upd]
        del_nodes = self.names[k_upd:k_upd + k_del]
        self.say(f"reconnect storm: {k_upd} updates and {k_del} deletes, then kill -9")
        async with self.cloud.api(self.o.apply_concurrency) as api:
            applied = await put_all(api, {node: device(node, "21") for node in upd_nodes})
            deleted = await delete_all(api, del_nodes)
        expected: dict[str, dict[str, int]] = {}
        for node in self.names:
            if node in deleted:
                expected[node] = {}
            else:
                rv = applied[node].rv if node in applied else self.device_rv[node]
                expected[node] = {device_key(node): rv, MODEL_KEY: self.model_rv}
        pre = await fleet.status()
        since = self.mark()
        log_at = self.cloud.log_size()
        killed = time.monotonic()
        await self.cloud.kill9()
        await fleet.expect(killed, expected)
        peak = PeakRss(self.cloud.rss)
        serving = await self.cloud.start()
        peak.start()
        s["restart_s"] = serving - killed
        self.say(f"  cloudcore serving again after {s['restart_s']:.1f} s")

        async def all_resynced() -> bool:
            return bool((await fleet.status())["resynced"] == n)

        try:
            await wait_for(all_resynced, self.o.storm_deadline, "every node to resync")
        except BenchError as exc:
            self.say(f"  {exc}")
        post = await fleet.status()
        s["usage"] = self.usage(since, cloud_from=0.0)
        await peak.stop()
        s["resynced"] = post["resynced"]
        s["resynced_s"] = (post["last_resynced_at"] or math.nan) - killed
        s["reconnect_failures"] = post["connect_failures"] - pre["connect_failures"]
        s["client_sessions"] = post["sessions"] - pre["sessions"]
        # Sessions the hub opened, and websocket handshakes it failed (mostly clients
        # that had given up waiting): work done for connections nobody kept.
        s["hub_sessions"] = self.cloud.log_count("connected from", log_at)
        s["hub_handshake_failures"] = self.cloud.log_count("opening handshake failed", log_at)
        s["rss_peak"] = peak.peak
        s["rss_after"] = self.cloud.rss()
        s["updates"], s["deletes"] = k_upd, k_del
        dump = await fleet.dump()
        per_node = [t - killed for t in dump["resynced_at"].values() if t is not None]
        s["per_node"] = Dist.of(per_node).as_dict()
        s["lost"] = sum(1 for node in self.names if dump["holdings"].get(node) != expected[node])
        # The store itself must hold every write that was acknowledged before the kill.
        async with self.cloud.api() as api:
            store: dict[str, dict[str, int]] = {node: {} for node in self.names}
            models = {d["metadata"]["name"]: int(d["metadata"]["resourceVersion"])
                      for d in await list_items(api, "DeviceModel")}
            for d in await list_items(api, "Device"):
                node = d["spec"]["nodeName"]
                store[node] = {device_key(node): int(d["metadata"]["resourceVersion"]),
                               MODEL_KEY: models[MODEL]}
        s["store_mismatch"] = sum(1 for node in self.names if store[node] != expected[node])
        self.say(f"  {s['resynced']:,}/{n:,} resynced {s['resynced_s']:.1f} s after the kill; "
                 f"{s['lost']} lost; store mismatches {s['store_mismatch']}")
        self.say_usage(s["usage"])

    # ---- everything ---------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        self.load.start()
        await self.setup()
        await self.baseline()
        await self.hold()
        await self.changes()
        await self.storm()
        await self.load.stop()
        wall = max(1e-6, self.load.wall)
        self.results["other_load"] = {"mean_cpus": self.load.other / wall,
                                      "worst_cpus": self.load.worst,
                                      "ours_cpus": self.load.ours / wall,
                                      "irq_cpus": self.load.irq / wall}
        return self.results

    async def cleanup(self) -> None:
        await self.load.stop()
        if self.fleet is not None:
            await asyncio.gather(*(s.stop() for s in self.fleet.sims), return_exceptions=True)
        if self.raw is not None:
            await self.raw.stop()
        await self.cloud.stop()


def raise_fd_limit(needed: int) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise BenchError(f"{needed} file descriptors needed, the hard limit is {hard} "
                         "(raise it with ulimit -Hn)")
    # Inherited by cloudcore and the helpers: each holds up to N sockets.
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def amain(opts: Options) -> int:
    raise_fd_limit(opts.nodes + 1024)
    root = Path(tempfile.mkdtemp(prefix="edgefleet-fanout-"))
    bench = Bench(opts, root)
    started = time.monotonic()
    try:
        results = await bench.run()
        results["wall_seconds"] = time.monotonic() - started
        print()
        print(render(results))
        if opts.json_out is not None:
            opts.json_out.write_text(json.dumps(results, indent=2))
        return 0
    finally:
        await bench.cleanup()
        if opts.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return asyncio.run(amain(opts))
    except BenchError as exc:
        print(f"fanout: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
