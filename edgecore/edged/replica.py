"""One replica's supervision: a task that prepares the working directory, runs the
program, restarts it as its policy says, stops it on request, and says how it goes.

The life of a runner::

    wait for the replica's previous runner (or a leftover process) to be gone
    Pending        write config files, fetch and verify artifacts (retried with back-off)
    Running        the process runs; its pid is recorded in .edged/process.json
    exit ->        Succeeded / Failed (policy says stop), or restart: at once after a
                   healthy run, else CrashLoopBackOff for the back-off delay
    stop request   SIGTERM to the process group, SIGKILL after the grace period; a
                   terminating replica then reports reason Terminated

Deleting the replica (or stopping edgecore) stops it the same way, silently: there is
no object left to report on, or the node is going down and will start it again.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from typing import Any

from edgecore.config import EdgedSettings
from edgecore.edged.environment import app_environment
from edgecore.edged.files import FetchArtifact, install_artifacts, write_config_files
from edgecore.edged.layout import ReplicaDir, SetupError
from edgecore.edged.leftovers import (
    ProcessRecord,
    clear_record,
    save_record,
    stop_leftover,
)
from edgecore.edged.logfiles import RotatingLog
from edgecore.edged.memory import Confinement, MemoryLimiter
from edgecore.edged.policy import (
    Backoff,
    describe_exit,
    exit_code,
    exit_reason,
    final_phase,
    phase_after_termination,
)
from edgecore.edged.process import AppProcess
from edgecore.edged.reporting import ChangeOnlyReporter
from protocol.envelope import ObjectRef
from protocol.kinds.appreplicas import TERMINATED_REASON, AppReplicaSpec, AppReplicaStatus
from protocol.kinds.apps import ReplicaPhase
from protocol.quantity import memory_bytes

log = logging.getLogger(__name__)

SETUP_FAILED = "SetupFailed"


@dataclass(frozen=True)
class RunContext:
    """What every runner of a node shares."""

    node: str
    apps_root: Path
    mqtt_url: str
    dmi_socket: Path
    settings: EdgedSettings
    fetch_artifact: FetchArtifact | None
    reporter: ChangeOnlyReporter
    limiter: MemoryLimiter
    inherited_env: Mapping[str, str]

    def backoff(self) -> Backoff:
        s = self.settings
        return Backoff(s.backoffBaseSeconds, s.backoffCapSeconds, s.backoffResetSeconds)

    def log_file(self, path: Path) -> RotatingLog:
        return RotatingLog(path, max_bytes=self.settings.logFileBytes,
                           files=self.settings.logFiles)


def rfc3339_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ReplicaRunner:
    def __init__(self, ctx: RunContext, ref: ObjectRef, uid: str | None, spec: AppReplicaSpec,
                 *, status: AppReplicaStatus | None = None,
                 after: asyncio.Task[Any] | None = None,
                 leftover: ProcessRecord | None = None) -> None:
        assert ref.namespace is not None
        self.ctx = ctx
        self.ref = ref
        self.uid = uid
        self.spec = spec
        self.dir = ReplicaDir(ctx.apps_root, ref.namespace, ref.name)
        self.status = status or AppReplicaStatus()
        self.terminating = spec.terminating
        self._silent = False
        self._stop = asyncio.Event()
        if spec.terminating:
            self._stop.set()
        self._after = after
        self._leftover = leftover
        self._process: AppProcess | None = None
        self._task: asyncio.Task[None] | None = None

    # ---- control, from the supervisor ---------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"replica {self.ref.key}")

    def runs(self, uid: str | None, spec: AppReplicaSpec) -> bool:
        """Whether this runner is the one for that object (same object and template,
        and not asked to start again after being terminated)."""
        return (uid == self.uid and spec.template == self.spec.template
                and (spec.terminating or not self.terminating))

    def update(self, spec: AppReplicaSpec) -> None:
        """A change that needs no new runner: the grace period, or termination."""
        self.spec = spec
        if spec.terminating and not self.terminating:
            log.info("edged: %s is terminating", self.ref.key)
            self.terminating = True
            self._stop.set()

    def stop(self) -> asyncio.Task[None]:
        """Stop without reporting; the task finishes once the process is gone."""
        self._silent = True
        self._stop.set()
        assert self._task is not None, "stop() before start()"
        return self._task

    @property
    def pid(self) -> int | None:
        """The pid of the running process, if one runs."""
        return self._process.pid if self._process is not None else None

    # ---- the runner's task ---------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._supervise()
        except asyncio.CancelledError:
            self._kill_now()
            raise
        except Exception as exc:  # a bug must not leave the process unsupervised
            log.exception("edged: supervising %s failed", self.ref.key)
            self._kill_now()
            self._set(phase=ReplicaPhase.FAILED, reason="EdgedError",
                      message=f"edged failed supervising this replica: {exc!r}")

    async def _supervise(self) -> None:
        if self._after is not None:
            await asyncio.wait({self._after})
        if self._leftover is not None:
            await stop_leftover(self._leftover, self.spec.terminationGracePeriodSeconds,
                                what=self.ref.key)
            clear_record(self.dir.process_record)
        if self._stop.is_set():
            return self._finish(killed=None)
        self._set(phase=ReplicaPhase.PENDING, reason=None, message=None)
        prepared = await self._prepare()
        if prepared is None:
            return self._finish(killed=None)
        workdir, argv, env = prepared
        backoff = self.ctx.backoff()
        first = True
        while True:
            if not first:  # told along with the run's outcome, not on its own
                self.status = self.status.model_copy(
                    update={"restarts": self.status.restarts + 1})
            first = False
            confinement = self._confinement()
            started_at = rfc3339_now()
            try:
                proc = await AppProcess.spawn(
                    argv, cwd=workdir, env=env, preexec=confinement.preexec,
                    stdout=self.ctx.log_file(self.dir.stdout_log),
                    stderr=self.ctx.log_file(self.dir.stderr_log), started_at=started_at)
            except (OSError, subprocess.SubprocessError) as exc:
                confinement.release()
                returncode: int | None = None
                ran_for = 0.0
                how = f"could not start {argv[0]!r}: {exc}"
                oom = False
            else:
                self._process = proc
                save_record(self.dir.process_record, proc.record)
                log.info("edged: %s started, pid %d%s", self.ref.key, proc.pid,
                         f" ({confinement.description})" if confinement.description else "")
                self._set(phase=ReplicaPhase.RUNNING, startTime=started_at, reason=None,
                          message=confinement.description or None)
                if await self._until_exit_or_stop(proc):
                    killed = await proc.terminate(self.spec.terminationGracePeriodSeconds)
                    self._ended(proc, confinement)
                    return self._finish(killed=killed, returncode=proc.returncode)
                returncode = proc.returncode
                assert returncode is not None
                ran_for = time.monotonic() - proc.started
                oom = confinement.oom_killed()
                self._ended(proc, confinement)
                how = describe_exit(returncode) + (" after running out of memory" if oom else "")
            last = exit_code(returncode) if returncode is not None else None
            reason = exit_reason(returncode, oom)
            log.info("edged: %s %s", self.ref.key, how)
            phase = final_phase(self.spec.template.restartPolicy, returncode)
            if phase is not None:
                self._set(phase=phase, lastExitCode=last, reason=reason, message=how)
                await self._stop.wait()
                return self._finish(killed=None)
            delay = backoff.after_run(ran_for)
            if delay > 0:
                self._set(phase=ReplicaPhase.CRASH_LOOP_BACK_OFF, lastExitCode=last,
                          reason=reason, message=f"back-off {delay:g} s restarting: {how}")
                if await self._sleep(delay):
                    return self._finish(killed=None)
            else:
                self._set(lastExitCode=last)
                if self._stop.is_set():
                    return self._finish(killed=None)

    async def _prepare(self) -> tuple[Path, list[str], dict[str, str]] | None:
        """Make the working directory ready, retrying with back-off; None if stopped
        meanwhile."""
        template = self.spec.template
        backoff = self.ctx.backoff()
        while True:
            try:
                self.dir.make()
                workdir = self.dir.working_dir(template.workingDir)
                workdir.mkdir(parents=True, exist_ok=True)
                write_config_files(template.config or (), workdir, self.dir)
                # A download can take long: a stop request must not wait for it.
                install = asyncio.create_task(install_artifacts(
                    template.artifacts or (), workdir, self.dir, self.ctx.fetch_artifact))
                if await self._until_done_or_stop(install):
                    return None
                env = app_environment(self.spec, namespace=self.dir.namespace,
                                      node=self.ctx.node, mqtt_url=self.ctx.mqtt_url,
                                      dmi_socket=self.ctx.dmi_socket,
                                      inherited=self.ctx.inherited_env)
                return workdir, [*template.command, *(template.args or ())], env
            except SetupError as exc:
                reason, message = exc.reason, exc.message
            except OSError as exc:
                reason, message = SETUP_FAILED, f"cannot prepare {self.dir.root}: {exc}"
            delay = backoff.after_run(0.0)
            log.warning("edged: %s not started: %s; retrying in %g s", self.ref.key, message,
                        delay)
            self._set(phase=ReplicaPhase.PENDING, reason=reason,
                      message=f"{message}; retrying in {delay:g} s")
            if await self._sleep(delay):
                return None

    def _confinement(self) -> Confinement:
        limits = self.spec.template.resources.limits if self.spec.template.resources else None
        memory = limits.memory if limits is not None else None
        limit = memory_bytes(memory) if memory is not None else None
        key = f"app.{self.ref.namespace}.{self.ref.name}"
        if len(key) > 200:  # a file name is at most 255 bytes
            key = "app." + sha256(key.encode()).hexdigest()
        return self.ctx.limiter.confine(key, limit)

    async def _until_exit_or_stop(self, proc: AppProcess) -> bool:
        """Wait for the process to end or a stop request; True for the latter."""
        stop = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({proc.finished(), stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        return not proc.finished().done()

    async def _until_done_or_stop(self, task: asyncio.Task[None]) -> bool:
        """Wait for ``task``, cancelling it if a stop request comes first (True then);
        its exception, if any, is raised."""
        stop = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
            return True
        task.result()
        return False

    async def _sleep(self, delay: float) -> bool:
        """Wait ``delay`` seconds; True when a stop request came first."""
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=delay)
        except TimeoutError:
            return False
        return True

    def _ended(self, proc: AppProcess, confinement: Confinement) -> None:
        clear_record(self.dir.process_record)
        confinement.release()
        self._process = None

    def _kill_now(self) -> None:
        if self._process is not None:
            self._process.signal_group(signal.SIGKILL)

    def _finish(self, *, killed: bool | None, returncode: int | None = None) -> None:
        """The runner is done: a terminating replica says it has stopped."""
        if not self.terminating:
            return
        if killed is None:
            how = "stopped"
        elif killed:
            how = (f"did not stop within {self.spec.terminationGracePeriodSeconds} s of "
                   "SIGTERM; killed")
        else:
            how = "stopped on SIGTERM"
        changes: dict[str, Any] = {
            "phase": phase_after_termination(self.status.phase, killed),
            "reason": TERMINATED_REASON, "message": how,
        }
        if returncode is not None:
            changes["lastExitCode"] = exit_code(returncode)
        log.info("edged: %s %s", self.ref.key, how)
        self._set(**changes)

    def _set(self, **changes: Any) -> None:
        self.status = self.status.model_copy(update=changes)
        if not self._silent:
            self.ctx.reporter.report(self.ref, self.status)
