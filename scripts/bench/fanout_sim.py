"""Simulated edge nodes for the fan-out benchmark (one process, many nodes).

Every node has its own key and certificate (issued by a real ``POST /join``) and opens
its own mutual-TLS websocket.  In ``edge`` mode a node behaves like edgecore's link
client, minus everything behind it (no sqlite cache, no outbox, no mappers):

* on each connect it sends ``sync`` with what it holds (an in-memory key -> rv map);
* it records every ``upsert``/``delete`` (receive time, ack time), applies it to the
  map under edgecore's rule (an older version is acknowledged but not applied) and
  answers it with ``ack``;
* it sends a heartbeat with a small but complete NodeStatus on connect and then every
  ``heartbeat`` seconds (+-10 % jitter, so nodes do not fall into step);
* when the link drops it reconnects with edgecore's backoff (same function, same
  defaults).

In ``raw`` mode a node only connects and records when each broadcast message arrived:
the baseline against a plain websockets server.

Run by the benchmark: ``python fanout_sim.py NODES.json CA.crt``; commands on stdin
(see fanout_ipc).  Stamps are ``time.monotonic()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fanout_ipc import answer, command_lines
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from certs.tls import client_context
from cloudcore.hub import shrink_tls_read_buffers
from protocol import envelope as wire
from protocol.backoff import reconnect_delay
from protocol.envelope import Op
from protocol.resources import make_key

log = logging.getLogger("fanout.sim")

MAX_FRAME = 4 * 1_048_576  # what edgecore allows (4 x link.maxFrameBytes)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Node:
    idx: int
    name: str
    ctx: ssl.SSLContext
    holdings: dict[str, int] = field(default_factory=dict)
    ws: ClientConnection | None = None
    connected: bool = False
    synced: bool = False
    sessions: int = 0
    session_started: float = 0.0
    up_at: float | None = None  # first connected (raw) or synced (edge) since ``connect``
    resynced_at: float | None = None  # set once an ``expect`` is met (see Sim.expect)


@dataclass
class Settings:
    url: str = ""
    mode: str = "edge"
    heartbeat: float = 15.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    open_timeout: float = 10.0


class Sim:
    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes
        self.by_name = {n.name: n for n in nodes}
        self.settings = Settings()
        self.tasks: list[asyncio.Task[None]] = []
        self.stopping = False
        # (node idx, op, key, rv, received, acked) for every upsert/delete
        self.records: list[tuple[int, str, str, int, float, float]] = []
        # (node idx, message id, received) for every raw broadcast message
        self.raw: list[tuple[int, int, float]] = []
        self.drops = 0
        self.connect_failures = 0
        self.heartbeats = 0
        self.errors = 0
        self.expected: dict[str, dict[str, int]] | None = None
        self.wanted: dict[str, dict[str, int]] = {}
        self.expect_since = 0.0
        self.cpu_start = time.process_time()

    # ---- commands ------------------------------------------------------------------

    def start(self, args: dict[str, Any]) -> None:
        self.settings = Settings(
            url=args["url"], mode=args.get("mode", "edge"),
            heartbeat=float(args.get("heartbeat", 15.0)),
            backoff_base=float(args.get("backoff_base", 0.5)),
            backoff_cap=float(args.get("backoff_cap", 30.0)),
        )
        self.stopping = False
        for n in self.nodes:
            n.up_at = None
        gate = asyncio.Semaphore(int(args.get("inflight", 100)))
        order = list(self.nodes)
        random.shuffle(order)
        self.tasks = [asyncio.create_task(self._run(n, gate)) for n in order]

    async def stop(self) -> None:
        self.stopping = True
        live = [n.ws for n in self.nodes if n.ws is not None]
        await asyncio.gather(*(ws.close() for ws in live), return_exceptions=True)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []
        for n in self.nodes:
            n.ws, n.connected, n.synced = None, False, False

    def status(self) -> dict[str, Any]:
        connected = [n for n in self.nodes if n.connected]
        ups = [n.up_at for n in self.nodes if n.up_at is not None]
        resynced = [n.resynced_at for n in self.nodes if n.resynced_at is not None]
        return {
            "nodes": len(self.nodes),
            "connected": len(connected),
            "synced": sum(1 for n in connected if n.synced),
            "sessions": sum(n.sessions for n in self.nodes),
            "drops": self.drops,
            "connect_failures": self.connect_failures,
            "heartbeats": self.heartbeats,
            "errors": self.errors,
            "up": [min(ups), max(ups)] if ups else None,
            "resynced": len(resynced),
            "last_resynced_at": max(resynced) if resynced else None,
            "last_session_at": max((n.session_started for n in self.nodes), default=None),
            "cpu_seconds": time.process_time() - self.cpu_start,
        }

    def holding(self, key: str, rv: int) -> int:
        """How many nodes hold ``key`` at ``rv`` or newer."""
        return sum(1 for n in self.nodes if n.holdings.get(key, -1) >= rv)

    def wanted_count(self) -> int:
        """How many of the nodes named by the last ``want`` hold at least the versions
        it gave (set once, counted often: the map is too big to send with every poll)."""
        count = 0
        for name, want in self.wanted.items():
            held = self.by_name[name].holdings
            if all(held.get(k, -1) >= rv for k, rv in want.items()):
                count += 1
        return count

    def expect(self, since: float, holdings: dict[str, dict[str, int]]) -> None:
        """From now on, a node counts as resynced once a session it began after
        ``since`` has finished its resync (sync_done) and it holds exactly
        ``holdings[node]``."""
        self.expected = holdings
        self.expect_since = since
        for n in self.nodes:
            n.resynced_at = None
            self._check_expected(n)

    def dump(self, path: str) -> None:
        Path(path).write_text(json.dumps({
            "records": self.records,
            "raw": self.raw,
            "holdings": {n.name: n.holdings for n in self.nodes},
            "resynced_at": {n.name: n.resynced_at for n in self.nodes},
        }))

    def clear(self) -> None:
        self.records.clear()
        self.raw.clear()

    # ---- one node ------------------------------------------------------------------

    async def _run(self, node: Node, gate: asyncio.Semaphore) -> None:
        s = self.settings
        attempt = 0
        ramp = True  # the first connection waits its turn; reconnects only back off
        while not self.stopping:
            try:
                if ramp:
                    async with gate:
                        ws = await self._open(node)
                else:
                    ws = await self._open(node)
                ramp = False
                attempt = 0
                async with ws:
                    await self._session(node, ws)
                if not self.stopping:
                    self.drops += 1
            except asyncio.CancelledError:
                raise
            except ConnectionClosed:
                if not self.stopping:
                    self.drops += 1
            except (OSError, InvalidHandshake, TimeoutError, ssl.SSLError) as exc:
                self.connect_failures += 1
                log.debug("node %s: cannot connect: %r", node.name, exc)
            finally:
                node.ws, node.connected, node.synced = None, False, False
            if self.stopping:
                return
            await asyncio.sleep(reconnect_delay(attempt, random.random(),
                                                base=s.backoff_base, cap=s.backoff_cap))
            attempt += 1

    async def _open(self, node: Node) -> ClientConnection:
        return await connect(
            self.settings.url, ssl=node.ctx, compression=None, max_size=MAX_FRAME,
            ping_interval=20, ping_timeout=20, open_timeout=self.settings.open_timeout,
            close_timeout=5,
        )

    async def _session(self, node: Node, ws: ClientConnection) -> None:
        node.ws = ws
        node.connected = True
        node.sessions += 1
        node.session_started = time.monotonic()
        if self.settings.mode == "raw":
            if node.up_at is None:
                node.up_at = node.session_started
            async for frame in ws:
                msg = json.loads(frame)
                self.raw.append((node.idx, int(msg["id"]), time.monotonic()))
            return
        await ws.send(sync_frame(node.holdings))
        beat = asyncio.create_task(self._heartbeats(node, ws))
        try:
            async for frame in ws:
                await self._on_frame(node, ws, frame)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    async def _on_frame(self, node: Node, ws: ClientConnection, frame: str | bytes) -> None:
        received = time.monotonic()
        msg = json.loads(frame)
        op = msg.get("op")
        if op in (Op.UPSERT, Op.DELETE):
            ref = msg["ref"]
            key = make_key(ref["kind"], ref.get("namespace"), ref["name"])
            rv = int(msg["resource_version"])
            apply_change(node.holdings, Op(op), key, rv)
            await ws.send(ack_frame(msg["id"]))
            self.records.append((node.idx, op[0], key, rv, received, time.monotonic()))
            self._check_expected(node)
        elif op == Op.SYNC_DONE:
            node.synced = True
            if node.up_at is None:
                node.up_at = received
            self._check_expected(node)
        elif op == Op.ERROR:
            self.errors += 1
            log.warning("node %s: error from the cloud: %s", node.name, msg.get("body"))

    def _check_expected(self, node: Node) -> None:
        if (self.expected is None or node.resynced_at is not None or not node.synced
                or node.session_started <= self.expect_since):
            return
        if node.holdings == self.expected.get(node.name, {}):
            node.resynced_at = time.monotonic()

    async def _heartbeats(self, node: Node, ws: ClientConnection) -> None:
        interval = self.settings.heartbeat
        try:
            while True:
                await ws.send(heartbeat_frame(node.name))
                self.heartbeats += 1
                await asyncio.sleep(interval * random.uniform(0.9, 1.1))
        except ConnectionClosed:
            return


# ---- what a node says and how it applies what it hears (pure) ----------------------


def apply_change(holdings: dict[str, int], op: Op, key: str, rv: int) -> None:
    """edgecore's rule: a version older than the one held is acknowledged but not
    applied; a delete removes the key unless a newer version is held."""
    held = holdings.get(key, -1)
    if rv < held:
        return
    if op is Op.UPSERT:
        holdings[key] = rv
    elif op is Op.DELETE:
        holdings.pop(key, None)


def sync_frame(holdings: dict[str, int]) -> str:
    return wire.encode(wire.make(Op.SYNC, ts=now_ms(), body={"holdings": dict(holdings)}))


def ack_frame(parent_id: str) -> str:
    return wire.encode(wire.make(Op.ACK, ts=now_ms(), parent_id=parent_id))


def heartbeat_frame(name: str) -> str:
    return wire.encode(wire.make(Op.HEARTBEAT, ts=now_ms(), body={"status": node_status(name)}))


def node_status(name: str) -> dict[str, Any]:
    """What a small edge device would report (the shape edgecore.nodeinfo produces)."""
    return {
        "capacity": {"cpu": "4", "memory": "3884532Ki", "disk": "30830592Ki"},
        "allocatable": {"cpu": "4", "memory": "3884532Ki", "disk": "30830592Ki"},
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                      {"type": "Hostname", "address": name}],
        "nodeInfo": {"edgecoreVersion": "0.1.0", "pythonVersion": "3.11.7",
                     "operatingSystem": "linux", "kernelVersion": "6.1.0",
                     "architecture": "aarch64"},
    }


def load_nodes(nodes_file: Path, ca: Path) -> list[Node]:
    entries = json.loads(nodes_file.read_text())
    return [Node(idx=e["idx"], name=e["name"],
                 ctx=client_context(ca, Path(e["cert"]), Path(e["key"])))
            for e in entries]


async def main(nodes_file: Path, ca: Path) -> None:
    # The same 16 KiB TLS read buffer the hub uses: without it each client connection
    # costs ~300 KB here too and the client side would not fit beside the cloud.
    shrink_tls_read_buffers()
    sim = Sim(load_nodes(nodes_file, ca))
    commands = await command_lines()
    answer({"ready": True, "nodes": len(sim.nodes)})
    while True:
        line = await commands.readline()
        if not line:
            break
        cmd: dict[str, Any] = json.loads(line)
        name = cmd.pop("cmd")
        try:
            if name == "connect":
                sim.start(cmd)
                answer({"ok": True})
            elif name == "status":
                answer(sim.status())
            elif name == "holding":
                answer({"count": sim.holding(cmd["key"], int(cmd["rv"]))})
            elif name == "want":
                sim.wanted = cmd["wanted"]
                answer({"ok": True})
            elif name == "wanted_count":
                answer({"count": sim.wanted_count()})
            elif name == "expect":
                sim.expect(float(cmd["since"]), cmd["holdings"])
                answer({"ok": True})
            elif name == "dump":
                sim.dump(cmd["path"])
                answer({"ok": True})
            elif name == "clear":
                sim.clear()
                answer({"ok": True})
            elif name == "disconnect":
                await sim.stop()
                answer({"ok": True})
            elif name == "quit":
                await sim.stop()
                answer({"ok": True})
                break
            else:
                answer({"error": f"unknown command {name!r}"})
        except Exception as exc:  # report to the benchmark rather than die silently
            log.exception("command %s failed", name)
            answer({"error": f"{type(exc).__name__}: {exc}"})


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
