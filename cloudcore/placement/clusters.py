"""The placement view of a NodeGroup (Karmada's member cluster) and the per-group
tests a policy applies to it: cluster affinity, taints and tolerations, capacity.

Nothing here reads the store: the scheduler loop builds one :class:`ClusterView` per
NodeGroup (:meth:`ClusterView.from_nodegroup`) with the free capacity it estimated for
the workload at hand (:func:`estimate_replicas`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from protocol.kinds.policies import (
    ClusterAffinity,
    FieldKey,
    TaintEffect,
    Toleration,
    TolerationOperator,
)

NOT_READY_TAINT_KEY = "nodegroup.edgefleet.io/not-ready"
UNLIMITED_REPLICAS = 2**31 - 1  # what the estimate is when nothing limits it


@dataclass(frozen=True)
class Taint:
    key: str
    effect: TaintEffect
    value: str = ""

    def __str__(self) -> str:
        value = f"={self.value}" if self.value else ""
        return f"{self.key}{value}:{self.effect.value}"


NOT_READY_TAINT = Taint(NOT_READY_TAINT_KEY, TaintEffect.NO_SCHEDULE)


@dataclass(frozen=True)
class ClusterView:
    """One NodeGroup as placement sees it.

    ``available_replicas`` is how many *more* replicas of the workload being placed
    fit in the group's free capacity (Karmada's AllocatableReplicas); it only matters
    for dynamic-weight and Aggregated division and for capacity-aware spreading.
    A group that is not ``ready`` (no Ready node) carries an implicit
    ``nodegroup.edgefleet.io/not-ready:NoSchedule`` taint, as Karmada (v1.14+) taints
    a NotReady cluster: new replicas avoid it, replicas already there stay.
    """

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    region: str | None = None
    zone: str | None = None
    provider: str | None = None
    ready: bool = True
    available_replicas: int = 0
    taints: tuple[Taint, ...] = ()

    @property
    def effective_taints(self) -> tuple[Taint, ...]:
        return self.taints if self.ready else (*self.taints, NOT_READY_TAINT)

    def topology(self, key: FieldKey) -> str | None:
        return {FieldKey.REGION: self.region, FieldKey.ZONE: self.zone,
                FieldKey.PROVIDER: self.provider}[key]

    @classmethod
    def from_nodegroup(
        cls,
        group: Mapping[str, Any],
        *,
        available_replicas: int = 0,
        taints: tuple[Taint, ...] = (),
    ) -> ClusterView:
        """Build the view from a stored NodeGroup object: labels from its metadata,
        region/zone/provider from its spec, ready when ``status.readyNodes > 0``."""
        meta = group.get("metadata") or {}
        spec = group.get("spec") or {}
        status = group.get("status") or {}
        return cls(
            name=str(meta.get("name")),
            labels=dict(meta.get("labels") or {}),
            region=spec.get("region") or None,
            zone=spec.get("zone") or None,
            provider=spec.get("provider") or None,
            ready=int(status.get("readyNodes") or 0) > 0,
            available_replicas=available_replicas,
            taints=taints,
        )


def affinity_matches(affinity: ClusterAffinity | None, cluster: ClusterView) -> bool:
    """Karmada's ClusterMatches: ``exclude`` always wins; then every criterion that is
    set (label selector, field selector, non-empty clusterNames) must hold; an affinity
    with none set (or no affinity) matches every group."""
    if affinity is None:
        return True
    if cluster.name in (affinity.exclude or ()):
        return False
    if affinity.labelSelector is not None and not affinity.labelSelector.selector.matches(
        cluster.labels
    ):
        return False
    if affinity.fieldSelector is not None and not affinity.fieldSelector.matches(
        {key: cluster.topology(key) for key in FieldKey}
    ):
        return False
    return not affinity.clusterNames or cluster.name in affinity.clusterNames


def tolerates(toleration: Toleration, taint: Taint) -> bool:
    """Kubernetes' rule: matching effect (empty = any), matching key (empty key with
    Exists = any), and for Equal (the default) an equal value."""
    if toleration.effect is not None and toleration.effect is not taint.effect:
        return False
    if toleration.key and toleration.key != taint.key:
        return False
    if toleration.operator is TolerationOperator.EXISTS:
        return True
    return (toleration.value or "") == taint.value


def untolerated_taint(cluster: ClusterView, tolerations: Iterable[Toleration]) -> Taint | None:
    """The first NoSchedule/NoExecute taint of the group that no toleration covers
    (PreferNoSchedule never blocks)."""
    tols = list(tolerations)
    for taint in cluster.effective_taints:
        if taint.effect is TaintEffect.PREFER_NO_SCHEDULE:
            continue
        if not any(tolerates(t, taint) for t in tols):
            return taint
    return None


def estimate_replicas(free: Mapping[str, int], request: Mapping[str, int]) -> int:
    """Karmada's general estimator (§3.2): how many replicas needing ``request`` fit in
    ``free`` - the minimum over requested resources of ``floor(free / request)``.
    Both are in the same integer units per resource (millicores, bytes).  A resource
    the group does not have, or has none of, fits nothing; a workload that requests
    nothing is not limited (:data:`UNLIMITED_REPLICAS`)."""
    fits = UNLIMITED_REPLICAS
    for name, need in request.items():
        if need <= 0:
            continue
        have = free.get(name, 0)
        fits = min(fits, have // need if have > 0 else 0)
    return fits
