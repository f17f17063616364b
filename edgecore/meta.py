"""The edge's durable copy of every object the cloud addressed to this node.

The hub client hands each downstream ``upsert``/``delete`` to :class:`MetaCache` and
acknowledges the envelope only after the call returns, so every apply is one sqlite
transaction committed with ``synchronous=FULL`` in WAL mode: once it returns, a power
cut cannot take it back.

Ordering is by the cloud's ``resourceVersion`` (one counter per cloud store), never by
arrival: a resend, a reordered resync or a replay after a crash can deliver an older
version late, and it must not overwrite a newer one.  A delete leaves a *tombstone*
carrying its resourceVersion, so an older upsert that arrives after the delete stays
ignored; tombstones are pruned after a full resync, when the cloud has just told us
exactly what exists.

Every applied change is logged at DEBUG as ``applied <op> <key> rv=<n>`` (the system
tests grep for that exact shape) and published to subscribers as a
:class:`CacheEvent`.  Subscribers get a bounded queue; one that falls behind is dropped
(its iteration ends) rather than slowing down the apply path.

Methods are synchronous and meant to be called from the event loop's thread: each is
one short sqlite transaction on a local file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from protocol.errors import InvalidObject
from protocol.events import EventType
from protocol.resources import ObjectKey, key_of, make_key, resource_version
from protocol.selectors import Selector

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_WATCH_QUEUE = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    key       TEXT PRIMARY KEY,
    kind      TEXT NOT NULL,
    namespace TEXT NOT NULL,      -- '' for cluster-scoped kinds
    name      TEXT NOT NULL,
    rv        INTEGER NOT NULL,
    body      TEXT NOT NULL       -- the object as JSON, exactly as the cloud sent it
);
CREATE INDEX IF NOT EXISTS objects_by_kind ON objects (kind, namespace, name);
CREATE TABLE IF NOT EXISTS tombstones (
    key TEXT PRIMARY KEY,
    rv  INTEGER NOT NULL
);
"""


class CacheCorruptError(RuntimeError):
    """The cache file failed sqlite's integrity check (or is not a database)."""


class ApplyResult(StrEnum):
    APPLIED = "applied"
    # Ignored: we already hold that version or a newer one (or a newer tombstone).
    STALE = "stale"


@dataclass(frozen=True)
class CacheEvent:
    """One applied change.  Every subscriber receives the same dicts: read them, never
    modify them."""

    type: EventType
    # For DELETED: the last state held, carrying the delete's resourceVersion.
    object: dict[str, Any]
    # For MODIFIED: the version it replaced (a label-filtered watch needs it to tell
    # "changed" from "started/stopped matching").  None otherwise.
    previous: dict[str, Any] | None = None

    @property
    def key(self) -> ObjectKey:
        return key_of(self.object)

    def to_json(self) -> dict[str, Any]:
        """The Kubernetes watch-event shape: ``{"type": ..., "object": ...}``."""
        return {"type": self.type.value, "object": self.object}


class CacheWatch:
    """Live events from a :class:`MetaCache`, consumed with ``async for``.

    Iteration ends when the watch is closed, when the cache is closed, or when the
    watcher fell more than ``maxsize`` events behind (:attr:`dropped` is then True and
    the consumer should re-list before watching again)."""

    def __init__(self, owner: MetaCache, maxsize: int, kind: str | None) -> None:
        self._owner: MetaCache | None = owner
        self._maxsize = maxsize
        self.kind = kind
        self._events: deque[CacheEvent] = deque()
        self._wakeup = asyncio.Event()
        self._closed = False
        self.dropped = False

    def _offer(self, event: CacheEvent) -> None:
        if self._closed:
            return
        if len(self._events) >= self._maxsize:
            log.warning("dropping a cache watcher that fell %d events behind", self._maxsize)
            self.dropped = True
            # It has to re-list anyway; free what it never read.
            self._events.clear()
            self.close()
            return
        self._events.append(event)
        self._wakeup.set()

    def close(self) -> None:
        """Stop receiving events; iteration ends once the queued ones are consumed
        (at once when the watcher was dropped for falling behind)."""
        if self._closed:
            return
        self._closed = True
        if self._owner is not None:
            self._owner._unsubscribe(self)
            self._owner = None
        self._wakeup.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def __aiter__(self) -> AsyncIterator[CacheEvent]:
        return self

    async def __anext__(self) -> CacheEvent:
        while True:
            if self._events:
                return self._events.popleft()
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()


