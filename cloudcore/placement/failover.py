"""Failover between node groups (reference/placement-scheduling.md §1.9-§1.10, Karmada's
application failover mapped onto node-group health).

A node group with no Ready node is *unhealthy*.  The scheduler loop remembers when it
first saw each group unhealthy (:func:`track_unhealthy`; a healthy sighting resets the
timer).  Once a group that holds replicas of a workload has been unhealthy for the
policy's ``failover.application.decisionConditions.tolerationSeconds`` (default 300,
0 = at once), :func:`due_evictions` names it; :func:`cloudcore.placement.schedule.evict`
then drops its replicas from the current result and the next decision re-places just
those on the remaining groups - replicas on healthy groups stay where they are for
dynamic-weight and Aggregated division (static weights are recomputed over the groups
left, as Karmada does; Webster then only adds to the survivors, ties aside).  Without a
failover section nothing is evicted: the replicas wait for the group to come back, as
in Karmada v1.14+.

Time is a parameter (seconds on any monotonic scale); nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from cloudcore.placement.clusters import ClusterView
from protocol.kinds.policies import FailoverBehavior


def track_unhealthy(
    since: Mapping[str, float], clusters: Iterable[ClusterView], now: float
) -> dict[str, float]:
    """When each currently unhealthy group was first seen unhealthy: kept for groups
    still unhealthy, ``now`` for newly unhealthy ones; healthy and vanished groups are
    dropped."""
    out: dict[str, float] = {}
    for cluster in clusters:
        if not cluster.ready:
            out[cluster.name] = since.get(cluster.name, now)
    return out


def due_evictions(
    current: Mapping[str, int],
    unhealthy_since: Mapping[str, float],
    now: float,
    failover: FailoverBehavior | None,
) -> frozenset[str]:
    """The groups holding replicas that have been unhealthy for at least the
    toleration; empty when the policy asks for no application failover."""
    if failover is None or failover.application is None:
        return frozenset()
    tolerate = failover.application.toleration_seconds
    return frozenset(
        group for group, replicas in current.items()
        if replicas > 0 and group in unhealthy_since and now - unhealthy_since[group] >= tolerate
    )


def next_deadline(
    current: Mapping[str, int],
    unhealthy_since: Mapping[str, float],
    failover: FailoverBehavior | None,
) -> float | None:
    """When the next eviction falls due (so the loop knows when to look again), or
    None when none is pending."""
    if failover is None or failover.application is None:
        return None
    tolerate = failover.application.toleration_seconds
    times = [unhealthy_since[g] + tolerate for g, n in current.items()
             if n > 0 and g in unhealthy_since]
    return min(times, default=None)
