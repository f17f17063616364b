"""The embedded store: one sqlite file owned by one cloudcore process.

Layout of the file::

    objects(key PK, kind, namespace, name, rv, body)   the current state, body is JSON
    events(rv PK, type, kind, key, body)                the change history watches replay
    meta(id=1, rv, compacted)                           the resourceVersion counter and the
                                                        highest rv dropped from history

Every write is one sqlite transaction that takes ``rv = counter + 1``, writes the object
row and the event row, and trims the history to ``history_limit`` events: all of it
commits or none of it does.  Because every write adds exactly one event, the history is
always the contiguous range ``compacted + 1 .. rv``.  :meth:`SqliteStore.write_many`
puts many writes in one transaction - one fsync instead of one each, which is most of
what a write costs - and each change still takes its own rv and event row.

Why the sqlite calls run directly on the event loop (no thread pool): they are small
local reads and single-row writes, and running them inline makes each method atomic
with respect to every other coroutine.  No method awaits between reading the stored
object and writing the new one, so read-modify-write needs no lock, and a watch can
register itself and note the current rv in one step, which is what guarantees a watch
neither misses nor repeats an event while it replays history.

Durability: WAL journal with ``synchronous=FULL``, so a write is on disk before its
method returns; a kill -9 or power cut loses no acknowledged write.  A second process
opening the same file is refused (``flock`` on ``<path>.lock``): the in-memory counter
and the live watch fan-out assume a single owner.

Errors (all :class:`~protocol.errors.EdgefleetError`)::

    StoreError             the store cannot be used (500)
    ├── StoreLocked        another process holds the file
    ├── StoreCorrupt       the file fails its integrity check or is not a database
    └── StoreClosed        the store was closed
    plus NotFound, Conflict, AlreadyExists, Gone and StoreFull (507: the file reached
    ``max_db_bytes`` or the disk is full; the write is rolled back) from protocol.errors
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import fcntl
import json
import logging
import os
import sqlite3
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from cloudcore.store.base import (
    Apply,
    Create,
    Delete,
    UpdateStatus,
    WatchEvent,
    Write,
    WriteResult,
)
from protocol.errors import (
    AlreadyExists,
    Conflict,
    EdgefleetError,
    Gone,
    InvalidObject,
    NotFound,
    StoreFull,
)
from protocol.events import EventType
from protocol.resources import make_key, resource_version
from protocol.selectors import Selector

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
WATCH_QUEUE_LIMIT = 10_000
"""Live events a watcher may have waiting; one that falls further behind is ended
with Gone (it re-lists) so that a slow reader never holds up writers."""
_REPLAY_PAGE = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    key       TEXT PRIMARY KEY,
    kind      TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    rv        INTEGER NOT NULL,
    body      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS objects_by_kind ON objects (kind, namespace, name);
CREATE TABLE IF NOT EXISTS events (
    rv   INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    kind TEXT NOT NULL,
    key  TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    rv        INTEGER NOT NULL,
    compacted INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (id, rv, compacted) VALUES (1, 0, 0);
"""


class StoreError(EdgefleetError):
    """The store itself cannot serve (as opposed to a problem with one request)."""


class StoreLocked(StoreError):
    """Another process has the store file open."""


class StoreCorrupt(StoreError):
    """The file is not a healthy edgefleet store."""


class StoreClosed(StoreError):
    """The store was closed."""


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _to_json(obj: dict[str, Any]) -> str:
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        # A YAML date or a NaN would otherwise fail deep inside the write.
        raise InvalidObject(f"the object is not representable as JSON: {exc}", field="") from None


def _stale(stored_rv: int, yours: int) -> Conflict:
    return Conflict(
        "the object has been modified; please apply your changes to the latest version "
        f"(stored resourceVersion {stored_rv}, yours {yours})",
        field="metadata.resourceVersion",
    )


def _describe(kind: str, namespace: str | None, name: str) -> str:
    return f'{kind} "{namespace}/{name}"' if namespace else f'{kind} "{name}"'


@dataclass
class _Change:
    """A write that has been checked and will change the store: the object to store
    under its key (for DELETED, its last state)."""

    type: EventType
    kind: str
    namespace: str | None
    name: str
    body: dict[str, Any]
    shared: bool = False  # body shares nested values with the caller's object


@dataclass(eq=False)
class _Watcher:
    kinds: frozenset[str] | None
    queue: asyncio.Queue[WatchEvent | None] = field(default_factory=asyncio.Queue)
    # Why the stream ended early: Gone when it fell behind; None for a normal end.
    failure: EdgefleetError | None = None

    def wants(self, kind: str) -> bool:
        return self.kinds is None or kind in self.kinds


class SqliteStore:
    """The :class:`~cloudcore.store.base.Store` on one local sqlite file."""

    def __init__(
        self, path: Path, conn: sqlite3.Connection, lock_fd: int, *,
        history_limit: int, max_db_bytes: int | None,
    ) -> None:
        # Use :meth:`open`; this only wires already-opened resources together.
        self.path = path
        self._conn = conn
        self._lock_fd: int | None = lock_fd
        self._history_limit = history_limit
        self._max_db_bytes = max_db_bytes
        self._page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        rv, compacted = conn.execute("SELECT rv, compacted FROM meta WHERE id = 1").fetchone()
        self._rv = int(rv)
        self._compacted = int(compacted)
        self._watchers: set[_Watcher] = set()
        self._closed = False

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls, path: Path, *, history_limit: int = 100_000, max_db_bytes: int | None = None,
    ) -> Self:
        """Open (creating if needed) the store at ``path``.  Raises :class:`StoreLocked`
        if another process has it open and :class:`StoreCorrupt` if it fails
        ``PRAGMA quick_check``."""
        if history_limit < 1:
            raise ValueError("history_limit must be at least 1")
        path = Path(path)
        lock_fd = _lock(path)
        try:
            conn = _connect(path)
        except BaseException:
            os.close(lock_fd)
            raise
        log.info("store opened at %s", path)
        return cls(path, conn, lock_fd, history_limit=history_limit, max_db_bytes=max_db_bytes)

    # ------------------------------------------------------------------ reads

    def current_rv(self) -> int:
        return self._rv

    def watch_count(self) -> int:
        """How many watches are registered for live events (for metrics and tests)."""
        return len(self._watchers)

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        stored = self._load(kind, namespace, name)
        if stored is None:
            raise NotFound(f"{_describe(kind, namespace, name)} not found")
        return stored

    async def list(
        self, kind: str, namespace: str | None = None, selector: Selector | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        self._check_open()
        if namespace:
            rows = self._conn.execute(
                "SELECT body FROM objects WHERE kind = ? AND namespace = ? ORDER BY name",
                (kind, namespace),
            )
        else:
            rows = self._conn.execute(
                "SELECT body FROM objects WHERE kind = ? ORDER BY namespace, name", (kind,),
            )
        items: list[dict[str, Any]] = []
        for (body,) in rows:
            obj = json.loads(body)
            if selector is None or selector.matches(obj["metadata"].get("labels")):
                items.append(obj)
        return items, self._rv

    # ------------------------------------------------------------------ writes

    async def apply(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        decided, created = self._decide_apply(obj, create_only=False)
        return self._commit(decided), created

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        decided, _ = self._decide_apply(obj, create_only=True)
        return self._commit(decided)

    async def update_status(
        self, kind: str, namespace: str | None, name: str, status: dict[str, Any],
        expected_rv: int | None = None,
    ) -> dict[str, Any]:
        return self._commit(self._decide_status(kind, namespace, name, status, expected_rv))

    async def delete(
        self, kind: str, namespace: str | None, name: str, expected_rv: int | None = None,
    ) -> dict[str, Any]:
        return self._commit(self._decide_delete(kind, namespace, name, expected_rv))

    async def write_many(self, writes: Sequence[Write]) -> builtins.list[WriteResult]:
        """Many writes, one transaction (see :meth:`cloudcore.store.base.Store.write_many`).
        The checks read the database inside the transaction, so they see the earlier
        writes of the batch.  Watchers get the events only after the commit, so nobody
        ever sees a change that could still be rolled back.  A stored object in the
        result is the one the watch events carry (not a copy: thousands of copies nobody
        reads cost more than the writes themselves) - treat it as read-only."""
        self._check_open()
        if not writes:
            return []
        results: list[WriteResult] = []
        events: list[tuple[WatchEvent, str]] = []
        rv = self._rv
        compacted = self._compacted
        growing = any(not isinstance(w, Delete) for w in writes)
        with self._transaction(check_growth=growing):
            for write in writes:
                try:
                    decided = self._decide(write)
                    text = self._encode(decided, rv + 1) if isinstance(decided, _Change) \
                        else ""
                except EdgefleetError as exc:
                    results.append(exc)
                    continue
                if not isinstance(decided, _Change):
                    results.append(decided)  # nothing to change: the stored object
                    continue
                rv += 1
                self._store_rows(decided, rv, text)
                if decided.shared:
                    decided.body = json.loads(text)  # the private copy watchers get
                results.append(decided.body)
                events.append((WatchEvent(decided.type, decided.body, rv), decided.kind))
            if events:
                compacted = max(self._compacted, rv - self._history_limit)
                self._conn.execute("UPDATE meta SET rv = ?, compacted = ? WHERE id = 1",
                                   (rv, compacted))
                if compacted > self._compacted:
                    self._conn.execute("DELETE FROM events WHERE rv <= ?", (compacted,))
        self._rv = rv
        self._compacted = compacted
        for event, kind in events:
            self._fan_out(event, kind)
        return results

    def _decide(self, write: Write) -> _Change | dict[str, Any]:
        if isinstance(write, Create):
            return self._decide_apply(write.obj, create_only=True, copy=False)[0]
        if isinstance(write, Apply):
            return self._decide_apply(write.obj, create_only=False)[0]
        if isinstance(write, UpdateStatus):
            return self._decide_status(write.kind, write.namespace, write.name, write.status,
                                       write.expected_rv)
        return self._decide_delete(write.kind, write.namespace, write.name, write.expected_rv)

    def _commit(self, decided: _Change | dict[str, Any]) -> dict[str, Any]:
        if not isinstance(decided, _Change):
            return decided
        return self._write(decided.type, decided.kind, decided.namespace, decided.name,
                           decided.body)

    def _decide_status(
        self, kind: str, namespace: str | None, name: str, status: dict[str, Any],
        expected_rv: int | None,
    ) -> _Change | dict[str, Any]:
        stored = self._load(kind, namespace, name)
        if stored is None:
            raise NotFound(f"{_describe(kind, namespace, name)} not found")
        stored_rv = resource_version(stored)
        if expected_rv is not None and expected_rv != stored_rv:
            raise _stale(stored_rv, expected_rv)
        status = json.loads(_to_json(status))
        if stored.get("status") == status:
            return stored
        stored["status"] = status
        return _Change(EventType.MODIFIED, kind, namespace, name, stored)

    def _decide_delete(
        self, kind: str, namespace: str | None, name: str, expected_rv: int | None,
    ) -> _Change:
        stored = self._load(kind, namespace, name)
        if stored is None:
            raise NotFound(f"{_describe(kind, namespace, name)} not found")
        stored_rv = resource_version(stored)
        if expected_rv is not None and expected_rv != stored_rv:
            raise _stale(stored_rv, expected_rv)
        return _Change(EventType.DELETED, kind, namespace, name, stored)

    def _decide_apply(
        self, obj: dict[str, Any], *, create_only: bool, copy: bool = True,
    ) -> tuple[_Change | dict[str, Any], bool]:
        """The change an apply (or create) makes, and whether it creates; the stored
        object itself when the apply changes nothing.  ``copy=False`` (a create in a
        batch) copies only what this changes: the caller encodes the object once it has
        its resourceVersion and keeps the decoded copy (one JSON round trip, not two)."""
        new: dict[str, Any]
        if copy or not create_only or not isinstance(obj.get("metadata"), dict):
            # A JSON round trip gives a private deep copy and fails early on values sqlite
            # could not store (and makes "did anything change" a plain == on dicts).
            new = json.loads(_to_json(obj))
        else:
            new = {**obj, "metadata": dict(obj["metadata"])}
        kind = str(new.get("kind"))
        meta: dict[str, Any] = new.setdefault("metadata", {})
        namespace: str | None = meta.get("namespace") or None
        name = str(meta.get("name"))
        wanted_rv = resource_version(new)
        stored = self._load(kind, namespace, name)

        if stored is None:
            if wanted_rv:
                # A precondition on an object that does not exist cannot hold.
                raise Conflict(
                    f"{_describe(kind, namespace, name)} does not exist, yet the request "
                    f"expects resourceVersion {wanted_rv}; remove metadata.resourceVersion "
                    "to create it",
                    field="metadata.resourceVersion",
                )
            new.pop("status", None)  # status is written by the system only
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now_rfc3339()
            meta["generation"] = 1
            return _Change(EventType.ADDED, kind, namespace, name, new, shared=not copy), True

        if create_only:
            raise AlreadyExists(f"{_describe(kind, namespace, name)} already exists")
        stored_meta = stored["metadata"]
        stored_rv = resource_version(stored)
        if wanted_rv and wanted_rv != stored_rv:
            raise _stale(stored_rv, wanted_rv)
        for system_field in ("uid", "creationTimestamp", "resourceVersion"):
            meta[system_field] = stored_meta[system_field]
        generation = int(stored_meta.get("generation", 1))
        meta["generation"] = generation + 1 if new.get("spec") != stored.get("spec") else generation
        new.pop("status", None)
        if "status" in stored:
            new["status"] = stored["status"]
        if new == stored:
            return stored, False
        return _Change(EventType.MODIFIED, kind, namespace, name, new), False

    def _load(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        self._check_open()
        row = self._conn.execute(
            "SELECT body FROM objects WHERE key = ?", (make_key(kind, namespace, name),),
        ).fetchone()
        if row is None:
            return None
        loaded: dict[str, Any] = json.loads(row[0])
        return loaded

    def _write(
        self, etype: EventType, kind: str, namespace: str | None, name: str,
        body: dict[str, Any],
    ) -> dict[str, Any]:
        """Commit one change (object row, event row, counter, history trim) as one
        transaction, then hand the event to the live watchers.  Returns a copy of the
        stored object that the caller may keep."""
        rv = self._rv + 1
        compacted = max(self._compacted, rv - self._history_limit)
        conn = self._conn
        with self._transaction(check_growth=etype is not EventType.DELETED):
            conn.execute("UPDATE meta SET rv = ?, compacted = ? WHERE id = 1", (rv, compacted))
            self._put(_Change(etype, kind, namespace, name, body), rv)
            if compacted > self._compacted:
                conn.execute("DELETE FROM events WHERE rv <= ?", (compacted,))
        self._rv = rv
        self._compacted = compacted
        self._fan_out(WatchEvent(etype, body, rv), kind)
        return copy.deepcopy(body)

    def _put(self, change: _Change, rv: int) -> str:
        """Within a transaction: the object row and the event row of one change at
        ``rv``.  Returns the stored JSON."""
        text = self._encode(change, rv)
        self._store_rows(change, rv, text)
        return text

    @staticmethod
    def _encode(change: _Change, rv: int) -> str:
        """The change's object as stored at ``rv`` (InvalidObject if it is not JSON)."""
        change.body["metadata"]["resourceVersion"] = str(rv)
        return _to_json(change.body)

    def _store_rows(self, change: _Change, rv: int, text: str) -> None:
        key = make_key(change.kind, change.namespace, change.name)
        conn = self._conn
        if change.type is EventType.DELETED:
            conn.execute("DELETE FROM objects WHERE key = ?", (key,))
        else:
            conn.execute(
                "INSERT INTO objects (key, kind, namespace, name, rv, body) "
                "VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET rv = excluded.rv, body = excluded.body",
                (key, change.kind, change.namespace or "", change.name, rv, text),
            )
        conn.execute(
            "INSERT INTO events (rv, type, kind, key, body) VALUES (?, ?, ?, ?, ?)",
            (rv, change.type.value, change.kind, key, text),
        )

    @contextmanager
    def _transaction(self, *, check_growth: bool) -> Iterator[None]:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            pages_before = self._page_count() if check_growth else 0
            yield
            if check_growth and self._max_db_bytes is not None:
                self._refuse_growth_past_limit(pages_before)
            conn.execute("COMMIT")
        except BaseException as exc:
            # sqlite may already have rolled back by itself (SQLITE_FULL does).
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise _translate(exc, self.path) from exc
            raise

    def _page_count(self) -> int:
        return int(self._conn.execute("PRAGMA page_count").fetchone()[0])

    def _refuse_growth_past_limit(self, pages_before: int) -> None:
        # Deletes skip this check so that a full store can always be emptied.  A file
        # already over the limit (reopened with a smaller one) may still reuse its free
        # pages; only growing past the limit is refused.
        assert self._max_db_bytes is not None
        pages_after = self._page_count()
        size_after = pages_after * self._page_size
        if pages_after > pages_before and size_after > self._max_db_bytes:
            raise StoreFull(
                f"store is full (cap {self._max_db_bytes} bytes): this write would grow "
                f"{self.path.name} to {size_after} bytes; delete objects or raise the cap "
                "(cloudcore config storeMaxBytes)"
            )

    # ------------------------------------------------------------------ watch

    def watch(self, from_rv: int, kinds: frozenset[str] | None = None) -> WatchStream:
        """Every change with resourceVersion > ``from_rv`` (of ``kinds``, or all), in
        order: the history first, then live.  Raises Gone (from the first ``__anext__``)
        if that history was compacted away, or later if the reader falls more than
        :data:`WATCH_QUEUE_LIMIT` events behind.  The objects in events are shared
        between watchers: treat them as read-only."""
        return WatchStream(self, from_rv, kinds)

    def _fan_out(self, event: WatchEvent, kind: str) -> None:
        for watcher in list(self._watchers):
            if not watcher.wants(kind):
                continue
            if watcher.queue.qsize() >= WATCH_QUEUE_LIMIT:
                self._end_watcher(watcher, Gone(
                    f"watch fell more than {WATCH_QUEUE_LIMIT} events behind at "
                    f"resourceVersion {event.rv}; list again"
                ))
            else:
                watcher.queue.put_nowait(event)

    def _end_watcher(self, watcher: _Watcher, failure: EdgefleetError | None) -> None:
        if watcher in self._watchers:
            self._watchers.discard(watcher)
            watcher.failure = failure
            watcher.queue.put_nowait(None)  # wakes a reader waiting in get()

    def _read_history(
        self, after: int, upto: int, kinds: frozenset[str] | None,
    ) -> tuple[builtins.list[WatchEvent], int]:
        """One page of history in (after, upto]; returns the events and the rv up to
        which the history has now been scanned."""
        sql = "SELECT rv, type, body FROM events WHERE rv > ? AND rv <= ?"
        params: list[Any] = [after, upto]
        if kinds is not None:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            params.extend(sorted(kinds))
        sql += f" ORDER BY rv LIMIT {_REPLAY_PAGE}"
        rows = self._conn.execute(sql, params).fetchall()
        events = [WatchEvent(EventType(t), json.loads(b), int(rv)) for rv, t, b in rows]
        scanned = events[-1].rv if len(events) == _REPLAY_PAGE else upto
        return events, scanned

    def _gone(self, from_rv: int) -> Gone:
        return Gone(
            f"resourceVersion {from_rv} is too old; the oldest available is "
            f"{self._compacted}; list again"
        )

    # ------------------------------------------------------------------ closing

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(f"the store at {self.path} is closed")

    async def close(self) -> None:
        """End every watch (their iterators stop), close the database and release the
        lock.  Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for watcher in list(self._watchers):
            self._end_watcher(watcher, None)
        self._conn.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        log.info("store closed at %s", self.path)


class WatchStream:
    """The iterator :meth:`SqliteStore.watch` returns.  It registers for live events
    and notes the store's rv in one step (nothing can be written in between, see the
    module docstring); history up to that rv comes from the events table and anything
    after it from the queue, so no event is missed or repeated."""

    def __init__(self, store: SqliteStore, from_rv: int, kinds: frozenset[str] | None) -> None:
        self._store = store
        self._from_rv = from_rv
        self._kinds = kinds
        self._watcher: _Watcher | None = None
        self._replay_upto = 0
        self._last = from_rv  # the rv up to which this stream has delivered or scanned
        self._buffer: deque[WatchEvent] = deque()
        self._done = False

    def __aiter__(self) -> WatchStream:
        return self

    async def __anext__(self) -> WatchEvent:
        if self._done:
            raise StopAsyncIteration
        try:
            return await self._next()
        except BaseException:
            self._finish()
            raise

    async def _next(self) -> WatchEvent:
        store = self._store
        if self._watcher is None:
            store._check_open()
            if self._from_rv < store._compacted:
                raise store._gone(self._from_rv)
            self._watcher = _Watcher(self._kinds)
            store._watchers.add(self._watcher)
            self._replay_upto = store._rv
        watcher = self._watcher
        while self._buffer or self._last < self._replay_upto:
            if store._closed:
                raise StopAsyncIteration
            if watcher.failure is not None:
                raise watcher.failure
            if self._buffer:
                return self._buffer.popleft()
            if store._compacted > self._last:
                # Writes made while the reader worked through earlier pages trimmed
                # history it has not read yet.
                raise store._gone(self._last)
            page, self._last = store._read_history(self._last, self._replay_upto, self._kinds)
            self._buffer.extend(page)
        while True:
            if watcher.failure is not None:
                raise watcher.failure
            event = await watcher.queue.get()
            if event is None:
                if watcher.failure is not None:
                    raise watcher.failure
                raise StopAsyncIteration
            if event.rv > self._last:
                self._last = event.rv
                return event

    def _finish(self) -> None:
        self._done = True
        self._buffer.clear()
        if self._watcher is not None:
            self._store._watchers.discard(self._watcher)

    async def aclose(self) -> None:
        self._finish()

    def __del__(self) -> None:
        # ``break`` out of ``async for`` does not call aclose(); unregister when the
        # iterator is dropped so the store stops queueing events for nobody.
        self._finish()


def _lock(path: Path) -> int:
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreLocked(
            f"the store {path} is in use by another process (lock {lock_path} is held); "
            "stop it or choose another data directory"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: the module issues BEGIN/COMMIT itself.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        try:
            check = conn.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreCorrupt(f"{path} is not a usable sqlite database: {exc}") from None
        if [tuple(r) for r in check] != [("ok",)]:
            problems = "; ".join(str(r[0]) for r in check[:5])
            raise StoreCorrupt(
                f"{path} failed its integrity check ({problems}); restore it from a backup"
            )
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"could not put {path} in WAL mode (journal_mode is {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{path} was written by a newer edgefleet (schema {version}, this one "
                f"reads {SCHEMA_VERSION})"
            )
        # executescript commits any open transaction first, so the script opens its own.
        conn.executescript(
            f"BEGIN IMMEDIATE;\n{_SCHEMA}\nPRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;"
        )
    except BaseException:
        conn.close()
        raise
    return conn


def _translate(exc: sqlite3.Error, path: Path) -> EdgefleetError:
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return StoreFull(f"store is full: the disk holding {path} has no space left ({exc})")
    return StoreError(f"store write to {path} failed: {exc}")