class MetaCache:
    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._watchers: list[CacheWatch] = []

    @classmethod
    def open(cls, path: Path) -> MetaCache:
        """Open (creating if needed) the cache at ``path``.

        Raises :class:`CacheCorruptError` when the file is damaged; the operator can
        move it aside and the node will fetch everything again from the cloud."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Owner-only: the cache holds everything the cloud sends this node.  sqlite
        # gives the -wal and -shm files the same mode as the database file.
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        conn = sqlite3.connect(str(path), isolation_level=None)
        try:
            cls._check_integrity(conn, path)
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is fsynced at every commit, so an acked apply survives a
            # power cut, not just a process crash.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(_SCHEMA)
            held = conn.execute("PRAGMA user_version").fetchone()[0]
            if held == 0:
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif held != SCHEMA_VERSION:
                raise CacheCorruptError(
                    f"{path}: cache schema version {held} is not {SCHEMA_VERSION}; "
                    "move the file aside and the node will resync from the cloud"
                )
        except BaseException:
            conn.close()
            raise
        return cls(conn, path)

    @staticmethod
    def _check_integrity(conn: sqlite3.Connection, path: Path) -> None:
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as exc:
            raise CacheCorruptError(
                f"{path} is not a usable sqlite database ({exc}); move it aside and the "
                "node will resync from the cloud"
            ) from exc
        # sqlite prefixes its findings with a "*** in database main ***" banner line.
        problems = [line for r in rows for line in str(r[0]).splitlines()
                    if line != "ok" and not line.startswith("***")]
        if problems:
            raise CacheCorruptError(
                f"{path} failed its integrity check ({'; '.join(problems[:3])}); move it "
                "aside and the node will resync from the cloud"
            )

    # -- applying what the cloud sent ---------------------------------------------------

    def upsert(self, obj: dict[str, Any]) -> ApplyResult:
        """Store ``obj`` unless we hold the same or a newer version of it, or a
        tombstone at least as new."""
        kind, namespace, name = _identity(obj)
        rv = resource_version(obj)
        if rv <= 0:
            raise InvalidObject("an object from the cloud must carry a resourceVersion",
                                field="metadata.resourceVersion")
        key = make_key(kind, namespace, name)
        body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
        with self._transaction() as cur:
            held = _row(cur, "SELECT rv, body FROM objects WHERE key = ?", key)
            tomb = _row(cur, "SELECT rv FROM tombstones WHERE key = ?", key)
            newest = max(held[0] if held else 0, tomb[0] if tomb else 0)
            if rv <= newest:
                log.debug("ignored stale upsert %s rv=%d; holding %d", key, rv, newest)
                return ApplyResult.STALE
            cur.execute(
                "INSERT INTO objects (key, kind, namespace, name, rv, body)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET rv = excluded.rv, body = excluded.body",
                (key, kind, namespace or "", name, rv, body),
            )
            # The object lives again at a newer version than its tombstone.
            cur.execute("DELETE FROM tombstones WHERE key = ?", (key,))
        log.debug("applied upsert %s rv=%d", key, rv)
        if held is None:
            self._publish(CacheEvent(EventType.ADDED, obj))
        else:
            self._publish(CacheEvent(EventType.MODIFIED, obj, previous=json.loads(held[1])))
        return ApplyResult.APPLIED

    def delete(self, kind: str, namespace: str | None, name: str, rv: int,
               *, evict: bool = False) -> ApplyResult:
        """Remove the object and remember the delete's ``rv`` as a tombstone.

        Stale when we hold a newer version than ``rv`` or already have a tombstone at
        least as new.  Deleting an object we never held still records the tombstone
        (an older upsert of it may be in flight) but publishes no event.

        ``evict``: the object left this node's scope but still exists in the cloud, and
        may be sent again at the same version later; no tombstone is kept for it."""
        key = make_key(kind, namespace, name)
        with self._transaction() as cur:
            held = _row(cur, "SELECT rv, body FROM objects WHERE key = ?", key)
            tomb = _row(cur, "SELECT rv FROM tombstones WHERE key = ?", key)
            if (held is not None and held[0] > rv) or (
                    not evict and tomb is not None and tomb[0] >= rv):
                newest = held[0] if held is not None else tomb[0] if tomb else 0
                log.debug("ignored stale delete %s rv=%d; holding %d", key, rv, newest)
                return ApplyResult.STALE
            if held is not None:
                cur.execute("DELETE FROM objects WHERE key = ?", (key,))
            if not evict:
                cur.execute(
                    "INSERT INTO tombstones (key, rv) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET rv = excluded.rv",
                    (key, rv),
                )
        log.debug("applied %s %s rv=%d", "eviction" if evict else "delete", key, rv)
        if held is not None:
            last: dict[str, Any] = json.loads(held[1])
            meta = dict(last.get("metadata") or {})
            meta["resourceVersion"] = str(rv)
            last["metadata"] = meta
            self._publish(CacheEvent(EventType.DELETED, last))
        return ApplyResult.APPLIED

    def holdings(self) -> dict[str, int]:
        """Key -> resourceVersion of every live object (what the edge tells the cloud
        on reconnect so it can send exactly the difference)."""
        return {k: rv for k, rv in self._conn.execute("SELECT key, rv FROM objects")}

    def prune_tombstones(self) -> None:
        """Forget every tombstone; called once a full resync has completed."""
        with self._transaction() as cur:
            cur.execute("DELETE FROM tombstones")

    def tombstones(self) -> dict[str, int]:
        """Key -> resourceVersion of every remembered delete."""
        return {k: rv for k, rv in self._conn.execute("SELECT key, rv FROM tombstones")}

    # -- reading ------------------------------------------------------------------------

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        row = self._conn.execute(
            "SELECT body FROM objects WHERE key = ?", (make_key(kind, namespace, name),)
        ).fetchone()
        return None if row is None else _load(row[0])

    def list(
        self, kind: str, namespace: str | None = None, selector: Selector | None = None,
    ) -> list[dict[str, Any]]:
        """Objects of ``kind`` (in every namespace when ``namespace`` is None) whose
        labels match ``selector``, sorted by namespace and name."""
        if namespace is None:
            rows = self._conn.execute(
                "SELECT body FROM objects WHERE kind = ? ORDER BY namespace, name", (kind,)
            )
        else:
            rows = self._conn.execute(
                "SELECT body FROM objects WHERE kind = ? AND namespace = ? ORDER BY name",
                (kind, namespace),
            )
        out = []
        for (body,) in rows:
            obj = _load(body)
            if selector is None or selector.matches(labels_of(obj)):
                out.append(obj)
        return out

    # -- live events --------------------------------------------------------------------

    def subscribe(self, *, kind: str | None = None,
                  maxsize: int = DEFAULT_WATCH_QUEUE) -> CacheWatch:
        """Events for every change applied from now on (only ``kind``'s when given)."""
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        watch = CacheWatch(self, maxsize, kind)
        self._watchers.append(watch)
        return watch

    @property
    def subscriber_count(self) -> int:
        return len(self._watchers)

    def _unsubscribe(self, watch: CacheWatch) -> None:
        try:
            self._watchers.remove(watch)
        except ValueError:
            pass

    def _publish(self, event: CacheEvent) -> None:
        kind = event.object.get("kind")
        # Copy: a dropped watcher unsubscribes itself while we iterate.
        for watch in list(self._watchers):
            if watch.kind is None or watch.kind == kind:
                watch._offer(event)

    def close(self) -> None:
        for watch in list(self._watchers):
            watch.close()
        self._conn.close()

    # -- helpers ------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any exception."""
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        else:
            cur.execute("COMMIT")
        finally:
            cur.close()


def _row(cur: sqlite3.Cursor, sql: str, key: str) -> Any:
    return cur.execute(sql, (key,)).fetchone()


def _load(body: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(body)
    return obj


def labels_of(obj: dict[str, Any]) -> dict[str, str]:
    labels = (obj.get("metadata") or {}).get("labels")
    return labels if isinstance(labels, dict) else {}


def _identity(obj: Any) -> tuple[str, str | None, str]:
    if not isinstance(obj, dict):
        raise InvalidObject("an object must be a mapping", field="")
    kind = obj.get("kind")
    meta = obj.get("metadata")
    if not isinstance(kind, str) or not kind:
        raise InvalidObject("required field is missing", field="kind")
    if not isinstance(meta, dict):
        raise InvalidObject("required field is missing", field="metadata")
    name = meta.get("name")
    namespace = meta.get("namespace")
    if not isinstance(name, str) or not name:
        raise InvalidObject("required field is missing", field="metadata.name")
    if namespace is not None and not isinstance(namespace, str):
        raise InvalidObject("namespace must be a string", field="metadata.namespace")
    return kind, namespace or None, name

