"""edged's pure decisions: back-off, restart policy, exit wording, termination phase."""

from __future__ import annotations

import pytest

from edgecore.edged.policy import (
    COMPLETED,
    ERROR,
    OOM_KILLED,
    START_ERROR,
    Backoff,
    describe_exit,
    exit_code,
    exit_reason,
    final_phase,
    phase_after_termination,
)
from protocol.kinds.apps import ReplicaPhase, RestartPolicy


def test_backoff_doubles_from_base_up_to_cap() -> None:
    backoff = Backoff(base=1.0, cap=300.0, reset_after=600.0)
    delays = [backoff.after_run(0.5) for _ in range(12)]
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]


def test_a_healthy_run_resets_the_backoff_and_restarts_at_once() -> None:
    backoff = Backoff(base=1.0, cap=300.0, reset_after=600.0)
    for _ in range(5):
        backoff.after_run(1.0)
    assert backoff.after_run(600.0) == 0.0
    assert backoff.after_run(1.0) == 1.0  # the next quick crash starts over from base


def test_a_run_just_short_of_the_reset_still_counts_as_a_crash() -> None:
    backoff = Backoff(base=0.5, cap=10.0, reset_after=60.0)
    backoff.after_run(0.1)
    assert backoff.after_run(59.9) == 1.0


def test_backoff_stays_finite_after_very_many_failures() -> None:
    backoff = Backoff(base=1.0, cap=300.0, reset_after=600.0)
    for _ in range(5000):
        delay = backoff.after_run(0.0)
    assert delay == 300.0


@pytest.mark.parametrize("bad", [(0, 1, 1), (1, -1, 1), (1, 1, 0)])
def test_backoff_refuses_non_positive_times(bad: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(*bad)


@pytest.mark.parametrize(("policy", "code", "phase"), [
    (RestartPolicy.ALWAYS, 0, None),
    (RestartPolicy.ALWAYS, 1, None),
    (RestartPolicy.ALWAYS, None, None),
    (RestartPolicy.ON_FAILURE, 0, ReplicaPhase.SUCCEEDED),
    (RestartPolicy.ON_FAILURE, 3, None),
    (RestartPolicy.ON_FAILURE, -9, None),
    (RestartPolicy.ON_FAILURE, None, None),
    (RestartPolicy.NEVER, 0, ReplicaPhase.SUCCEEDED),
    (RestartPolicy.NEVER, 3, ReplicaPhase.FAILED),
    (RestartPolicy.NEVER, -15, ReplicaPhase.FAILED),
    (RestartPolicy.NEVER, None, ReplicaPhase.FAILED),
])
def test_restart_policy(policy: RestartPolicy, code: int | None,
                        phase: ReplicaPhase | None) -> None:
    assert final_phase(policy, code) == phase


def test_exit_codes_follow_the_shell_convention_for_signals() -> None:
    assert exit_code(0) == 0
    assert exit_code(42) == 42
    assert exit_code(-9) == 137
    assert exit_code(-15) == 143


def test_exit_descriptions() -> None:
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(-9) == "killed by SIGKILL (exit code 137)"
    assert describe_exit(-200) == "killed by signal 200 (exit code 328)"


def test_exit_reasons() -> None:
    assert exit_reason(0) == COMPLETED
    assert exit_reason(1) == ERROR
    assert exit_reason(-9, oom_killed=True) == OOM_KILLED
    assert exit_reason(None) == START_ERROR


def test_phase_after_termination() -> None:
    # a process that ended on SIGTERM went the expected way; one that had to be killed did not
    assert phase_after_termination(ReplicaPhase.RUNNING, killed=False) is ReplicaPhase.SUCCEEDED
    assert phase_after_termination(ReplicaPhase.RUNNING, killed=True) is ReplicaPhase.FAILED
    # nothing was running: the last phase stands, a crash loop ends as a failure
    assert phase_after_termination(ReplicaPhase.FAILED, None) is ReplicaPhase.FAILED
    assert phase_after_termination(ReplicaPhase.SUCCEEDED, None) is ReplicaPhase.SUCCEEDED
    assert phase_after_termination(ReplicaPhase.CRASH_LOOP_BACK_OFF, None) is \
        ReplicaPhase.FAILED
    assert phase_after_termination(ReplicaPhase.PENDING, None) is ReplicaPhase.PENDING
