"""Settings of the apps controller."""

from __future__ import annotations

from dataclasses import dataclass

from cloudcore.scheduler.model import DEFAULT_SCHEDULER_NAME, Scoring
from protocol.kinds.policies import DEFAULT_SCHEDULER


@dataclass(frozen=True)
class AppsControllerConfig:
    """``scheduler_name``: the App ``spec.schedulerName`` this controller serves (an App
    without one is ours too); ``policy_scheduler_name``: the PropagationPolicy
    ``schedulerName`` it serves (Karmada's: an empty one means the default scheduler).
    Apps either names another scheduler are left to it; only the resources their
    replicas hold are counted.

    ``lost_node_seconds``: a terminating replica on a node that has not been Ready for
    this long is deleted without waiting for the edge to confirm (it cannot).
    ``termination_grace_seconds``: SIGTERM to SIGKILL on the edge.
    ``debounce_seconds``: how long to let a burst of changes gather before reconciling;
    after a round that took longer than that, the next gathers for as long as that round
    took, up to ``max_debounce_seconds``.  Under a stream of changes the controller then
    spends at most about half of the event loop - which it shares with the API server
    and the hub - and each round has more changes to spread its fixed cost over; a
    change to an idle controller still waits only ``debounce_seconds``.
    ``recheck_seconds``: how often the clock is read while a deadline (failover,
    lost-node deletion) is pending.  ``sync_timeout_seconds``: how long a reconcile
    waits for the controller's own last writes to come back through the watch.
    """

    scheduler_name: str = DEFAULT_SCHEDULER_NAME
    policy_scheduler_name: str = DEFAULT_SCHEDULER
    scoring: Scoring = Scoring.LEAST_ALLOCATED
    preempt: bool = True
    reclaim: bool = True
    lost_node_seconds: float = 300.0
    termination_grace_seconds: int = 10
    debounce_seconds: float = 0.1
    max_debounce_seconds: float = 1.0
    recheck_seconds: float = 1.0
    sync_timeout_seconds: float = 5.0
