"""One run of a replica's program: spawn, output, exit, stop.

The process starts a session of its own (so its process group holds it and every child
it starts, and no terminal signal of edgecore's reaches it), with stdin on /dev/null and
stdout/stderr piped into rotating files.  Stopping signals the whole group: SIGTERM, then
SIGKILL once the grace period is over.  When the main process ends, whatever it left in
its group is killed, so each run starts clean and children die with their app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from edgecore.edged.leftovers import ProcessRecord, proc_stat
from edgecore.edged.logfiles import RotatingLog, pump

log = logging.getLogger(__name__)

# After the main process exits and its group is killed, the pipes close at once unless
# something escaped the group (a daemon that called setsid): don't wait on it for ever.
PIPE_DRAIN_SECONDS = 2.0


class AppProcess:
    def __init__(self, proc: asyncio.subprocess.Process, pumps: list[asyncio.Task[None]],
                 record: ProcessRecord) -> None:
        self._proc = proc
        self._pumps = pumps
        self.record = record
        self.pid = proc.pid
        self.started = time.monotonic()
        self._finished: asyncio.Task[int] | None = None

    @classmethod
    async def spawn(cls, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str],
                    preexec: Callable[[], None] | None, stdout: RotatingLog,
                    stderr: RotatingLog, started_at: str) -> AppProcess:
        """Start the program; raises OSError (or SubprocessError) when it cannot be."""
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=dict(env), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True, preexec_fn=preexec,
        )
        assert proc.stdout is not None and proc.stderr is not None
        # The child is ours and not yet waited for, so its /proc entry is its own.
        stat = proc_stat(proc.pid)
        record = ProcessRecord(pid=proc.pid, pgid=proc.pid,
                               start_ticks=stat.start_ticks if stat else 0,
                               started_at=started_at)
        pumps = [asyncio.create_task(pump(proc.stdout, stdout), name=f"stdout-{proc.pid}"),
                 asyncio.create_task(pump(proc.stderr, stderr), name=f"stderr-{proc.pid}")]
        return cls(proc, pumps, record)

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def finished(self) -> asyncio.Task[int]:
        """Completes with the raw return code (negative: killed by that signal) once the
        main process has ended, its group is gone and its output is on disk."""
        if self._finished is None:
            self._finished = asyncio.create_task(self._finish(), name=f"app-{self.pid}")
        return self._finished

    async def _finish(self) -> int:
        code = await self._proc.wait()
        self.signal_group(signal.SIGKILL)
        _, pending = await asyncio.wait(self._pumps, timeout=PIPE_DRAIN_SECONDS)
        for task in pending:
            log.warning("edged: pid %d: something outside its process group still holds "
                        "its output pipe; no longer reading it", self.pid)
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return code

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.record.pgid, sig)

    async def terminate(self, grace: float) -> bool:
        """SIGTERM to the group, SIGKILL after ``grace`` seconds; returns whether the
        SIGKILL was needed.  Returns once the run has finished."""
        done = self.finished()
        if done.done():
            return False
        self.signal_group(signal.SIGTERM)
        finished, _ = await asyncio.wait({done}, timeout=grace)
        killed = not finished
        if killed:
            log.info("edged: pid %d outlived its %g s grace period after SIGTERM; killing "
                     "its process group", self.pid, grace)
            self.signal_group(signal.SIGKILL)
        await asyncio.shield(done)
        return killed
