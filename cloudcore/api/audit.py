"""The audit log: who changed what through the API, and who was turned away.

KubeEdge's threat model counts insiders with API access among its threats; the answer
besides roles is a record they cannot talk their way out of.  One JSON line per
request that changes something (POST, PUT, PATCH, DELETE) and per request refused for
want of a token or a role (401, 403), in ``DIR/audit.log`` (0600, owner only):

    {"time": "...Z", "user": "olga", "role": "operator", "method": "PUT",
     "path": "/apis/...", "status": 200, "remote": "127.0.0.1"}

Reads are not recorded (a watch-heavy fleet would drown the file).  Never recorded:
headers (the bearer token), bodies (join tokens, twin values) and query strings.  The
file is rotated once it passes ``max_bytes``, keeping one old generation
(``audit.log.1``), so an edge-sized disk is never filled by it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloudcore.api.authn import principal_in

log = logging.getLogger(__name__)

_CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_REFUSALS = frozenset({401, 403})


class AuditLog:
    """An append-only JSON-lines file, mode 0600, rotated at ``max_bytes``."""

    def __init__(self, path: Path, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def record(self, entry: dict[str, object]) -> None:
        line = (json.dumps(entry, sort_keys=True) + "\n").encode("utf-8")
        with self._lock:
            try:
                self._rotate_if_full(len(line))
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                             0o600)
                try:
                    os.write(fd, line)  # one write: lines never interleave
                finally:
                    os.close(fd)
            except OSError as exc:
                # A full disk must not turn every API call into a 500; say it loudly.
                log.error("cannot write the audit log %s: %s", self.path, exc)

    def _rotate_if_full(self, incoming: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size + incoming > self.max_bytes:
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))


class AuditMiddleware:
    """Outermost layer: it sees the final status, after errors became Status bodies,
    and the caller that BearerAuthMiddleware found further in."""

    def __init__(self, app: ASGIApp, audit: AuditLog) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client sees if the app dies before answering

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            method = str(scope.get("method", ""))
            if method in _CHANGING_METHODS or status in _REFUSALS:
                self.audit.record(_entry(scope, method, status))


def _entry(scope: Scope, method: str, status: int) -> dict[str, object]:
    principal = principal_in(scope)
    client = scope.get("client")
    return {
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "user": principal.name if principal else None,
        "role": principal.role.value if principal else None,
        "method": method,
        "path": str(scope.get("path", "")),
        "status": status,
        "remote": client[0] if client else None,
    }
