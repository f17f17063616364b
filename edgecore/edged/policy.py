"""The supervisor's pure decisions: what a finished process means under its replica's
restart policy, how long to wait before the next attempt, and how an exit is told.

No clocks, processes or files here: the runner (``replica.py``) measures and acts, these
functions only judge, so every rule is tested without starting anything.
"""

from __future__ import annotations

import signal

from protocol.kinds.apps import ReplicaPhase, RestartPolicy

# Why the last run ended, in the words the kubelet uses for a container's last state.
COMPLETED = "Completed"
ERROR = "Error"
OOM_KILLED = "OOMKilled"
START_ERROR = "StartError"


class Backoff:
    """Exponential back-off between attempts, as the kubelet's: the n-th failure in a row
    waits ``base * 2**(n-1)`` seconds, never more than ``cap``.  A run that lasted at least
    ``reset_after`` seconds was healthy: it wipes the slate, and the next restart is
    immediate."""

    def __init__(self, base: float, cap: float, reset_after: float) -> None:
        if base <= 0 or cap <= 0 or reset_after <= 0:
            raise ValueError("back-off times must be positive")
        self.base = base
        self.cap = cap
        self.reset_after = reset_after
        self.failures = 0

    def after_run(self, ran_for: float) -> float:
        """Seconds to wait before the next attempt, after one that lasted ``ran_for``."""
        if ran_for >= self.reset_after:
            self.failures = 0
            return 0.0
        self.failures += 1
        # Past 2**64 the cap has long won; the bound keeps the float finite.
        exponent = min(self.failures - 1, 64)
        return float(min(self.cap, self.base * 2.0 ** exponent))


def exit_code(returncode: int) -> int:
    """A shell's view of an exit: a process killed by signal N exited with 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def describe_exit(returncode: int) -> str:
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"killed by {name} (exit code {exit_code(returncode)})"


def exit_reason(returncode: int | None, oom_killed: bool = False) -> str:
    if returncode is None:
        return START_ERROR
    if oom_killed:
        return OOM_KILLED
    return COMPLETED if returncode == 0 else ERROR


def final_phase(policy: RestartPolicy, returncode: int | None) -> ReplicaPhase | None:
    """The phase a replica ends in after a run ended this way (None when the process
    could not be started), or None when the policy restarts it."""
    succeeded = returncode == 0
    if policy is RestartPolicy.ALWAYS:
        return None
    if policy is RestartPolicy.ON_FAILURE:
        return ReplicaPhase.SUCCEEDED if succeeded else None
    return ReplicaPhase.SUCCEEDED if succeeded else ReplicaPhase.FAILED


def phase_after_termination(phase: ReplicaPhase, killed: bool | None) -> ReplicaPhase:
    """The phase a terminating replica is left in once stopped.

    ``killed`` is None when no process was running, else whether it had to be killed
    (it outlived its grace period after SIGTERM).  Ending on SIGTERM is the expected way
    for an app to go, so it counts as success."""
    if killed is not None:
        return ReplicaPhase.FAILED if killed else ReplicaPhase.SUCCEEDED
    if phase is ReplicaPhase.CRASH_LOOP_BACK_OFF:
        return ReplicaPhase.FAILED
    if phase is ReplicaPhase.RUNNING:
        return ReplicaPhase.SUCCEEDED
    return phase
