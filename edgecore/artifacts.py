"""App artifacts on the edge: downloaded from the cloud over this node's mutual-TLS
identity, verified by SHA-256, kept in a content-addressed cache.

``DIR/artifacts/<sha256>`` (0600) is only ever a file whose content hashes to its name:
a download goes to ``.partial-<sha256>``, is hashed as it is written, and is renamed into
place only when the hash matches.  The cached file is hashed again on every
:meth:`ArtifactFetcher.fetch`, so a file changed on disk is fetched anew rather than run.

The cloud serves ``GET /artifacts/<sha256>`` on the hub's port (the ``wss://`` address in
edgecore.yaml) to registered nodes, one ``Range`` of at most a few MiB per connection;
the fetcher asks for ``chunk_bytes`` at a time and keeps what it has between attempts,
so a download cut by a flaky link goes on where it stopped.  Standard library only.

Failures are :class:`ArtifactError` subclasses whose ``reason`` suits an App's status:
``ArtifactNotFound`` (the cloud has no such artifact), ``ArtifactUnavailable`` (the cloud
could not be reached or failed; worth retrying), ``ArtifactForbidden`` (the cloud does
not accept this node), ``ArtifactMismatch`` (the bytes do not hash to the address).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from certs.tls import client_context
from edgecore.certstate import load_state
from edgecore.config import EdgePaths

log = logging.getLogger(__name__)

DEFAULT_CHUNK_BYTES = 1024 * 1024
"""Per request.  The hub must deliver each answer within its close timeout (5 s), so
this should take well under 5 s on the node's link (1 MiB needs ~2 Mbit/s)."""
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
_PARTIAL = ".partial-"
_MAX_ERROR_BODY = 64 * 1024
_PIECE = 64 * 1024


class ArtifactError(Exception):
    """Why an artifact is not available; ``reason`` is a short CamelCase word."""

    reason = "ArtifactError"

    def __init__(self, sha256: str, message: str) -> None:
        super().__init__(message)
        self.sha256 = sha256


class ArtifactNotFound(ArtifactError):
    reason = "ArtifactNotFound"


class ArtifactUnavailable(ArtifactError):
    reason = "ArtifactUnavailable"


class ArtifactForbidden(ArtifactError):
    reason = "ArtifactForbidden"


class ArtifactMismatch(ArtifactError):
    reason = "ArtifactMismatch"

    def __init__(self, sha256: str, actual: str, size: int) -> None:
        super().__init__(sha256, f"artifact {sha256}: the {size} bytes downloaded hash to "
                                 f"{actual}, not to {sha256}; refusing to use them")
        self.actual = actual


