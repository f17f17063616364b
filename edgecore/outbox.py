"""The edge's upstream outbox: durable, bounded, coalescing.

Everything the edge must tell the cloud (object statuses, later twin reports and
logs) is written here first, in one sqlite transaction, and leaves only when the
cloud acks it — so a disconnect, a cloud restart or a kill -9 of edgecore loses
nothing.  Entries carrying a coalescing key replace the unsent entry with the same
key (only the latest status of an object matters).  The table is bounded: when it
is full the oldest entry is dropped, counted and logged, so a week offline cannot
fill the disk.  Reading it never blocks start-up: the drain runs in the background
(Greengrass's spooler blocked component start-up for minutes; see anchors §3.5).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.envelope import Envelope, ObjectRef, Op, make, new_id

log = logging.getLogger(__name__)


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
    def __init__(self, conn: sqlite3.Connection, limit: int) -> None:
        self._db = conn
        self.limit = limit
        self.dropped = 0

    @classmethod
    def open(cls, path: Path, limit: int = 10_000) -> Outbox:
        conn = sqlite3.connect(path, isolation_level=None)
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
        return cls(conn, limit)

    def put(self, op: Op, ref: ObjectRef | None, body: Any, coalesce_key: str | None = None) -> str:
        """Durably queue one message; returns its envelope id."""
        envelope_id = new_id()
        ref_json = ref.model_dump_json() if ref is not None else None
        with self._tx():
            if coalesce_key is not None:
                self._db.execute("DELETE FROM outbox WHERE coalesce_key = ?", (coalesce_key,))
            self._db.execute(
                "INSERT INTO outbox (envelope_id, coalesce_key, op, ref, body)"
                " VALUES (?, ?, ?, ?, ?)",
                (envelope_id, coalesce_key, op.value, ref_json, json.dumps(body)),
            )
            (count,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
            excess = count - self.limit
            if excess > 0:
                rows = self._db.execute(
                    "SELECT seq, coalesce_key FROM outbox ORDER BY seq LIMIT ?", (excess,)
                ).fetchall()
                self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(r[0],) for r in rows])
                self.dropped += len(rows)
                log.warning(
                    "outbox full (limit %d): dropped %d oldest message(s) (%s); "
                    "%d dropped since start", self.limit, len(rows),
                    ", ".join(str(r[1] or r[0]) for r in rows), self.dropped,
                )
        return envelope_id

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def peek(self, after_seq: int, limit: int) -> list[OutboxEntry]:
        rows = self._db.execute(
            "SELECT seq, envelope_id, op, ref, body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        return [
            OutboxEntry(
                seq=r[0], envelope_id=r[1], op=Op(r[2]),
                ref=ObjectRef.model_validate_json(r[3]) if r[3] else None,
                body=json.loads(r[4]),
            )
            for r in rows
        ]

    def count_upto(self, seq: int) -> int:
        """How many entries with a sequence number <= ``seq`` are still here (sent and
        not yet acked, when ``seq`` is the last one sent)."""
        (count,) = self._db.execute("SELECT COUNT(*) FROM outbox WHERE seq <= ?", (seq,)).fetchone()
        return int(count)

    def remove(self, envelope_id: str) -> bool:
        cur = self._db.execute("DELETE FROM outbox WHERE envelope_id = ?", (envelope_id,))
        return cur.rowcount > 0

    def __len__(self) -> int:
        (count,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        return int(count)

    def close(self) -> None:
        self._db.close()
