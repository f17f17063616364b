"""Processes a previous edgecore left running.

An edgecore killed with -9 (or by the OOM killer, or a crash) cannot stop its replicas:
they run on in their own sessions.  So edged writes each replica's pid, process group
and kernel start time to ``.edged/process.json`` when it starts the process, and removes
the file once the process is gone.  A file still there at start-up names a leftover; it
is stopped (SIGTERM to its process group, SIGKILL after the grace period) before the
replica starts again, so no replica ever runs twice.

The kernel start time (``/proc/<pid>/stat`` field 22, clock ticks since boot) guards
against pid reuse: a pid that now belongs to another process is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    pgid: int
    start_ticks: int
    started_at: str  # RFC 3339, for people reading the file


@dataclass(frozen=True)
class ProcStat:
    pgid: int
    start_ticks: int
    state: str

    @property
    def alive(self) -> bool:
        # A zombie has finished; it only waits for its parent to read its exit.
        return self.state not in ("Z", "X")


def parse_stat(text: str) -> ProcStat:
    """Fields of a ``/proc/<pid>/stat`` line (the command name, in parentheses, may hold
    spaces and parentheses itself: fields are counted from the last ``)``)."""
    rest = text[text.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); pgrp is field 5, starttime field 22.
    return ProcStat(pgid=int(rest[2]), start_ticks=int(rest[19]), state=rest[0])


def proc_stat(pid: int) -> ProcStat | None:
    try:
        return parse_stat(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def save_record(path: Path, record: ProcessRecord) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(record)))
    os.replace(tmp, path)


def load_record(path: Path) -> ProcessRecord | None:
    try:
        raw = json.loads(path.read_text())
        return ProcessRecord(pid=int(raw["pid"]), pgid=int(raw["pgid"]),
                             start_ticks=int(raw["start_ticks"]),
                             started_at=str(raw.get("started_at", "")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("edged: ignoring unreadable process record %s: %s", path, exc)
        return None


def clear_record(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def members(record: ProcessRecord) -> list[int]:
    """Live processes of the recorded process group that are the recorded run's.

    The leader itself counts when its start time matches.  Without it, the group's other
    members count only if none is a new leader of that group id (pid reuse) and each
    started no earlier than the leader did (a group id stays taken while it has members,
    so those are the leader's descendants)."""
    leader = proc_stat(record.pid)
    if leader is not None and leader.start_ticks != record.start_ticks:
        if record.pid == record.pgid:
            return []  # the group id now belongs to someone else
        leader = None
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = proc_stat(int(entry))
        if (stat is not None and stat.alive and stat.pgid == record.pgid
                and stat.start_ticks >= record.start_ticks):
            found.append(int(entry))
    return found


async def stop_leftover(record: ProcessRecord, grace: float, *, what: str) -> bool:
    """Stop what is left of a recorded run: SIGTERM to its group, SIGKILL after
    ``grace`` seconds.  Returns whether anything was running."""
    if not members(record):
        return False
    log.warning("edged: %s: process group %d (pid %d, started %s) survived the previous "
                "edgecore; stopping it before starting afresh", what, record.pgid,
                record.pid, record.started_at)
    _killpg(record.pgid, signal.SIGTERM)
    if await _gone(record, grace):
        return True
    log.warning("edged: %s: process group %d ignored SIGTERM for %g s; killing it", what,
                record.pgid, grace)
    _killpg(record.pgid, signal.SIGKILL)
    if not await _gone(record, 10.0):
        log.error("edged: %s: process group %d is still there after SIGKILL", what,
                  record.pgid)
    return True


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _gone(record: ProcessRecord, within: float) -> bool:
    # Not our children: there is nothing to wait on, so look every so often.
    deadline = time.monotonic() + within
    while members(record):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True
