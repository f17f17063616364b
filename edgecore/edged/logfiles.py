"""A process's output kept in bounded rotating files.

edgecore reads the replica's stdout and stderr pipes and appends what comes to
``stdout.log`` / ``stderr.log``.  A file never grows past ``max_bytes``: when the next
chunk would not fit, ``name.log`` becomes ``name.log.1`` (``.1`` becomes ``.2``, …) and
the oldest beyond ``files`` is dropped, so a stream takes at most ``files * max_bytes``
bytes of disk however chatty the app is.  Files are opened unbuffered: what the app
wrote is on disk (for the log center, or someone with ``tail``) when the chunk arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 16


class RotatingLog:
    def __init__(self, path: Path, *, max_bytes: int, files: int) -> None:
        if max_bytes < 1 or files < 1:
            raise ValueError("a log needs at least one file of at least one byte")
        self.path = path
        self.max_bytes = max_bytes
        self.files = files
        self._out: BinaryIO | None = None
        self._size = 0

    def paths(self) -> list[Path]:
        """The current file first, then the rotated ones, newest first."""
        return [self.path] + [self._rotated(i) for i in range(1, self.files)]

    def _rotated(self, i: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{i}")

    def _open(self) -> BinaryIO:
        if self._out is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._out = open(self.path, "ab", buffering=0)
            self._size = self._out.tell()
        return self._out

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            out = self._open()
            room = self.max_bytes - self._size
            if room <= 0:
                self._rotate()
                continue
            piece = view[:room]
            out.write(piece)
            self._size += len(piece)
            view = view[len(piece):]

    def _rotate(self) -> None:
        self.close()
        if self.files == 1:
            self.path.unlink(missing_ok=True)
            return
        for i in range(self.files - 1, 0, -1):
            older = self._rotated(i - 1) if i > 1 else self.path
            if older.exists():
                os.replace(older, self._rotated(i))

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


async def pump(reader: asyncio.StreamReader, sink: RotatingLog) -> None:
    """Copy ``reader`` into ``sink`` until the pipe closes; closes the sink.

    The pipe is drained even when the disk refuses the writes: an app must never block
    on a full pipe because its log cannot be kept."""
    broken = False
    try:
        while chunk := await reader.read(READ_CHUNK):
            if broken:
                continue
            try:
                sink.write(chunk)
            except OSError as exc:
                broken = True
                log.warning("edged: cannot write %s (%s); discarding this output",
                            sink.path, exc)
    finally:
        with contextlib.suppress(OSError):
            sink.close()
