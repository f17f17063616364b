"""Dividing a workload's replicas among the chosen node groups (reference/
placement-scheduling.md §1.6, Karmada's assignment strategies).

- **Duplicated**: every chosen group runs all replicas.
- **Static weights** (Divided + Weighted, ``staticWeightList`` or no preference):
  stateless.  A group's weight is the largest weight among the list entries whose
  ``targetCluster`` matches it; groups no entry matches are left out; when no group
  matches any entry (or there is no list) all weigh 1.  Webster divides the replicas.
  Capacity is not consulted.
- **Dynamic weights** (``dynamicWeight: AvailableReplicas``) and **Aggregated**:
  stateful, so that a resize does not reshuffle running replicas.  Previous replicas on
  groups that are still chosen are kept; if they already add up to the desired count
  nothing changes.  *Scale up* divides only the missing replicas, weighted by each
  group's free capacity, and adds them on (too little free capacity in total is an
  error).  *Scale down* re-divides the desired count weighted by the current replicas,
  a proportional shrink.  A *fresh* division (an explicit reschedule) ignores the old
  result and weighs each group by free capacity plus its current replicas.
  Aggregated first keeps the shortest prefix of groups - those already holding
  replicas first, then by capacity - that can hold the replicas to place, then divides
  Webster-proportionally to capacity over that prefix (it does not fill the first group
  to the brim).

Results map group name to replicas and never list a group with 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cloudcore.placement.apportion import webster
from cloudcore.placement.clusters import ClusterView, affinity_matches
from cloudcore.placement.errors import Unschedulable
from protocol.kinds.policies import StaticClusterWeight


def _nonzero(result: Mapping[str, int]) -> dict[str, int]:
    return {name: n for name, n in sorted(result.items()) if n > 0}


def duplicated(groups: Sequence[ClusterView], replicas: int) -> dict[str, int]:
    return _nonzero({g.name: replicas for g in groups})


def static_weights(
    groups: Sequence[ClusterView], weight_list: Sequence[StaticClusterWeight] | None
) -> dict[str, int]:
    """Each group's static weight; groups matching no entry are absent."""
    weights: dict[str, int] = {}
    for group in groups:
        matching = [e.weight for e in weight_list or () if affinity_matches(e.targetCluster,
                                                                              group)]
        if matching:
            weights[group.name] = max(matching)
    if not weights:
        weights = {g.name: 1 for g in groups}
    return weights


def by_static_weight(
    groups: Sequence[ClusterView],
    weight_list: Sequence[StaticClusterWeight] | None,
    replicas: int,
    *,
    names_descending: bool = False,
) -> dict[str, int]:
    weights = static_weights(groups, weight_list)
    return _nonzero(webster(replicas, weights, names_descending=names_descending))


def _aggregate_prefix(order: Sequence[str], capacity: Mapping[str, int], target: int) -> list[str]:
    """The shortest prefix of ``order`` whose capacity adds up to ``target``."""
    total = 0
    for i, name in enumerate(order):
        total += capacity[name]
        if total >= target:
            return list(order[: i + 1])
    return list(order)


def by_available_replicas(
    groups: Sequence[ClusterView],
    replicas: int,
    current: Mapping[str, int],
    *,
    aggregated: bool,
    fresh: bool = False,
    names_descending: bool = False,
) -> dict[str, int]:
    """Dynamic-weight or Aggregated division; raises :class:`Unschedulable` when the
    groups' free capacity cannot take the replicas to place."""
    if fresh:
        weights = {g.name: g.available_replicas + current.get(g.name, 0) for g in groups}
        return _divide(weights, replicas, {}, set(), aggregated, names_descending)
    chosen = {g.name for g in groups}
    kept = {name: n for name, n in current.items() if name in chosen and n > 0}
    assigned = sum(kept.values())
    if assigned == replicas:
        return _nonzero(kept)
    if assigned > replicas:
        # Proportional shrink over the groups that hold replicas.
        return _divide(kept, replicas, {}, set(kept), aggregated, names_descending)
    free = {g.name: max(0, g.available_replicas) for g in groups}
    return _divide(free, replicas - assigned, kept, set(kept), aggregated, names_descending)


def _divide(
    weights: Mapping[str, int],
    target: int,
    base: Mapping[str, int],
    holders: set[str],
    aggregated: bool,
    names_descending: bool,
) -> dict[str, int]:
    available = sum(weights.values())
    if available < target:
        raise Unschedulable(
            f"the node groups have room for {available} more replica(s), {target} needed"
        )
    if aggregated:
        # Groups already holding replicas first, then by capacity, then by name.
        order = sorted(weights, key=lambda n: (n not in holders, -weights[n], n))
        prefix = _aggregate_prefix(order, weights, target)
        weights = {n: weights[n] for n in prefix}
    added = webster(target, weights, names_descending=names_descending)
    merged = dict(base)
    for name, n in added.items():
        merged[name] = merged.get(name, 0) + n
    return _nonzero(merged)
