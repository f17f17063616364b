"""A byte cap on one of the edge's own sqlite files (outbox.db, twin.db).

An edge device often has a small flash disk shared with its applications; a cloud away
for a week, or a device app flooding twin updates, must not fill it.  The cap is
sqlite's ``max_page_count``, derived from a byte limit: a write that needs a page past
it fails with ``SQLITE_FULL``, sqlite undoes the statement (or the whole transaction),
and the caller turns that into :class:`~protocol.errors.StoreFull`.  Reads, deletes and
updates that fit in the pages already allocated keep working.  The cap cannot shrink a
file below its current size: a file reopened with a smaller cap just stops growing.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from protocol.errors import StoreFull


def cap_size(conn: sqlite3.Connection, max_bytes: int | None) -> None:
    """Limit ``conn``'s main database to ``max_bytes`` (rounded down to whole pages;
    None leaves it unlimited).  Per connection: set it on every open."""
    if max_bytes is None:
        return
    page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    conn.execute(f"PRAGMA max_page_count = {max(1, max_bytes // page_size)}")


def is_full(exc: BaseException) -> bool:
    """Whether ``exc`` is sqlite saying the database (or the disk) is full."""
    return (isinstance(exc, sqlite3.Error)
            and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL)


def store_full(path: Path, max_bytes: int | None, what: str) -> StoreFull:
    """The error a write to the capped file at ``path`` reports when it does not fit."""
    if max_bytes is None:
        return StoreFull(f"store is full: the disk holding {path} has no space left")
    return StoreFull(f"store is full (cap {max_bytes} bytes): {path.name} cannot hold "
                     f"{what}; raise the cap (edgecore config {_setting(path)})")


def _setting(path: Path) -> str:
    return {"outbox.db": "storage.outboxMaxBytes",
            "twin.db": "storage.twinMaxBytes"}.get(path.name, "storage")
