"""One placement decision: which node groups run how many replicas of a workload
(reference/placement-scheduling.md §1.2-§1.6, §1.10; Karmada's scheduler).

Pipeline per attempt: **filter** (cluster affinity, taints with the sticky exception
for groups already in the result, the spread field being present, groups under
failover eviction) -> **rank** (current groups first, then capacity, then name) ->
**select** (spreadConstraints, :mod:`cloudcore.placement.selection`) -> **divide**
(:mod:`cloudcore.placement.division`).

With ``clusterAffinities`` the attempt is repeated per term, starting from the term
the last successful decision used (``BindingState.observed_affinity``) - or from the
first term after an explicit reschedule, or when that name no longer exists - and
moving forward on any failure; the first term that works wins and is recorded.
So a workload that fell back to a later term **never moves back by itself** when an
earlier term recovers; only an explicit reschedule does that (§1.3).

When every attempt fails, the decision keeps the previous placement unless the first
failure was "no node group fits at all", in which case the workload is removed
everywhere (Karmada patches an empty result for a FitError).

All inputs are plain values; nothing here touches the store or the clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from cloudcore.placement import division, selection
from cloudcore.placement.apportion import names_descending_for
from cloudcore.placement.clusters import (
    NOT_READY_TAINT_KEY,
    ClusterView,
    affinity_matches,
    untolerated_taint,
)
from cloudcore.placement.errors import Unschedulable
from protocol.kinds.policies import (
    ClusterAffinity,
    Placement,
    ReplicaDivisionPreference,
    ReplicaSchedulingType,
)


@dataclass(frozen=True)
class BindingState:
    """What the scheduler knows about one workload besides its policy.

    ``replicas``: desired count.  ``current``: the last decision (group -> replicas).
    ``observed_affinity``: name of the clusterAffinities term the last successful
    decision used.  ``reschedule_requested``: an explicit rebalance - start from the
    first affinity term and divide afresh.  ``evicted``: groups failover took the
    workload away from (excluded as candidates).  ``uid``: the workload's UID, which
    fixes the Webster tie-break direction.
    """

    replicas: int
    current: Mapping[str, int] = field(default_factory=dict)
    observed_affinity: str | None = None
    reschedule_requested: bool = False
    evicted: frozenset[str] = frozenset()
    uid: str = ""


@dataclass(frozen=True)
class Decision:
    """``clusters``: the new placement (group -> replicas, no zeros).  ``scheduled``:
    whether this attempt succeeded (Karmada's Scheduled condition).  ``message``: why
    not, in words, when it failed.  ``affinity_name``: the term to record as observed
    (unchanged on failure)."""

    clusters: dict[str, int]
    scheduled: bool
    affinity_name: str | None = None
    message: str = ""


def evict(state: BindingState, groups: frozenset[str]) -> BindingState:
    """The state after failover took ``groups`` away: their replicas are dropped from
    the current result (so the next decision re-places exactly those) and the groups
    stop being candidates."""
    if not groups:
        return state
    current = {g: n for g, n in state.current.items() if g not in groups}
    return replace(state, current=current, evicted=state.evicted | groups)


def schedule(
    placement: Placement | None, clusters: Sequence[ClusterView], state: BindingState
) -> Decision:
    """Decide where the workload's replicas go (see the module docstring)."""
    placement = placement or Placement()
    terms = placement.clusterAffinities or []
    if not terms:
        try:
            result = _attempt(placement, placement.clusterAffinity, clusters, state)
        except Unschedulable as err:
            return _failed(state, err, err.message, state.observed_affinity)
        return Decision(result, True, None)

    names = [t.affinityName for t in terms]
    start = 0
    if not state.reschedule_requested and state.observed_affinity in names:
        start = names.index(state.observed_affinity)
    errors: list[tuple[str, Unschedulable]] = []
    for term in terms[start:]:
        try:
            result = _attempt(placement, term, clusters, state)
        except Unschedulable as err:
            errors.append((term.affinityName, err))
            continue
        return Decision(result, True, term.affinityName)
    message = "; ".join(f"affinity {name!r}: {err.message}" for name, err in errors)
    return _failed(state, errors[0][1], message, state.observed_affinity)


def _failed(state: BindingState, first: Unschedulable, message: str,
            affinity: str | None) -> Decision:
    clusters = {} if first.no_fit else {g: n for g, n in state.current.items() if n > 0}
    return Decision(clusters, False, affinity, message)


def _attempt(
    placement: Placement,
    affinity: ClusterAffinity | None,
    clusters: Sequence[ClusterView],
    state: BindingState,
) -> dict[str, int]:
    feasible = _filter(placement, affinity, clusters, state)
    if state.replicas <= 0:
        return {}
    ranked = selection.rank(feasible, state.current)
    constraints = placement.spreadConstraints or []
    descending = names_descending_for(state.uid)
    strategy = placement.replicaScheduling
    if placement.replica_scheduling_type is ReplicaSchedulingType.DUPLICATED or strategy is None:
        chosen = selection.select(ranked, constraints, None)
        return division.duplicated([c.cluster for c in chosen], state.replicas)
    preference = strategy.weightPreference
    weighted = strategy.division is ReplicaDivisionPreference.WEIGHTED
    if weighted and (preference is None or preference.dynamicWeight is None):
        # Static weights ignore spread constraints entirely (Karmada).
        return division.by_static_weight(
            feasible, preference.staticWeightList if preference else None, state.replicas,
            names_descending=descending,
        )
    chosen = selection.select(ranked, constraints, state.replicas)
    return division.by_available_replicas(
        [c.cluster for c in chosen], state.replicas, state.current,
        aggregated=not weighted, fresh=state.reschedule_requested,
        names_descending=descending,
    )


def _filter(
    placement: Placement,
    affinity: ClusterAffinity | None,
    clusters: Sequence[ClusterView],
    state: BindingState,
) -> list[ClusterView]:
    """The node groups that pass every filter; raises a FitError-style
    :class:`Unschedulable` counting the reasons when none does."""
    grouping = selection.grouping_constraint(placement.spreadConstraints or [])
    group_of = selection.group_key(grouping) if grouping is not None else None
    tolerations = placement.clusterTolerations or []
    feasible: list[ClusterView] = []
    reasons: Counter[str] = Counter()
    for cluster in clusters:
        if not affinity_matches(affinity, cluster):
            reasons["not selected by the cluster affinity"] += 1
            continue
        # Sticky: taints only keep *new* replicas away (eviction is failover's job).
        taint = None if cluster.name in state.current else untolerated_taint(cluster,
                                                                             tolerations)
        if taint is not None:
            reasons["not ready" if taint.key == NOT_READY_TAINT_KEY
                    else f"untolerated taint {taint}"] += 1
            continue
        if group_of is not None and grouping is not None and group_of(cluster) is None:
            what = grouping.spreadByLabel or (grouping.field.value if grouping.field else "")
            reasons[f"no {what} to spread by"] += 1
            continue
        if cluster.name in state.evicted:
            reasons["evicted by failover"] += 1
            continue
        feasible.append(cluster)
    if not feasible:
        detail = ", ".join(f"{n} {why}" for why, n in
                           sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
        raise Unschedulable(
            f"0/{len(clusters)} node groups are available" + (f": {detail}" if detail else ""),
            no_fit=True,
        )
    return feasible


def reschedule_reason(
    placement: Placement | None,
    clusters: Sequence[ClusterView],
    state: BindingState,
    *,
    placement_changed: bool = False,
) -> str | None:
    """Why the workload needs a new decision now, or None to leave it alone.

    Karmada's triggers (§1.10): an explicit reschedule, a changed placement, a replica
    count that differs from what is placed, a placed-on group that was deleted or
    evicted - and, for Duplicated workloads, every time.  A group merely going NotReady
    is *not* a trigger: its replicas stay until failover evicts them.
    """
    placement = placement or Placement()
    if state.reschedule_requested:
        return "reschedule requested"
    if placement_changed:
        return "placement changed"
    if placement.replica_scheduling_type is ReplicaSchedulingType.DUPLICATED:
        return "duplicated workloads are reconciled every time"
    placed = {g for g, n in state.current.items() if n > 0}
    if sum(state.current.values()) != state.replicas:
        return f"replicas changed: {sum(state.current.values())} placed, {state.replicas} wanted"
    known = {c.name for c in clusters}
    for group in sorted(placed - known):
        return f"node group {group} was deleted"
    for group in sorted(placed & state.evicted):
        return f"node group {group} was evicted"
    return None
