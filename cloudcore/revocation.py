"""Node revocation: cutting a lost or stolen node off for good.

Every certificate the cloud signs for a node (at join and at renewal) is recorded with
its serial number.  Revoking a node moves all of them onto the revocation list, which
lives in an sqlite file of its own in the data directory, so it survives restarts.  The
hub consults the list when a node connects and when it asks for a renewal; a revoked
certificate is refused from then on.

One more rule closes the gap for certificates that were never recorded (signed by an
older cloudcore, or lost in a crash between signing and recording): once a node has been
revoked, only certificates recorded as issued to it *after* its latest revocation are
accepted.  That is what makes the documented recovery path safe: an admin issues a new
join token, the node joins again and gets a new certificate; every older one stays
revoked.

Methods are synchronous and thread-safe (one connection behind a lock).
:meth:`RevocationList.is_revoked` answers from memory, cheap enough for every
connection; the writers fsync, so async callers run :meth:`RevocationList.revoke` in a
thread.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from certs.csr import cert_serial, cert_validity
from cloudcore.privatedb import open_private_db
from protocol.errors import NotFound

log = logging.getLogger(__name__)


def serial_hex(serial: int) -> str:
    """How serials are stored and shown: upper-case hex without leading zeros, the form
    ``openssl x509 -serial`` prints (minus its zero padding)."""
    return f"{serial:X}"


def peer_serial(peercert: dict[str, Any] | None) -> int | None:
    """The serial number from ``SSLSocket.getpeercert()`` / the transport's
    ``"peercert"`` (a hex string there), or None when it is missing or unreadable."""
    if not peercert:
        return None
    value = peercert.get("serialNumber")
    if not isinstance(value, str):
        return None
    try:
        return int(value, 16)
    except ValueError:
        return None


def certificate_serial(cert_pem: bytes) -> tuple[int, datetime]:
    """(serial, notAfter) of a PEM certificate the cloud has just signed."""
    return cert_serial(cert_pem), cert_validity(cert_pem)[1]


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Revocation:
    """The outcome of one revocation."""

    node: str
    revoked_at: str  # RFC 3339, UTC
    revoked_by: str
    serials: tuple[str, ...]  # the certificates this revocation added to the list


class RevocationList:
    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self.path = path
        # Memory mirrors of the tables the hot path reads.
        self._revoked: set[int] = set()
        self._revoked_nodes: set[str] = set()
        # Per revoked node: serials issued to it after its latest revocation.
        self._issued_since: dict[str, set[int]] = {}
        self._load()

    @classmethod
    def open(cls, path: Path) -> RevocationList:
        path = Path(path)
        conn = open_private_db(path)
        conn.executescript(
            """CREATE TABLE IF NOT EXISTS issued_certs (
                   serial TEXT PRIMARY KEY,
                   node TEXT NOT NULL,
                   not_after TEXT NOT NULL,
                   issued TEXT NOT NULL
               );
               CREATE INDEX IF NOT EXISTS issued_certs_node ON issued_certs (node);
               CREATE TABLE IF NOT EXISTS revoked_certs (
                   serial TEXT PRIMARY KEY,
                   node TEXT NOT NULL,
                   revoked TEXT NOT NULL,
                   revoked_by TEXT NOT NULL
               );
               CREATE TABLE IF NOT EXISTS revoked_nodes (
                   node TEXT PRIMARY KEY,
                   revoked TEXT NOT NULL,
                   revoked_by TEXT NOT NULL
               );"""
        )
        return cls(conn, path)

    def _load(self) -> None:
        with self._lock:
            self._revoked = {int(s, 16) for (s,) in
                             self._conn.execute("SELECT serial FROM revoked_certs")}
            self._revoked_nodes = {str(n) for (n,) in
                                   self._conn.execute("SELECT node FROM revoked_nodes")}
            self._issued_since = {node: set() for node in self._revoked_nodes}
            rows = self._conn.execute(
                "SELECT i.serial, i.node FROM issued_certs i JOIN revoked_nodes r "
                "ON i.node = r.node WHERE i.serial NOT IN (SELECT serial FROM revoked_certs)")
            for serial, node in rows:
                self._issued_since[str(node)].add(int(serial, 16))

    def record_issued(self, node: str, cert_pem: bytes) -> None:
        """Remember a certificate just signed for ``node``, before it is handed out."""
        serial, not_after = certificate_serial(cert_pem)
        now = _rfc3339(datetime.now(UTC))
        with self._lock:
            self._conn.execute(
                "INSERT OR IGNORE INTO issued_certs (serial, node, not_after, issued) "
                "VALUES (?, ?, ?, ?)", (serial_hex(serial), node, _rfc3339(not_after), now))
            if node in self._revoked_nodes:
                self._issued_since[node].add(serial)

    def nodes_holding_certificates(self) -> set[str]:
        """Nodes with at least one issued certificate that is not revoked."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT DISTINCT node FROM issued_certs "
                "WHERE serial NOT IN (SELECT serial FROM revoked_certs)").fetchall()
        return {str(node) for (node,) in rows}

    def knows(self, node: str) -> bool:
        """Whether a certificate was ever recorded for ``node`` (or it was revoked)."""
        with self._lock:
            if node in self._revoked_nodes:
                return True
            row = self._conn.execute(
                "SELECT 1 FROM issued_certs WHERE node = ? LIMIT 1", (node,)).fetchone()
        return row is not None

    def revoke(self, node: str, by: str, now: datetime | None = None) -> Revocation:
        """Revoke every certificate issued to ``node`` so far (and, by the rule in the
        module docstring, any unrecorded one).  Revoking again is harmless: it adds
        whatever was issued since and moves the node's revocation time forward."""
        at = _rfc3339(now or datetime.now(UTC))
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                serials = [str(s) for (s,) in self._conn.execute(
                    "SELECT serial FROM issued_certs WHERE node = ? AND serial NOT IN "
                    "(SELECT serial FROM revoked_certs) ORDER BY issued, serial", (node,))]
                self._conn.executemany(
                    "INSERT INTO revoked_certs (serial, node, revoked, revoked_by) "
                    "VALUES (?, ?, ?, ?)", [(s, node, at, by) for s in serials])
                self._conn.execute(
                    "INSERT INTO revoked_nodes (node, revoked, revoked_by) VALUES (?, ?, ?) "
                    "ON CONFLICT (node) DO UPDATE SET revoked = excluded.revoked, "
                    "revoked_by = excluded.revoked_by", (node, at, by))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._revoked.update(int(s, 16) for s in serials)
            self._revoked_nodes.add(node)
            self._issued_since[node] = set()
        return Revocation(node=node, revoked_at=at, revoked_by=by, serials=tuple(serials))

    def is_revoked(self, node: str, serial: int | None) -> bool:
        """Whether a certificate for ``node`` with ``serial`` must be refused."""
        with self._lock:
            if serial is not None and serial in self._revoked:
                return True
            if node in self._revoked_nodes:
                return serial is None or serial not in self._issued_since[node]
            return False

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class NodeRevoker:
    """``efctl node revoke NAME``: record the revocation, then cut the node's link."""

    def __init__(
        self,
        revocations: RevocationList,
        node_exists: Callable[[str], Awaitable[bool]],
        cut_off: Callable[[str], Awaitable[bool]],
    ) -> None:
        self._revocations = revocations
        self._node_exists = node_exists
        self._cut_off = cut_off

    async def revoke(self, node: str, by: str) -> tuple[Revocation, bool]:
        """Returns the revocation and whether a live link was closed.  A node is known
        while its Node object exists, and also after it was deleted as long as the cloud
        has issued it a certificate (deleting a Node revokes its certificates too:
        :meth:`forget_deleted`)."""
        if not await self._node_exists(node) and not self._revocations.knows(node):
            raise NotFound(f"node {node} does not exist")
        # Recorded durably before the link goes: a crash in between still refuses the
        # node when it reconnects.
        revocation = await asyncio.to_thread(self._revocations.revoke, node, by)
        disconnected = await self._cut_off(node)
        log.warning("node %s: %d certificate(s) revoked by %s%s", node,
                    len(revocation.serials), by, "; its link was closed" if disconnected else "")
        return revocation, disconnected

    async def node_deleted(self, node: str) -> None:
        """Revoke the certificates of a node whose Node object was deleted.

        A deleted node must not come back with its old certificate when someone joins
        the same name again (a join needs a fresh token and issues a fresh certificate).
        If the name was joined again in the meantime, its new certificate is left alone."""
        if not await self._node_exists(node):
            await self._revoke_deleted(node)

    async def forget_deleted(self, existing: set[str]) -> None:
        """At start, before joins are served: revoke the certificates of every node
        whose Node object is gone (a crash between a deletion and its revocation)."""
        for node in sorted(self._revocations.nodes_holding_certificates() - existing):
            await self._revoke_deleted(node)

    async def _revoke_deleted(self, node: str) -> None:
        revocation = await asyncio.to_thread(self._revocations.revoke, node,
                                             "deletion of the Node")
        if revocation.serials:
            log.info("node %s was deleted: its %d certificate(s) are revoked", node,
                     len(revocation.serials))
