"""The edge's upstream outbox: durable, bounded, coalescing.

Everything the edge must tell the cloud (object statuses, later twin reports and
logs) is written here first, in one sqlite transaction, and leaves only when the
cloud acks it — so a disconnect, a cloud restart or a kill -9 of edgecore loses
nothing.  Entries carrying a coalescing key replace the unsent entry with the same
key (only the latest status of an object matters).  The table is bounded: when it
is full the oldest entry is dropped, counted and logged, so a week offline cannot
fill the disk.  Reading it never blocks start-up: the drain runs in the background
(Greengrass's spooler blocked component start-up for minutes; see anchors §3.5).

An acked entry leaves the index at once, and its row within ``FLUSH_DELAY`` seconds: the
deletes ride along with the next put's transaction, or are committed together when none
comes.  A commit per ack was half the outbox's disk writes.  A kill -9 in between can only
make the cloud see an acked message again (it is at-least-once anyway: everything unacked
is resent after the ack timeout), never lose one.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecore.dbcap import cap_size, is_full, store_full
from protocol.envelope import Envelope, ObjectRef, Op, make, new_id

log = logging.getLogger(__name__)

_DELETE = "DELETE FROM outbox WHERE envelope_id = ?"
_INSERT = ("INSERT INTO outbox (envelope_id, coalesce_key, op, ref, body)"
           " VALUES (?, ?, ?, ?, ?)")
FLUSH_DELAY = 0.2  # seconds an acked entry's row may outlive the ack
_FLUSH_AT = 256  # acked rows deleted at once, whatever the delay
_REF_CACHE_LIMIT = 4096  # parsed ObjectRefs remembered by their JSON (few objects report)


Message = tuple[Op, ObjectRef | None, Any, str | None]
"""What :meth:`Outbox.put_many` queues: operation, object, body, coalescing key."""
_Row = tuple[str, str | None, str, str | None, str]  # envelope id, key, op, ref, body


@dataclass(frozen=True)
class OutboxEntry:
    seq: int
    envelope_id: str
    op: Op
    ref: ObjectRef | None
    body: Any

    def envelope(self, ts: int) -> Envelope:
        return make(self.op, ts=ts, ref=self.ref, body=self.body, id=self.envelope_id)


class Outbox:
    def __init__(self, conn: sqlite3.Connection, limit: int, path: Path | None = None,
                 max_bytes: int | None = None) -> None:
        self._db = conn
        self.limit = limit
        self.dropped = 0
        self.path = path or Path("outbox.db")
        self.max_bytes = max_bytes
        # The table's entries by sequence number, kept in step with each commit: the
        # drain asks "how many are in flight" and "is there anything new" twice per
        # message sent and per ack, and a query each time was a good part of the cost of
        # a status upload (docs/benchmarks.md, Twin pipeline).  edgecore is the file's
        # only writer; the rows themselves are read only by peek.
        self._seqs: list[int] = []  # ascending
        self._seq_of: dict[str, int] = {}  # envelope id -> seq
        self._key_of: dict[str, str] = {}  # envelope id -> coalescing key, when it has one
        self._by_key: dict[str, str] = {}  # coalescing key -> envelope id
        self._refs: dict[str, ObjectRef] = {}
        self._acked: list[str] = []  # removed from the index, their rows not yet deleted
        self._flush_timer: asyncio.TimerHandle | None = None
        for seq, envelope_id, coalesce_key in conn.execute(
                "SELECT seq, envelope_id, coalesce_key FROM outbox ORDER BY seq"):
            self._index(seq, envelope_id, coalesce_key)

    @classmethod
    def open(cls, path: Path, limit: int = 10_000, max_bytes: int | None = None) -> Outbox:
        """Open (creating) the outbox at ``path``: at most ``limit`` entries and, when
        ``max_bytes`` is set, a file of at most that size (a put that does not fit raises
        :class:`~protocol.errors.StoreFull` and queues nothing)."""
        conn = sqlite3.connect(path, isolation_level=None)
        cap_size(conn, max_bytes)
        conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit is in the WAL before put() returns, so a kill -9 loses
        # nothing; only a power cut can lose the last entries.  FULL would fsync every
        # status a device reports — two fsyncs per report on the event loop, which
        # capped the twin pipeline (docs/benchmarks.md, Twin pipeline).
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS outbox ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " envelope_id TEXT NOT NULL UNIQUE,"
            " coalesce_key TEXT UNIQUE,"
            " op TEXT NOT NULL, ref TEXT, body TEXT NOT NULL)"
        )
        return cls(conn, limit, path, max_bytes)

    def put(self, op: Op, ref: ObjectRef | None, body: Any, coalesce_key: str | None = None) -> str:
        """Durably queue one message; returns its envelope id.  Raises
        :class:`~protocol.errors.StoreFull` when the file is at its cap: then nothing
        changed (an unsent entry it would have replaced is still there)."""
        return self.put_many([(op, ref, body, coalesce_key)])[0]

    def put_many(self, messages: Sequence[Message]) -> list[str]:
        """Durably queue several messages in one transaction (in order; a later one
        replaces an earlier one with the same coalescing key); returns their envelope
        ids.  All or nothing: on :class:`~protocol.errors.StoreFull` none is queued."""
        rows = [(new_id(), key, op.value, ref.model_dump_json() if ref is not None else None,
                 json.dumps(body)) for op, ref, body, key in messages]
        try:
            self._put(rows)
        except sqlite3.Error as exc:
            if is_full(exc):
                what = (f"a {messages[0][0].value} message" if len(messages) == 1
                        else f"{len(messages)} messages")
                raise store_full(self.path, self.max_bytes, what) from exc
            raise
        return [row[0] for row in rows]

    def _put(self, rows: list[_Row]) -> None:
        by_key = self._by_key
        acked = self._acked
        if len(rows) == 1 and not acked and (rows[0][1] is None or rows[0][1] not in by_key) \
                and len(self._seqs) < self.limit:
            # The usual case (the object's last status has been acked): one statement,
            # atomic by itself, instead of a transaction.
            seq = self._db.execute(_INSERT, rows[0]).lastrowid
            assert seq is not None
            self._index(seq, rows[0][0], rows[0][1])
            return
        replaced: list[str] = []  # indexed entries that newer ones replace
        added: dict[str, tuple[int, str | None]] = {}  # envelope id -> (seq, key)
        in_batch: dict[str, str] = {}  # coalescing key -> envelope id, this batch
        dropped: list[Any] = []
        with self._tx():
            if acked:  # first: one of them may hold a coalescing key of this batch
                self._db.executemany(_DELETE, [(acked_id,) for acked_id in acked])
            for row in rows:
                envelope_id, key = row[0], row[1]
                if key is not None:
                    earlier = in_batch.get(key) or by_key.get(key)
                    if earlier is not None:
                        self._db.execute("DELETE FROM outbox WHERE coalesce_key = ?", (key,))
                        if added.pop(earlier, None) is None:
                            replaced.append(earlier)
                    in_batch[key] = envelope_id
                seq = self._db.execute(_INSERT, row).lastrowid
                assert seq is not None
                added[envelope_id] = (seq, key)
            excess = len(self._seqs) - len(replaced) + len(added) - self.limit
            if excess > 0:
                dropped = self._db.execute(
                    "SELECT seq, coalesce_key, envelope_id FROM outbox ORDER BY seq LIMIT ?",
                    (excess,)).fetchall()
                self._db.executemany("DELETE FROM outbox WHERE seq = ?",
                                     [(r[0],) for r in dropped])
                self.dropped += len(dropped)
                log.warning(
                    "outbox full (limit %d): dropped %d oldest message(s) (%s); "
                    "%d dropped since start", self.limit, len(dropped),
                    ", ".join(str(r[1] or r[0]) for r in dropped), self.dropped,
                )
        # Committed: the index follows.
        if acked:
            self._acked = []
        for envelope_id in replaced:
            self._unindex(envelope_id)
        for envelope_id, (seq, key) in added.items():
            self._index(seq, envelope_id, key)
        for row in dropped:
            self._unindex(row[2])

    def _index(self, seq: int, envelope_id: str, coalesce_key: str | None) -> None:
        if not self._seqs or seq > self._seqs[-1]:
            self._seqs.append(seq)
        else:
            bisect.insort(self._seqs, seq)
        self._seq_of[envelope_id] = seq
        if coalesce_key is not None:
            self._key_of[envelope_id] = coalesce_key
            self._by_key[coalesce_key] = envelope_id

    def _unindex(self, envelope_id: str) -> None:
        seq = self._seq_of.pop(envelope_id, None)
        key = self._key_of.pop(envelope_id, None)
        if key is not None and self._by_key.get(key) == envelope_id:
            del self._by_key[key]
        if seq is not None:
            i = bisect.bisect_left(self._seqs, seq)
            if i < len(self._seqs) and self._seqs[i] == seq:
                del self._seqs[i]

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            # sqlite may have rolled back by itself (SQLITE_FULL can): a second ROLLBACK
            # would fail and hide the error that matters.
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def peek(self, after_seq: int, limit: int) -> list[OutboxEntry]:
        start = bisect.bisect_right(self._seqs, after_seq)
        wanted = self._seqs[start:start + limit] if limit > 0 else []
        if not wanted:
            return []  # nothing new: the drain asks after every ack
        # The rows in that range, less those acked whose delete is not committed yet.
        rows = [r for r in self._db.execute(
            "SELECT seq, envelope_id, op, ref, body FROM outbox WHERE seq > ? AND seq <= ?"
            " ORDER BY seq", (after_seq, wanted[-1])) if r[1] in self._seq_of]
        return [
            OutboxEntry(
                seq=r[0], envelope_id=r[1], op=Op(r[2]),
                ref=self._ref(r[3]) if r[3] else None,
                body=json.loads(r[4]),
            )
            for r in rows
        ]

    def _ref(self, ref_json: str) -> ObjectRef:
        # ObjectRef is frozen, so one parsed instance can serve every entry of an object.
        ref = self._refs.get(ref_json)
        if ref is None:
            if len(self._refs) >= _REF_CACHE_LIMIT:
                self._refs.clear()
            ref = self._refs[ref_json] = ObjectRef.model_validate_json(ref_json)
        return ref

    def count_upto(self, seq: int) -> int:
        """How many entries with a sequence number <= ``seq`` are still here (sent and
        not yet acked, when ``seq`` is the last one sent)."""
        return bisect.bisect_right(self._seqs, seq)

    def remove(self, envelope_id: str) -> bool:
        """The cloud has the entry: it leaves the outbox (its row within FLUSH_DELAY)."""
        if envelope_id not in self._seq_of:
            return False  # already removed (a duplicate ack), coalesced or dropped
        self._unindex(envelope_id)
        self._acked.append(envelope_id)
        if len(self._acked) >= _FLUSH_AT:
            self.flush()
        elif self._flush_timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop to wait on: delete it now
                self.flush()
            else:
                self._flush_timer = loop.call_later(FLUSH_DELAY, self.flush)
        return True

    def flush(self) -> None:
        """Delete the rows of the entries acked so far (close does it too)."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        acked = self._acked
        if not acked:
            return
        try:
            with self._tx():
                self._db.executemany(_DELETE, [(acked_id,) for acked_id in acked])
        except sqlite3.Error:
            # The rows stay (a restart would resend them); the next put or flush retries.
            log.exception("outbox: deleting %d acked entries failed", len(acked))
            return
        self._acked = []

    def __len__(self) -> int:
        return len(self._seqs)

    def close(self) -> None:
        self.flush()
        self._db.close()
