"""Node lifecycle: heartbeats in, Ready conditions out.

A heartbeat marks its node Ready=True (and records what it reports: capacity,
allocatable, addresses, versions).  A node heard from within the grace period stays
Ready; one silent for longer becomes Ready=Unknown, and True again on its next
heartbeat.  To keep a large fleet from turning every heartbeat into a store write,
the status is written when something other than timestamps changed, and otherwise at
most every ``status_update_interval`` (Kubernetes does the same with
nodeStatusReportFrequency).  Liveness itself is tracked in memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cloudcore.store.base import Store
from protocol.envelope import HeartbeatBody
from protocol.errors import EdgefleetError, Gone, NotFound
from protocol.events import EventType

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeLifecycleConfig:
    grace_seconds: float = 40.0
    status_update_interval: float = 60.0
    check_interval: float = 1.0


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ready_condition(status: dict[str, Any]) -> dict[str, Any] | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            return dict(cond)
    return None


def with_ready(status: dict[str, Any], value: str, reason: str, message: str,
               heartbeat: str | None, now: str) -> dict[str, Any]:
    """Return ``status`` with its Ready condition set; lastTransitionTime moves only
    when the value changes."""
    old = ready_condition(status)
    cond: dict[str, Any] = {
        "type": "Ready",
        "status": value,
        "reason": reason,
        "message": message,
        "lastHeartbeatTime": heartbeat or (old or {}).get("lastHeartbeatTime"),
        "lastTransitionTime": now if (old or {}).get("status") != value
        else (old or {}).get("lastTransitionTime", now),
    }
    if cond["lastHeartbeatTime"] is None:
        del cond["lastHeartbeatTime"]
    others = [c for c in status.get("conditions") or [] if c.get("type") != "Ready"]
    return {**status, "conditions": [cond, *others]}


def _without_times(status: dict[str, Any]) -> dict[str, Any]:
    conds = [
        {k: v for k, v in c.items() if k not in ("lastHeartbeatTime", "lastTransitionTime")}
        for c in status.get("conditions") or []
    ]
    return {**status, "conditions": conds}


class NodeLifecycle:
    def __init__(self, store: Store, cfg: NodeLifecycleConfig,
                 clock: Callable[[], float] | None = None) -> None:
        self._store = store
        self.cfg = cfg
        self._clock = clock or asyncio.get_running_loop().time
        self._last_seen: dict[str, float] = {}
        self._written_at: dict[str, float] = {}
        self._status: dict[str, dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self._deletions: asyncio.Task[None] | None = None
        self._on_deleted: Callable[[str], Awaitable[None]] | None = None

    async def start(self, on_deleted: Callable[[str], Awaitable[None]] | None = None) -> None:
        """Track every node; ``on_deleted`` runs when a Node object is deleted (the hub
        cuts that node's link at once)."""
        self._on_deleted = on_deleted
        items, rv = await self._store.list("Node")
        now = self._clock()
        for node in items:
            name = node["metadata"]["name"]
            self._status[name] = node.get("status") or {}
            # A restarted cloud gives every node a full grace period to check in.
            self._last_seen[name] = now
            # Its stored status is current: the first heartbeat after a restart need
            # not rewrite it (5,000 fsyncs in a reconnect storm otherwise).
            self._written_at[name] = now
        self._task = asyncio.create_task(self._watchdog(), name="node-lifecycle")
        self._deletions = asyncio.create_task(self._follow_deletions(rv), name="node-deletions")

    async def _follow_deletions(self, rv: int) -> None:
        while True:
            try:
                async for event in self._store.watch(rv, frozenset({"Node"})):
                    rv = event.rv
                    if event.type is EventType.DELETED:
                        name = event.object["metadata"]["name"]
                        log.info("node %s deleted", name)
                        self.forget(name)
                        if self._on_deleted is not None:
                            await self._on_deleted(name)
                return
            except Gone:
                _, rv = await self._store.list("Node")

    async def stop(self) -> None:
        for task in (self._task, self._deletions):
            if task is not None:
                task.cancel()

    async def heartbeat(self, node: str, hb: HeartbeatBody) -> None:
        now = self._clock()
        self._last_seen[node] = now
        wall = rfc3339(datetime.now(UTC).timestamp())
        old = self._status.get(node, {})
        reported = hb.status.model_dump(exclude_none=True, exclude={"conditions"})
        new = with_ready({**old, **reported}, "True", "EdgecoreReady",
                         "edgecore is posting status", wall, wall)
        changed = _without_times(new) != _without_times(old)
        due = now - self._written_at.get(node, float("-inf")) >= self.cfg.status_update_interval
        if changed or due:
            await self._write(node, new, now)

    async def _write(self, node: str, status: dict[str, Any], now: float) -> None:
        try:
            await self._store.update_status("Node", None, node, status)
        except NotFound:
            log.warning("heartbeat from node %s, which no longer exists", node)
            return
        except EdgefleetError as exc:
            log.error("could not write the status of node %s: %s", node, exc)
            return
        self._status[node] = status
        self._written_at[node] = now

    def forget(self, node: str) -> None:
        self._last_seen.pop(node, None)
        self._status.pop(node, None)
        self._written_at.pop(node, None)

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.check_interval)
            try:
                await self.check()
            except Exception:
                log.exception("node lifecycle check failed")

    async def check(self) -> None:
        now = self._clock()
        for node, seen in list(self._last_seen.items()):
            cond = ready_condition(self._status.get(node, {}))
            if cond is None or cond.get("status") != "True":
                continue
            if now - seen > self.cfg.grace_seconds:
                wall = rfc3339(datetime.now(UTC).timestamp())
                log.warning("node %s: no heartbeat for %.0f s; Ready=Unknown", node, now - seen)
                status = with_ready(self._status[node], "Unknown", "NodeStatusUnknown",
                                    "edgecore stopped posting node status", None, wall)
                await self._write(node, status, now)

    def register(self, node: str) -> None:
        """A node joined: track it from now on."""
        self._last_seen.setdefault(node, self._clock())
