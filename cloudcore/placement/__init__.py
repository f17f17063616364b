"""Placement across NodeGroups with Karmada's semantics (reference/placement-scheduling.md
§1-§3): which PropagationPolicy governs a workload, which node groups it may use, how
its replicas are divided among them, failover when a group goes down, and how
OverridePolicies tailor it per group.

Pure functions over plain values - no store, no asyncio, no clock (time is passed in).
The scheduler loop calls, per workload:

1. :func:`propagation_policy_for` (skip it unless :func:`handled_by` says the policy is
   ours);
2. :func:`track_unhealthy` / :func:`due_evictions` / :func:`evict` for failover;
3. :func:`reschedule_reason`, and when it gives one, :func:`schedule` -> :class:`Decision`;
4. :func:`render_for_group` for each chosen group.
"""

from cloudcore.placement.apportion import names_descending_for, webster
from cloudcore.placement.clusters import (
    NOT_READY_TAINT,
    NOT_READY_TAINT_KEY,
    ClusterView,
    Taint,
    affinity_matches,
    estimate_replicas,
)
from cloudcore.placement.errors import Unschedulable
from cloudcore.placement.failover import due_evictions, next_deadline, track_unhealthy
from cloudcore.placement.matching import (
    ImplicitPriority,
    OverridePolicyView,
    PropagationPolicyView,
    handled_by,
    override_policies_for,
    propagation_policy_for,
)
from cloudcore.placement.overrides import OverrideError, apply_overrides, render_for_group
from cloudcore.placement.schedule import (
    BindingState,
    Decision,
    evict,
    reschedule_reason,
    schedule,
)

__all__ = [
    "NOT_READY_TAINT",
    "NOT_READY_TAINT_KEY",
    "BindingState",
    "ClusterView",
    "Decision",
    "ImplicitPriority",
    "OverrideError",
    "OverridePolicyView",
    "PropagationPolicyView",
    "Taint",
    "Unschedulable",
    "affinity_matches",
    "apply_overrides",
    "due_evictions",
    "estimate_replicas",
    "evict",
    "handled_by",
    "names_descending_for",
    "next_deadline",
    "override_policies_for",
    "propagation_policy_for",
    "render_for_group",
    "reschedule_reason",
    "schedule",
    "track_unhealthy",
    "webster",
]
