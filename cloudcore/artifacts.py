"""App artifacts: files pushed with ``efctl artifact push``, stored content-addressed.

Layout under ``DIR/artifacts`` (0700)::

    <sha256>        the content, 0600, named by its own SHA-256
    <sha256>.json   what the pusher said about it: name, size, when, who
    .upload-*       an upload in progress (removed on failure and at start-up)

An upload is hashed while it is written to a temporary file, fsynced and renamed into
place, so a crash never leaves a file whose name does not match its content.  Pushing
the same bytes again changes nothing and says so (``created`` is False).

Edges download over their mutual-TLS identity on the hub's port (``wss://:10000``):
:class:`EdgeDownloads` answers a plain ``GET /artifacts/<sha256>`` there, before any
websocket upgrade, and only for a client certificate whose CN is a registered Node.
The websocket server can only answer with a body held in memory, and must deliver it
within its close timeout, so an edge fetches a large artifact as a series of
``Range`` requests of at most :data:`EDGE_MAX_RANGE_BYTES` each — which also lets an
interrupted download carry on where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from certs.tls import peer_common_name
from cloudcore.revocation import peer_serial
from protocol.errors import BadRequest, EdgefleetError, Forbidden, NotFound, TooLarge

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
EDGE_MAX_RANGE_BYTES = 4 * 1024 * 1024
"""Largest body one edge download response carries (it is held in memory)."""
EDGE_PATH_PREFIX = "/artifacts/"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_WRITE_BLOCK = 1024 * 1024  # uploads reach the disk (and the hash) in blocks of this size
_UPLOAD_PREFIX = ".upload-"
_MAX_NAME = 255
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(EdgefleetError):
    reason = "RequestedRangeNotSatisfiable"
    code = 416


def check_sha256(value: str) -> str:
    """``value`` if it is an artifact address (64 lower-case hex digits), else BadRequest."""
    if not _SHA256.fullmatch(value):
        raise BadRequest(f"{value!r} is not an artifact address: expected the SHA-256 of its "
                         "content as 64 lower-case hex digits", field="sha256")
    return value


def check_name(value: str) -> str:
    """The optional display name: a file name, not a path (it is only metadata)."""
    if (not value or len(value) > _MAX_NAME or "/" in value or "\\" in value
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)):
        raise BadRequest(f"{value!r} is not a usable artifact name: 1-{_MAX_NAME} characters, "
                         "no '/', '\\' or control characters", field="name")
    return value


def too_large(limit: int) -> TooLarge:
    return TooLarge(f"the artifact is larger than the limit of {limit} bytes "
                    "(cloudcore config artifacts.maxBytes)")


@dataclass(frozen=True)
class ArtifactInfo:
    sha256: str
    size: int
    name: str | None = None
    created: str | None = None  # RFC 3339, UTC
    pushedBy: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class ArtifactStore:
    """The artifact directory.  Blocking file work runs in threads; one lock orders the
    renames, so "was it new?" has exactly one answer per content."""

    def __init__(self, root: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    @classmethod
    def open(cls, root: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> ArtifactStore:
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        for stale in root.glob(_UPLOAD_PREFIX + "*"):
            # Left by a crash mid-upload; nobody can finish it.
            stale.unlink(missing_ok=True)
        return cls(root, max_bytes=max_bytes)

    # ---- writing ----------------------------------------------------------------------

    async def put(
        self, chunks: AsyncIterable[bytes], *, name: str | None = None,
        pushed_by: str | None = None,
    ) -> tuple[ArtifactInfo, bool]:
        """Store the bytes ``chunks`` yields; return what is stored and whether it is new.
        :class:`TooLarge` past ``max_bytes`` (nothing is kept), :class:`BadRequest` for
        an empty upload or a bad ``name``."""
        if name is not None:
            check_name(name)
        fd, tmp_name = tempfile.mkstemp(prefix=_UPLOAD_PREFIX, dir=self.root)  # 0600
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as f:
                block = bytearray()
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise too_large(self.max_bytes)
                    block += chunk
                    if len(block) >= _WRITE_BLOCK:
                        await asyncio.to_thread(_write_block, f, digest, bytes(block))
                        block.clear()
                await asyncio.to_thread(_write_block, f, digest, bytes(block), sync=True)
            if size == 0:
                raise BadRequest("the upload is empty: send the artifact's bytes as the body")
            sha = digest.hexdigest()
            meta = ArtifactInfo(sha, size, name,
                                datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), pushed_by)
            created = await asyncio.to_thread(self._commit, Path(tmp_name), meta)
            info = await asyncio.to_thread(self.info, sha)
        finally:
            # Gone already when committed; a failed upload leaves nothing behind.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
        if created:
            log.info("stored artifact %s (%d bytes, name %r, pushed by %s)",
                     sha, size, name, pushed_by)
        return info, created

    def _commit(self, tmp: Path, meta: ArtifactInfo) -> bool:
        final = self.root / meta.sha256
        with self._lock:
            try:
                existing = final.stat().st_size
            except FileNotFoundError:
                existing = None
            if existing == meta.size:
                return False  # same name means same content: nothing to do
            # New, or a damaged copy (wrong size) that this upload repairs.
            os.replace(tmp, final)
            _write_atomically(self._meta_path(meta.sha256),
                              json.dumps(meta.to_json(), indent=2).encode())
            _fsync_dir(self.root)
            return existing is None

    def delete(self, sha256: str) -> ArtifactInfo:
        info = self.info(sha256)
        with self._lock:
            self._meta_path(sha256).unlink(missing_ok=True)
            (self.root / sha256).unlink(missing_ok=True)
            _fsync_dir(self.root)
        log.info("deleted artifact %s (name %r)", sha256, info.name)
        return info

    # ---- reading ----------------------------------------------------------------------

    def path_of(self, sha256: str) -> Path:
        """Where the content lives; :class:`NotFound` when it is not stored."""
        path = self.root / check_sha256(sha256)
        if not path.is_file():
            raise NotFound(f"no artifact {sha256}; push it with `efctl artifact push FILE`")
        return path

    def info(self, sha256: str) -> ArtifactInfo:
        size = self.path_of(sha256).stat().st_size
        try:
            raw = json.loads(self._meta_path(sha256).read_text())
            return ArtifactInfo(sha256, size, raw.get("name"), raw.get("created"),
                                raw.get("pushedBy"))
        except (OSError, ValueError, AttributeError):
            # The content arrived but its description did not (a crash between the two
            # renames): the content is what matters.
            return ArtifactInfo(sha256, size)

    def list(self) -> list[ArtifactInfo]:
        out = []
        for path in self.root.iterdir():
            if _SHA256.fullmatch(path.name):
                try:
                    out.append(self.info(path.name))
                except NotFound:
                    continue  # deleted while listing
        return sorted(out, key=lambda a: (a.created or "", a.sha256))

    def read_range(self, sha256: str, start: int, end: int) -> bytes:
        """Bytes ``start``..``end`` (inclusive) of an artifact."""
        with self.path_of(sha256).open("rb") as f:
            f.seek(start)
            return f.read(end - start + 1)

    def _meta_path(self, sha256: str) -> Path:
        return self.root / f"{sha256}.json"


def _write_block(f: IO[bytes], digest: Any, block: bytes, *, sync: bool = False) -> None:
    digest.update(block)
    f.write(block)
    if sync:
        f.flush()
        os.fsync(f.fileno())


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=_UPLOAD_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- edge downloads on the hub's port ---------------------------------------------------


def parse_range(header: str | None, size: int, max_bytes: int) -> tuple[int, int] | None:
    """The inclusive byte span a ``Range`` header asks for, cut to ``max_bytes``;
    None without a header.  One span only (``bytes=A-B``, ``bytes=A-``, ``bytes=-N``)."""
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        raise BadRequest(f"unsupported Range {header!r}: expected one span, bytes=START-[END]",
                         field="Range")
    first, last = match.group(1), match.group(2)
    if first == "":  # the last N bytes
        start, end = max(0, size - int(last)), size - 1
    else:
        start = int(first)
        end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size or start > end:
        raise RangeNotSatisfiable(f"the artifact has {size} bytes; {header!r} asks for none "
                                  "of them", field="Range")
    return start, min(end, start + max_bytes - 1)


class EdgeDownloads:
    """``GET /artifacts/<sha256>`` on the hub, as its websocket server's
    ``process_request`` hook: every other path returns None and becomes a websocket."""

    def __init__(self, store: ArtifactStore, is_node_allowed: Callable[[str], Awaitable[bool]],
                 *, max_range_bytes: int = EDGE_MAX_RANGE_BYTES,
                 is_cert_revoked: Callable[[str, int | None], bool] = lambda _n, _s: False,
                 ) -> None:
        self.store = store
        self._is_node_allowed = is_node_allowed
        self._is_cert_revoked = is_cert_revoked
        self.max_range_bytes = max_range_bytes

    async def process_request(self, connection: ServerConnection,
                              request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        if not path.startswith(EDGE_PATH_PREFIX):
            return None
        try:
            return await self._serve(connection, path.removeprefix(EDGE_PATH_PREFIX),
                                     request.headers.get("Range"))
        except EdgefleetError as exc:
            headers = None
            if isinstance(exc, RangeNotSatisfiable):
                headers = {"Content-Range": f"bytes */{self._size_or_zero(path)}"}
            return _status_response(exc, headers)
        except Exception:
            log.exception("serving %s failed", path)
            return _status_response(EdgefleetError("the artifact could not be read"))

    async def _serve(self, connection: ServerConnection, sha256: str,
                     range_header: str | None) -> Response:
        peercert = connection.transport.get_extra_info("peercert")
        node = peer_common_name(peercert) if peercert else None
        if not node:
            raise Forbidden("artifacts are served to registered nodes only; the client "
                            "certificate names none")
        if not await self._is_node_allowed(node):
            log.warning("refused an artifact download by %s: no such node", node)
            raise Forbidden(f"node {node} is not registered; join again")
        if self._is_cert_revoked(node, peer_serial(peercert)):
            log.warning("refused an artifact download by node %s: certificate revoked", node)
            raise Forbidden("node certificate revoked; re-join with a new token")
        check_sha256(sha256)
        size = await asyncio.to_thread(lambda: self.store.path_of(sha256).stat().st_size)
        span = parse_range(range_header, size, self.max_range_bytes)
        if span is None:
            if size > self.max_range_bytes:
                raise BadRequest(
                    f"artifact {sha256} has {size} bytes, more than one response carries "
                    f"({self.max_range_bytes}); ask for it in Range requests", field="Range")
            span = (0, size - 1)
        start, end = span
        body = await asyncio.to_thread(self.store.read_range, sha256, start, end)
        if len(body) != end - start + 1:  # replaced or deleted under us
            raise NotFound(f"artifact {sha256} changed while it was read; ask again")
        if start == 0:
            log.info("node %s is downloading artifact %s (%d bytes)", node, sha256, size)
        headers = [("Content-Type", "application/octet-stream"), ("ETag", f'"{sha256}"'),
                   ("Accept-Ranges", "bytes")]
        if range_header is not None:
            headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
            return _response(206, "Partial Content", body, headers)
        return _response(200, "OK", body, headers)

    def _size_or_zero(self, path: str) -> int:
        try:
            return self.store.path_of(path.removeprefix(EDGE_PATH_PREFIX)).stat().st_size
        except (EdgefleetError, OSError):
            return 0


def _response(code: int, phrase: str, body: bytes, headers: list[tuple[str, str]]) -> Response:
    # The websocket server closes the connection after any answer that is not an
    # upgrade; saying so lets HTTP clients know not to reuse it.
    return Response(code, phrase, Headers([
        ("Date", email.utils.formatdate(usegmt=True)),
        ("Connection", "close"),
        ("Content-Length", str(len(body))),
        *headers,
    ]), body)


_PHRASES = {400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            416: "Range Not Satisfiable", 500: "Internal Server Error"}


def _status_response(exc: EdgefleetError, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(exc.to_status()).encode()
    return _response(exc.code, _PHRASES.get(exc.code, exc.reason), body,
                     [("Content-Type", "application/json"), *(headers or {}).items()])