class _Reply:
    def __init__(self, status: int, headers: dict[str, str], reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.status = status
        self.headers = headers
        self.reader = reader
        self.writer = writer

    @property
    def length(self) -> int:
        value = self.headers.get("content-length", "")
        if not (value.isascii() and value.isdigit()):  # "²".isdigit() is True
            raise ValueError(f"the answer has no usable Content-Length ({value!r})")
        return int(value)


class ArtifactFetcher:
    """``await fetcher.fetch(sha256)`` → the path of a verified copy in the cache.

    ``hub_url`` is edgecore.yaml's ``hub`` (``wss://HOST:PORT``); the node's current
    certificate and key (``pki/node.json``) are loaded on every fetch, so a renewal is
    picked up.  Concurrent fetches of one artifact share a single download."""

    def __init__(self, paths: EdgePaths, hub_url: str, *,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, timeout: float = 30.0) -> None:
        parts = urlsplit(hub_url)
        if parts.scheme not in ("wss", "https") or not parts.hostname:
            raise ValueError(f"the hub address {hub_url!r} is not wss://HOST:PORT")
        if chunk_bytes < 1:
            raise ValueError("chunk_bytes must be positive")
        self.paths = paths
        self.root = paths.root / "artifacts"
        self.host = parts.hostname
        self.port = parts.port or 443
        self._host_header = parts.netloc
        self.chunk_bytes = chunk_bytes
        self.timeout = timeout
        self._locks: dict[str, asyncio.Lock] = {}

    def cache_path(self, sha256: str) -> Path:
        return self.root / _checked(sha256)

    async def fetch(self, sha256: str) -> Path:
        """A path whose content hashes to ``sha256``: the cached copy if it still does,
        else a fresh download.  Raises an :class:`ArtifactError` saying why not."""
        path = self.cache_path(sha256)
        lock = self._locks.setdefault(sha256, asyncio.Lock())
        async with lock:
            if await asyncio.to_thread(self._cached_ok, path):
                return path
            await asyncio.to_thread(self._prepare_dir)
            await self._download(sha256, path)
            return path

    def prune(self, keep: Iterable[str]) -> list[str]:
        """Remove cached artifacts not in ``keep`` (and abandoned partial downloads of
        them); return the addresses removed."""
        wanted = set(keep)
        removed: list[str] = []
        if not self.root.is_dir():
            return removed
        for path in self.root.iterdir():
            sha = path.name.removeprefix(_PARTIAL)
            if _SHA256.fullmatch(sha) and sha not in wanted:
                path.unlink(missing_ok=True)
                if sha == path.name:
                    removed.append(sha)
        return sorted(removed)

    # ---- cache --------------------------------------------------------------------------

    def _cached_ok(self, path: Path) -> bool:
        try:
            actual = _hash_file(path)
        except FileNotFoundError:
            return False
        if actual == path.name:
            return True
        log.warning("cached artifact %s was changed on disk (it hashes to %s); "
                    "downloading it again", path.name, actual)
        path.unlink(missing_ok=True)
        return False

    def _prepare_dir(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    # ---- download -----------------------------------------------------------------------

    async def _download(self, sha256: str, path: Path) -> None:
        partial = self.root / f"{_PARTIAL}{sha256}"
        ctx = await asyncio.to_thread(self._tls)
        digest = hashlib.sha256()
        # What an earlier, interrupted attempt got is kept and continued from.
        offset = resumed = await asyncio.to_thread(_hash_into, partial, digest)
        if resumed:
            log.info("artifact %s: resuming the download at byte %d", sha256, offset)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as out:
            total: int | None = None
            while total is None or offset < total:
                got, total = await self._fetch_chunk(ctx, sha256, offset, out, digest)
                offset += got
            await asyncio.to_thread(_sync, out)
        actual = digest.hexdigest()
        if actual != sha256:
            partial.unlink(missing_ok=True)
            if resumed:
                # The kept part may be what is wrong (written by a crashed edgecore):
                # one more try from the first byte before calling the cloud's copy bad.
                log.warning("artifact %s: the resumed download hashes to %s; downloading "
                            "it again from the start", sha256, actual)
                await self._download(sha256, path)
                return
            log.error("artifact %s: downloaded content hashes to %s; discarded", sha256, actual)
            raise ArtifactMismatch(sha256, actual, offset)
        os.replace(partial, path)
        log.info("artifact %s downloaded and verified (%d bytes)", sha256, offset)

    async def _fetch_chunk(self, ctx: ssl.SSLContext, sha256: str, offset: int,
                           out: IO[bytes], digest: Any) -> tuple[int, int]:
        """Append the next span to ``out``; return (bytes got, artifact size)."""
        where = f"{self.host}:{self.port}"
        end = offset + self.chunk_bytes - 1
        try:
            async with asyncio.timeout(self.timeout):
                reply = await self._request(ctx, sha256, f"bytes={offset}-{end}")
                try:
                    if reply.status == 416 and offset > 0:
                        # An earlier attempt already got every byte (or more).
                        return 0, _unsatisfied_size(reply.headers.get("content-range"))
                    if reply.status != 206:
                        raise self._refusal(sha256, reply.status,
                                            await _read_error(reply, where))
                    start, last, total = _content_range(reply.headers.get("content-range"))
                    if start != offset or reply.length != last - start + 1:
                        raise ValueError(f"asked for byte {offset} on, got {start}-{last} "
                                         f"in {reply.length} bytes")
                    await _copy(reply.reader, reply.length, out, digest)
                    return reply.length, total
                finally:
                    await _close(reply.writer)
        except ArtifactError:
            raise
        except TimeoutError:
            raise ArtifactUnavailable(sha256, f"artifact {sha256}: the cloud at {where} did not "
                                              f"answer within {self.timeout:g} s") from None
        except (OSError, ssl.SSLError, EOFError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, ValueError) as exc:
            raise ArtifactUnavailable(
                sha256, f"artifact {sha256}: cannot download it from the cloud at {where}: "
                        f"{_describe(exc)}") from None

    async def _request(self, ctx: ssl.SSLContext, sha256: str, byte_range: str) -> _Reply:
        reader, writer = await asyncio.open_connection(
            self.host, self.port, ssl=ctx, server_hostname=self.host)
        try:
            writer.write(
                f"GET /artifacts/{sha256} HTTP/1.1\r\nHost: {self._host_header}\r\n"
                f"Range: {byte_range}\r\nUser-Agent: edgecore\r\nConnection: close\r\n\r\n"
                .encode("ascii"))
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status, headers = _parse_head(head)
        except BaseException:
            await _close(writer)
            raise
        return _Reply(status, headers, reader, writer)

    def _refusal(self, sha256: str, status: int, message: str) -> ArtifactError:
        text = f"artifact {sha256}: {message}"
        if status == 404:
            return ArtifactNotFound(sha256, text)
        if status == 403:
            return ArtifactForbidden(sha256, text)
        return ArtifactUnavailable(sha256, text)

    def _tls(self) -> ssl.SSLContext:
        state = load_state(self.paths.pki)
        pki = self.paths.pki
        return client_context(self.paths.ca, pki / state.cert, pki / state.key)


# ---- helpers ------------------------------------------------------------------------------


def _checked(sha256: str) -> str:
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"{sha256!r} is not an artifact address (64 lower-case hex digits)")
    return sha256


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    _hash_into(path, digest, missing_ok=False)
    return digest.hexdigest()


def _hash_into(path: Path, digest: Any, *, missing_ok: bool = True) -> int:
    """Feed ``path``'s content to ``digest``; return its size (0 if absent and allowed)."""
    size = 0
    try:
        with path.open("rb") as f:
            while block := f.read(1024 * 1024):
                digest.update(block)
                size += len(block)
    except FileNotFoundError:
        if not missing_ok:
            raise
    return size


def _sync(f: IO[bytes]) -> None:
    f.flush()
    os.fsync(f.fileno())


async def _copy(reader: asyncio.StreamReader, length: int, out: IO[bytes],
                digest: Any) -> None:
    left = length
    while left:
        piece = await reader.read(min(left, _PIECE))
        if not piece:
            raise EOFError(f"the connection closed with {left} bytes of the answer missing")
        digest.update(piece)
        out.write(piece)
        left -= len(piece)


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not (
            parts[1].isascii() and parts[1].isdigit()):
        raise ValueError(f"not an HTTP answer: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def _unsatisfied_size(value: str | None) -> int:
    match = re.fullmatch(r"bytes \*/(\d+)", value or "")
    if match is None:
        raise ValueError(f"a 416 answer without a usable Content-Range ({value!r})")
    return int(match.group(1))


def _content_range(value: str | None) -> tuple[int, int, int]:
    match = _CONTENT_RANGE.fullmatch(value or "")
    if match is None:
        raise ValueError(f"the answer has no usable Content-Range ({value!r})")
    start, last, total = (int(g) for g in match.groups())
    if not start <= last < total:
        raise ValueError(f"the answer's Content-Range {value!r} is inconsistent")
    return start, last, total


async def _read_error(reply: _Reply, where: str) -> str:
    """The message of an error answer (a Status body), else its status code."""
    try:
        body = await reply.reader.readexactly(min(reply.length, _MAX_ERROR_BODY))
        message = json.loads(body).get("message")
        if isinstance(message, str) and message:
            return f"the cloud at {where} answered {reply.status}: {message}"
    except (ValueError, AttributeError, OSError, EOFError, asyncio.IncompleteReadError):
        pass
    return f"the cloud at {where} answered {reply.status}"


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 2)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS verification failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
