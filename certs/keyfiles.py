"""Writing and reading key material safely (standard library only).

Writes are atomic: the data goes to a temporary file in the same directory, created
with its final mode from the start (so a private key is never readable by others, not
even for a moment), is fsynced, renamed over the target, and the directory is fsynced so
the rename survives a power cut. A reader therefore sees the old file or the new one,
never half of either: that matters for edge devices that lose power at any time.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from certs.errors import CertError, InsecureKeyFile

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644


def write_private(path: Path, data: bytes) -> None:
    """Atomically write ``data`` to ``path`` with mode 0600."""
    _write_atomically(Path(path), data, PRIVATE_MODE)


def write_public(path: Path, data: bytes) -> None:
    """Atomically write ``data`` to ``path`` with mode 0644 (certificates, CA bundles)."""
    _write_atomically(Path(path), data, PUBLIC_MODE)


def check_private_key_file(path: Path) -> None:
    """Raise InsecureKeyFile if group or others have any permission on ``path``."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise CertError(f"private key {path} does not exist") from None
    if mode & 0o077:
        raise InsecureKeyFile(path, stat.S_IMODE(mode))


def read_private(path: Path, *, what: str = "private key") -> bytes:
    """Read a private key file after checking that only its owner can read it.

    The mode is checked on the opened file descriptor, so the file cannot be swapped
    between the check and the read. ``what`` names the file in errors (another secret,
    such as a passphrase file, gets the same treatment).
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CertError(f"{what} {path} does not exist") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if mode & 0o077:
            raise InsecureKeyFile(path, stat.S_IMODE(mode), what)
        return f.read()


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    directory = path.parent
    tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
    # O_EXCL: never follow a planted symlink or reuse someone else's file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            # The umask may have removed bits from ``mode``; set it exactly.
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
