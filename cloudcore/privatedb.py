"""Opening the cloud's small secret-bearing sqlite files (users, revocations).

The file is created 0600 before sqlite touches it, so it is never readable by others,
not even for a moment; WAL with synchronous=FULL, because every write to these files
is acknowledged to an admin and must survive a power cut.  One connection, shared by
threads behind the caller's lock.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path


def open_private_db(path: Path) -> sqlite3.Connection:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn
