"""Control channel between the fan-out benchmark and its helper processes.

Each helper (a simulator of edge nodes, the raw websockets server) reads one JSON
command per line on stdin and answers each with one JSON line on stdout; anything it
logs goes to stderr, which the benchmark sends to a file.  Commands are answered in
order, one at a time, so the benchmark needs no request ids.

Every process involved stamps events with ``time.monotonic()``: on Linux that is
CLOCK_MONOTONIC, one clock for the whole machine, so a send stamped in one process and
a receive stamped in another can be subtracted.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

LINE_LIMIT = 64 * 1024 * 1024
"""Longest line either side accepts (an ``expect`` command for 5,000 nodes is ~0.5 MB)."""

PIN_AND_EXEC = (
    "import os, sys\n"
    "cpus = {int(c) for c in sys.argv[1].split(',')}\n"
    "os.sched_setaffinity(0, cpus)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)
"""Run by ``python -c``: pin to CPUs, then exec the real program.  Pinning before exec
means every thread the program ever starts inherits the same CPUs."""


def pinned(argv: Sequence[str], cpus: set[int] | None) -> list[str]:
    """``argv`` wrapped so that it runs only on ``cpus`` (unchanged when None)."""
    if not cpus:
        return list(argv)
    return [sys.executable, "-c", PIN_AND_EXEC, ",".join(map(str, sorted(cpus))), *argv]


# ---- helper side ---------------------------------------------------------------------


async def command_lines() -> asyncio.StreamReader:
    """stdin as an asyncio stream (a helper's command input)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def answer(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


# ---- benchmark side ------------------------------------------------------------------


class HelperError(RuntimeError):
    pass


class Helper:
    """One helper process under the benchmark's control."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self.name = name
        self.proc = proc
        self.log_path = log_path
        self._lock = asyncio.Lock()

    @classmethod
    async def start(cls, name: str, argv: Sequence[str], log_path: Path, *,
                    cpus: set[int] | None = None, ready_within: float = 120.0) -> Helper:
        with open_log(log_path) as log:  # the child has its own copy of the descriptor
            proc = await asyncio.create_subprocess_exec(
                *pinned(argv, cpus), stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=log, limit=LINE_LIMIT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        helper = cls(name, proc, log_path)
        first = await helper._read(ready_within)
        if not first.get("ready"):
            raise HelperError(f"{name} did not start: {first}")
        return helper

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def call(self, cmd: str, *, within: float = 120.0, **args: Any) -> dict[str, Any]:
        async with self._lock:
            assert self.proc.stdin is not None
            line = json.dumps({"cmd": cmd, **args}, separators=(",", ":")) + "\n"
            self.proc.stdin.write(line.encode())
            await self.proc.stdin.drain()
            reply = await self._read(within)
        if "error" in reply:
            raise HelperError(f"{self.name}: {cmd}: {reply['error']}")
        return reply

    async def _read(self, within: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), within)
        except TimeoutError:
            raise HelperError(f"{self.name}: no answer within {within:.0f} s "
                              f"(log: {self.log_path})") from None
        if not line:
            code = await self.proc.wait()
            raise HelperError(f"{self.name} exited with {code}; its log:\n"
                              + tail(self.log_path))
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def stop(self, within: float = 30.0) -> None:
        """Ask the helper to quit; kill it if it has not exited ``within`` seconds."""
        if self.proc.returncode is not None:
            return
        try:
            await self.call("quit", within=within)
        except (HelperError, OSError, ConnectionError):
            pass
        try:
            await asyncio.wait_for(self.proc.wait(), within)
        except TimeoutError:
            self.kill()
            await self.proc.wait()

    def kill(self) -> None:
        if self.proc.returncode is None:
            try:
                self.proc.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass


def open_log(path: Path) -> BinaryIO:
    """A log file for a child's output, appended to."""
    return open(path, "ab")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
