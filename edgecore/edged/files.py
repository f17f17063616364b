"""The files an App brings into its working directory: config files and artifacts.

Artifacts come from an injected ``fetch_artifact(sha256) -> Path`` (the download over
the node's mTLS identity lives in ``edgecore/artifacts.py``) and are hashed again here,
while being copied: the bytes that land in the working directory are exactly the bytes
that were verified, whatever the fetcher or its cache did.  Nothing runs unless every
artifact matches.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from edgecore.edged.layout import ReplicaDir, SetupError
from protocol.kinds.apps import AppArtifact, AppConfigFile

FetchArtifact = Callable[[str], Awaitable[Path]]
"""``await fetch_artifact(sha256)`` -> a local file said to hold that content.  Raises
(any exception) when it cannot be had; the message is shown in the replica's status."""

ARTIFACT_MISMATCH = "ArtifactMismatch"
ARTIFACT_UNAVAILABLE = "ArtifactUnavailable"

_CHUNK = 1 << 16


def write_config_files(files: Sequence[AppConfigFile], workdir: Path, where: ReplicaDir) -> None:
    for i, cfg in enumerate(files):
        target = where.target(workdir, cfg.path, f"spec.template.config[{i}].path")
        _atomic_write(target, cfg.content.encode(), 0o644)


async def install_artifacts(artifacts: Sequence[AppArtifact], workdir: Path, where: ReplicaDir,
                            fetch: FetchArtifact | None) -> None:
    """Fetch, verify and copy every artifact (mode 0755), or raise :class:`SetupError`
    naming the first that failed and why."""
    for i, art in enumerate(artifacts):
        dest = art.path if art.path is not None else art.name
        target = where.target(workdir, dest, f"spec.template.artifacts[{i}]")
        label = f"artifact {art.name!r} (sha256 {art.sha256[:12]}…)"
        if fetch is None:
            raise SetupError(ARTIFACT_UNAVAILABLE,
                             f"{label}: this edgecore has no way to download artifacts")
        try:
            source = await fetch(art.sha256)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the fetcher's failure, whatever it is, goes to the status
            # A fetcher that checked the hash itself says so with a reason of that name.
            mismatch = getattr(exc, "reason", None) == ARTIFACT_MISMATCH
            raise SetupError(ARTIFACT_MISMATCH if mismatch else ARTIFACT_UNAVAILABLE,
                             f"{label}: download failed: {exc or type(exc).__name__}") from exc
        try:
            digest = await asyncio.to_thread(_copy_verified, Path(source), target, art.sha256)
        except OSError as exc:
            raise SetupError(ARTIFACT_UNAVAILABLE,
                             f"{label}: could not copy {source}: {exc}") from exc
        if digest != art.sha256:
            raise SetupError(ARTIFACT_MISMATCH,
                             f"{label}: the downloaded content hashes to sha256 {digest}, "
                             "not the expected one; refusing to run it")


def _copy_verified(source: Path, target: Path, expected: str) -> str:
    """Copy ``source`` to ``target`` while hashing it; the file is put in place only when
    the hash is ``expected``.  Returns the hash."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.edged-tmp")
    digest = hashlib.sha256()
    try:
        with open(source, "rb") as src, open(tmp, "wb") as out:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        found = digest.hexdigest()
        if found == expected:
            os.chmod(tmp, 0o755)
            os.replace(tmp, target)
        return found
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _atomic_write(target: Path, data: bytes, mode: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.edged-tmp")
    try:
        tmp.write_bytes(data)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
