"""Durable twin state on the edge: one row per device (twin JSON, state, last online)
and the mappers registered over DMI, in sqlite.

WAL with ``synchronous=NORMAL``: every commit is in the WAL before the update is
answered, so a kill -9 of edgecore loses nothing acknowledged; only a power cut can lose
the last commits since the previous checkpoint.  That is the right trade here and not in
the meta cache (FULL): reported values are readings that the next poll replaces, desired
values come back from the cloud on resync, while an fsync per twin update capped the
pipeline at a few hundred updates per second (scripts/bench/twin).

MQTT requests are stored a batch at a time (:meth:`TwinStore.save_many`, one transaction
holding each device's latest record), and answered once it has committed."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecore.dbcap import cap_size, is_full, store_full
from protocol.twin import Twin, twin_from_json, twin_to_json


@dataclass
class DeviceRecord:
    twin: Twin
    state: str = "unknown"
    last_online: str = ""


_UPSERT = ("INSERT INTO devices (key, twin, state, last_online) VALUES (?, ?, ?, ?)"
           " ON CONFLICT(key) DO UPDATE SET twin=excluded.twin, state=excluded.state,"
           " last_online=excluded.last_online")


def _row(key: str, record: DeviceRecord) -> tuple[str, bytes, str, str]:
    return key, twin_to_json(record.twin), record.state, record.last_online


class TwinStore:
    def __init__(self, conn: sqlite3.Connection, path: Path | None = None,
                 max_bytes: int | None = None) -> None:
        self._db = conn
        self.path = path or Path("twin.db")
        self.max_bytes = max_bytes

    @classmethod
    def open(cls, path: Path, max_bytes: int | None = None) -> TwinStore:
        """Open (creating) the store at ``path``; with ``max_bytes`` the file stays at most
        that size and a save that does not fit raises :class:`~protocol.errors.StoreFull`
        having changed nothing."""
        conn = sqlite3.connect(path, isolation_level=None)
        cap_size(conn, max_bytes)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE IF NOT EXISTS devices (key TEXT PRIMARY KEY, twin BLOB NOT NULL,"
                     " state TEXT NOT NULL, last_online TEXT NOT NULL)")
        conn.execute("CREATE TABLE IF NOT EXISTS mappers (protocol TEXT PRIMARY KEY,"
                     " info TEXT NOT NULL)")
        return cls(conn, path, max_bytes)

    def load(self) -> dict[str, DeviceRecord]:
        return {
            key: DeviceRecord(twin_from_json(blob), state, last_online)
            for key, blob, state, last_online in self._db.execute(
                "SELECT key, twin, state, last_online FROM devices")
        }

    def save(self, key: str, record: DeviceRecord) -> None:
        self.save_many([(key, record)])

    def save_many(self, records: Iterable[tuple[str, DeviceRecord]]) -> None:
        """Save several devices in one transaction: all of them, or (raising) none;
        :class:`~protocol.errors.StoreFull` when they do not fit under the cap."""
        rows = [_row(key, record) for key, record in records]
        self._db.execute("BEGIN")
        try:
            self._db.executemany(_UPSERT, rows)
            self._db.execute("COMMIT")
        except BaseException as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if is_full(exc):
                raise store_full(self.path, self.max_bytes,
                                 f"the twins of {len(rows)} device(s)") from exc
            raise

    def drop(self, key: str) -> None:
        self._db.execute("DELETE FROM devices WHERE key = ?", (key,))

    def save_mapper(self, info: dict[str, Any]) -> None:
        try:
            self._db.execute(
                "INSERT INTO mappers (protocol, info) VALUES (?, ?)"
                " ON CONFLICT(protocol) DO UPDATE SET info=excluded.info",
                (str(info["protocol"]), json.dumps(info)))
        except sqlite3.Error as exc:
            if is_full(exc):
                raise store_full(self.path, self.max_bytes, "a mapper's registration") from exc
            raise

    def mappers(self) -> list[dict[str, Any]]:
        return [json.loads(row[0]) for row in self._db.execute("SELECT info FROM mappers")]

    def close(self) -> None:
        self._db.close()
