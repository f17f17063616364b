"""Choosing which feasible node groups a workload goes to under its spreadConstraints
(reference/placement-scheduling.md §1.5, Karmada's select_clusters).

Groups are ranked by score (100 for a group already in the current result, so the
current placement is preferred), then by available replicas (free capacity plus what
the workload already has there), then by name.

- No constraints: every feasible group.
- By ``cluster``: at least ``minGroups`` feasible groups, take the best
  ``min(#feasible, maxGroups)``.  For Divided workloads, when those cannot hold the
  replicas, the lowest-ranked picks are swapped, from the last one forwards, for the
  remaining groups with the most available replicas; still too small is an error.
- By ``region`` (plus the mandatory ``cluster`` constraint): at least ``minGroups``
  regions; choose the fewest best regions (from ``minGroups`` up to ``maxGroups``)
  whose groups can meet the cluster constraint's ``minGroups``, take the best group of
  each, then fill up to the cluster ``maxGroups`` with the other groups of those
  regions by available replicas.

Karmada implements only ``cluster`` and ``region``; edgefleet runs the region
procedure for ``zone``, ``provider`` and ``spreadByLabel`` too (one of them at a
time).  Choosing regions is a swap heuristic rather than Karmada's exhaustive search,
which gives the same answer whenever the best-ranked regions are big enough.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from cloudcore.placement.clusters import ClusterView
from cloudcore.placement.errors import Unschedulable
from protocol.kinds.policies import FieldKey, SpreadConstraint, SpreadField

LOCALITY_SCORE = 100


@dataclass(frozen=True)
class Candidate:
    cluster: ClusterView
    score: int
    available: int  # free capacity + replicas already there

    @property
    def name(self) -> str:
        return self.cluster.name


def rank(clusters: Sequence[ClusterView], current: Mapping[str, int]) -> list[Candidate]:
    """Candidates best first: score desc, available replicas desc, name asc."""
    out = [
        Candidate(c, LOCALITY_SCORE if c.name in current else 0,
                  c.available_replicas + current.get(c.name, 0))
        for c in clusters
    ]
    out.sort(key=lambda c: (-c.score, -c.available, c.name))
    return out


def group_key(constraint: SpreadConstraint) -> Callable[[ClusterView], str | None]:
    """How a spread constraint groups node groups: by a topology field or a label."""
    if constraint.spreadByLabel:
        label = constraint.spreadByLabel
        return lambda c: c.labels.get(label)
    field = constraint.field
    assert field is not None and field is not SpreadField.CLUSTER
    key = FieldKey(field.value)
    return lambda c: c.topology(key)


def grouping_constraint(constraints: Sequence[SpreadConstraint]) -> SpreadConstraint | None:
    for sc in constraints:
        if sc.field is not SpreadField.CLUSTER:
            return sc
    return None


def select(
    candidates: list[Candidate],
    constraints: Sequence[SpreadConstraint],
    need_replicas: int | None,
) -> list[Candidate]:
    """The chosen groups.  ``need_replicas`` is the workload's replica count for
    Divided workloads (capacity matters) and None for Duplicated ones."""
    if not constraints:
        return list(candidates)
    by_cluster = next((sc for sc in constraints if sc.field is SpreadField.CLUSTER), None)
    by_group = grouping_constraint(constraints)
    if by_group is not None:
        assert by_cluster is not None  # validation makes a cluster constraint mandatory
        return _by_group(candidates, by_group, by_cluster)
    assert by_cluster is not None
    return _by_cluster(candidates, by_cluster, need_replicas)


def _total(chosen: Sequence[Candidate]) -> int:
    return sum(c.available for c in chosen)


def _by_cluster(
    candidates: list[Candidate], constraint: SpreadConstraint, need: int | None
) -> list[Candidate]:
    if len(candidates) < constraint.min_groups:
        raise Unschedulable(
            f"{len(candidates)} node group(s) fit but spreadConstraints ask for at least "
            f"{constraint.min_groups}"
        )
    count = min(len(candidates), constraint.max_groups)
    chosen, rest = list(candidates[:count]), list(candidates[count:])
    if need is None:
        return chosen
    at = len(chosen) - 1
    while _total(chosen) < need and at >= 0 and rest:
        best = max(range(len(rest)), key=lambda i: (rest[i].available, -i))
        if rest[best].available > chosen[at].available:
            chosen[at], rest[best] = rest[best], chosen[at]
        at -= 1
    if _total(chosen) < need:
        raise Unschedulable(
            f"the {len(chosen)} node group(s) spreadConstraints allow can take "
            f"{_total(chosen)} of {need} replicas"
        )
    return chosen


def _by_group(
    candidates: list[Candidate], by_group: SpreadConstraint, by_cluster: SpreadConstraint
) -> list[Candidate]:
    key = group_key(by_group)
    what = by_group.spreadByLabel or (by_group.field.value if by_group.field else "")
    members: dict[str, list[Candidate]] = {}
    for cand in candidates:  # already best first, so each member list is too
        value = key(cand.cluster)
        if value is not None:
            members.setdefault(value, []).append(cand)
    if len(members) < by_group.min_groups:
        raise Unschedulable(
            f"node groups fit in {len(members)} {what}(s) but spreadConstraints ask for at "
            f"least {by_group.min_groups}"
        )
    # Groups of groups ranked like their best member, then by total capacity.
    ranked = sorted(
        members,
        key=lambda g: (-members[g][0].score, -sum(c.available for c in members[g]), g),
    )
    chosen_groups = _choose_groups(ranked, members, by_group, by_cluster.min_groups)
    if chosen_groups is None:
        raise Unschedulable(
            f"no {by_group.min_groups}..{by_group.max_groups} {what}(s) hold the "
            f"{by_cluster.min_groups} node group(s) spreadConstraints ask for"
        )
    chosen = [members[g][0] for g in chosen_groups]
    spare = [c for g in chosen_groups for c in members[g][1:]]
    room = min(len(chosen) + len(spare), by_cluster.max_groups) - len(chosen)
    if room > 0:
        spare.sort(key=lambda c: -c.available)  # stable: ties keep their rank
        chosen += spare[:room]
    return chosen


def _choose_groups(
    ranked: list[str],
    members: Mapping[str, list[Candidate]],
    by_group: SpreadConstraint,
    need_clusters: int,
) -> list[str] | None:
    """The fewest best-ranked regions (at least minGroups, at most maxGroups) whose
    node groups number at least ``need_clusters``: start from the best ``k`` and swap
    the worst picks for the biggest unpicked regions until there are enough."""
    top = min(by_group.max_groups, len(ranked))
    for k in range(by_group.min_groups, top + 1):
        picked, rest = list(ranked[:k]), list(ranked[k:])
        at = k - 1
        while sum(len(members[g]) for g in picked) < need_clusters and at >= 0 and rest:
            best = max(range(len(rest)), key=lambda i: (len(members[rest[i]]), -i))
            if len(members[rest[best]]) > len(members[picked[at]]):
                picked[at], rest[best] = rest[best], picked[at]
            at -= 1
        if sum(len(members[g]) for g in picked) >= need_clusters:
            return picked
    return None
