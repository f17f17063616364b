"""One reconcile round as a pure function: from a snapshot of the store (and what the
controller remembers between rounds) to the writes that bring AppReplicas, App status,
Queue status and NodeGroup status in line.  No store, no asyncio; time is a parameter.

The round, in order:

1. **NodeGroups**: membership (first group by name keeps a node claimed twice) and
   status; each group becomes a placement :class:`~cloudcore.placement.ClusterView`
   (ready = it has a Ready member).  Groups without a Ready node are tracked for
   failover, nodes that are not Ready for deleting what cannot be confirmed.
2. **Housekeeping** of AppReplicas: a replica whose node no longer exists is deleted; a
   terminating one is deleted once the edge reports it Terminated, or once its node
   has not been Ready for ``lost_node_seconds``; one whose App is gone is set
   terminating.
3. **Node groups per App** (Karmada): the governing PropagationPolicy (an App whose
   own or policy ``schedulerName`` is another scheduler's is left alone) decides how
   many replicas each NodeGroup gets - the previous decision, kept in the App's
   ``status.placement``, is the binding state; failover evicts groups that have had no
   Ready node for the policy's toleration.  **An App no PropagationPolicy governs has
   one implicit group: every node** (the scheduler still keeps NotReady nodes out).
   Replicas in groups that lost them are set terminating; a group with more replicas
   than it was given loses its highest indices; the template of the others follows
   the App and its OverridePolicies.
4. **Nodes within the groups** (Volcano), in one session across all Apps so that fair
   share is cluster-wide: each (App, group) is a job restricted to the group's nodes by
   a synthetic membership label (:data:`GROUP_LABEL`) in its node selector, its pending
   replicas the group's shortfall, numbered with the App's lowest free indices.
   Bindings become new AppReplicas (template rendered for the group), evictions set
   replicas terminating.  A gang App (``minAvailable``) spread over several groups is
   one job per group, each with its proportional share of the gang minimum, and the
   App's bindings are dropped unless together they reach ``minAvailable``; an App with
   the implicit group is a single job and Volcano's gang rule applies as is.
5. **Status**: Apps (status.py), Queues (the session's shares), NodeGroups - each
   written only when it differs from what is stored.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloudcore.apps import replicas as rep
from cloudcore.apps.config import AppsControllerConfig
from cloudcore.apps.nodegroups import Membership, free_capacity, resolve_membership
from cloudcore.apps.policies import PolicyBook
from cloudcore.apps.status import NOMINATED_REASON, Waiting, app_status
from cloudcore.placement import (
    BindingState,
    ClusterView,
    OverrideError,
    OverridePolicyView,
    PropagationPolicyView,
    apply_overrides,
    due_evictions,
    estimate_replicas,
    evict,
    handled_by,
    next_deadline,
    override_policies_for,
    propagation_policy_for,
    reschedule_reason,
    schedule,
    track_unhealthy,
)
from cloudcore.scheduler import (
    BoundReplica,
    JobView,
    NodeView,
    SchedulerConfig,
    SessionResult,
    filter_nodes,
    node_from_object,
    queue_from_object,
    queue_status,
    with_default_queue,
)
from cloudcore.scheduler import schedule as run_session
from cloudcore.scheduler.resources import ZERO, Resources
from cloudcore.scheduler.views import app_request, free_indices, job_from_app
from protocol.errors import InvalidObject
from protocol.kinds.apps import APP, UNSCHEDULABLE_REASON
from protocol.kinds.nodegroups import NODE_GROUP
from protocol.kinds.scheduling import QUEUE
from protocol.quantity import QuantityError
from protocol.resources import dig, validate_object, validate_status

log = logging.getLogger(__name__)

IMPLICIT = ""
"""The implicit group of an App that no PropagationPolicy governs: every node."""
GROUP_LABEL = "scheduling.edgefleet.io/node-group"
"""Synthetic label the session's node views carry: the NodeGroup the node belongs to.
It exists only inside a session (never on a stored Node)."""
FOREIGN_SCHEDULER = "edgefleet.io/not-this-controller"
"""Scheduler name given to jobs that only hold resources (other schedulers' Apps,
replicas of deleted Apps): the session counts what they hold and places nothing."""

_FIT_MESSAGE = re.compile(r"\d+/\d+ nodes: [^;]*")

AppKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Snapshot:
    apps: Sequence[dict[str, Any]] = ()
    replicas: Sequence[dict[str, Any]] = ()
    propagation_policies: Sequence[dict[str, Any]] = ()
    override_policies: Sequence[dict[str, Any]] = ()
    node_groups: Sequence[dict[str, Any]] = ()
    nodes: Sequence[dict[str, Any]] = ()
    queues: Sequence[dict[str, Any]] = ()


@dataclass(frozen=True)
class Memory:
    """What the controller remembers between rounds: since when (on its clock) each
    NodeGroup has had no Ready node, and each node has not been Ready."""

    unhealthy_since: Mapping[str, float] = field(default_factory=dict)
    not_ready_since: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StatusWrite:
    kind: str
    namespace: str | None
    name: str
    status: dict[str, Any]


@dataclass
class Plan:
    """The writes of one round, to be made in this order, and when to look again even
    if nothing changes (``next_deadline``, on the controller's clock)."""

    deletes: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    creates: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[StatusWrite] = field(default_factory=list)
    memory: Memory = field(default_factory=Memory)
    next_deadline: float | None = None


def reconcile(snapshot: Snapshot, memory: Memory, now: float, config: AppsControllerConfig,
              policies: PolicyBook, wall: str) -> Plan:
    """Plan one round.  ``now`` is the controller's clock (seconds, any monotonic
    scale); ``wall`` the RFC 3339 time for conditions' lastTransitionTime."""
    return _Round(snapshot, memory, now, config, policies, wall).run()


def _key(obj: Mapping[str, Any]) -> AppKey:
    return (str(dig(obj, "metadata.namespace") or "default"), str(dig(obj, "metadata.name")))


def _replica_app(obj: Mapping[str, Any]) -> AppKey:
    return (str(dig(obj, "metadata.namespace") or "default"), str(dig(obj, "spec.app")))


@dataclass
class _AppWork:
    """One App's state during the round."""

    app: dict[str, Any]
    policy: PropagationPolicyView | None
    replicas: dict[int, dict[str, Any]]  # index -> AppReplica as it will be
    target: dict[str, int] = field(default_factory=dict)
    placement: dict[str, Any] | None = None
    decision_message: str = ""
    shortfall: int = 0  # replicas the node-group decision could not place anywhere
    problems: list[str] = field(default_factory=list)
    pending: dict[str, tuple[int, ...]] = field(default_factory=dict)  # group -> indices
    overrides: list[OverridePolicyView] | None = None  # those that apply, in order
    rendered: dict[str | None, dict[str, Any] | None] = field(default_factory=dict)
    render_errors: dict[str | None, str] = field(default_factory=dict)
    jobs: dict[str, str] = field(default_factory=dict)  # job key -> group
    waiting: list[Waiting] = field(default_factory=list)
    due: frozenset[str] = frozenset()

    @property
    def key(self) -> AppKey:
        return _key(self.app)

    @property
    def wanted(self) -> int:
        return int((self.app.get("spec") or {}).get("replicas", 1))

    @property
    def min_available(self) -> int:
        return max(1, int(dig(self.app, "spec.minAvailable") or 1))

    def group_key(self, obj: Mapping[str, Any]) -> str:
        """Which of the App's groups a replica counts in."""
        if self.policy is None:
            return IMPLICIT
        return rep.group_of(obj) or IMPLICIT


class _Round:
    def __init__(self, snapshot: Snapshot, memory: Memory, now: float,
                 config: AppsControllerConfig, policies: PolicyBook, wall: str) -> None:
        self.snap = snapshot
        self.now = now
        self.config = config
        self.wall = wall
        self.plan = Plan()
        self.deadlines: list[float] = []

        self.nodes: dict[str, NodeView] = {}
        for obj in snapshot.nodes:
            view = node_from_object(obj)
            self.nodes[view.name] = view
        self.membership: Membership = resolve_membership(snapshot.node_groups, self.nodes,
                                                         snapshot.nodes)
        self.group_objects = {str(dig(g, "metadata.name")): g for g in snapshot.node_groups}
        self.clusters: dict[str, ClusterView] = {
            name: ClusterView.from_nodegroup({**obj, "status": self.membership.statuses[name]})
            for name, obj in self.group_objects.items()
        }
        self.cluster_list = [self.clusters[name] for name in sorted(self.clusters)]
        self.views_by_request: dict[Resources, list[ClusterView]] = {}
        self.unhealthy = track_unhealthy(memory.unhealthy_since, self.clusters.values(), now)
        self.not_ready = {name: memory.not_ready_since.get(name, now)
                          for name, view in self.nodes.items() if not view.ready}

        self.propagation = policies.propagation(snapshot.propagation_policies)
        self.overrides: list[OverridePolicyView] = policies.overrides(snapshot.override_policies)
        self.policy_generation = {_key(p): int(dig(p, "metadata.generation") or 0)
                                  for p in snapshot.propagation_policies}
        self.apps = {_key(a): a for a in snapshot.apps}

        self.policy_of: dict[AppKey, PropagationPolicyView | None] = {}
        self.ours: set[AppKey] = set()
        self.free: dict[str, Resources] = {}
        self.replicas_by_app: dict[AppKey, dict[int, dict[str, Any]]] = {}
        self.used: dict[str, Resources] = {}
        self.works: dict[AppKey, _AppWork] = {}
        self.jobs: list[JobView] = []
        self.job_owner: dict[str, tuple[AppKey, str]] = {}

    # --- the round --------------------------------------------------------------------

    def run(self) -> Plan:
        self._find_policies()
        self._housekeeping()
        self._count_usage()
        self.free = {name: free_capacity(self.membership.members[name], self.nodes, self.used)
                     for name in self.clusters}
        for key in sorted(self.apps):
            try:
                self._place_groups(key, self.apps[key])
            except Exception:
                # One broken App must not stop placement for the others.
                log.exception("App %s/%s cannot be placed", *key)
                self.works.pop(key, None)
                mine = {job for job, (owner, _) in self.job_owner.items() if owner == key}
                self.jobs = [j for j in self.jobs if j.key not in mine]
                self._hold_all(key)
        for key in sorted(set(self.replicas_by_app) - set(self.works)):
            self._hold_all(key)
        result = run_session(
            list(self._session_nodes()),
            with_default_queue([queue_from_object(q) for q in self.snap.queues]),
            self.jobs,
            SchedulerConfig(scoring=self.config.scoring, preempt=self.config.preempt,
                            reclaim=self.config.reclaim,
                            scheduler_name=self.config.scheduler_name),
        )
        self._apply_session(result)
        self._write_statuses(result)
        self._lost_node_deadlines()
        self.plan.memory = Memory(self.unhealthy, self.not_ready)
        # A deadline already past was acted on in this round; the writes it caused
        # bring the next round.
        upcoming = [d for d in self.deadlines if d > self.now]
        self.plan.next_deadline = min(upcoming, default=None)
        return self.plan

    # --- 2. housekeeping --------------------------------------------------------------

    def _find_policies(self) -> None:
        """Which policy governs each App, and whether the App is ours to place."""
        for key, app in self.apps.items():
            previous = dig(app, "status.placement")
            claimed = previous.get("policy") if isinstance(previous, Mapping) else None
            policy = propagation_policy_for(app, self.propagation, claimed_by=claimed)
            self.policy_of[key] = policy
            if self._ours(app, policy):
                self.ours.add(key)

    def _housekeeping(self) -> None:
        for obj in self.snap.replicas:
            if _replica_app(obj) in self.apps and _replica_app(obj) not in self.ours:
                # Another scheduler's App: its replicas are that scheduler's business.
                self.replicas_by_app.setdefault(_replica_app(obj), {})[rep.index_of(obj)] = obj
                continue
            node = rep.node_of(obj)
            if node not in self.nodes:
                self.plan.deletes.append(obj)
                continue
            if rep.is_terminating(obj):
                lost_for = self.now - self.not_ready.get(node, self.now)
                if rep.has_terminated(obj) or (node in self.not_ready and
                                               lost_for >= self.config.lost_node_seconds):
                    self.plan.deletes.append(obj)
                    continue
            app = _replica_app(obj)
            held = self.replicas_by_app.setdefault(app, {})
            held[rep.index_of(obj)] = obj
            if app not in self.apps and not rep.is_terminating(obj):
                self._terminate(app, obj, rep.Termination.APP_DELETED)

    def _terminate(self, app: AppKey, obj: dict[str, Any], why: rep.Termination) -> None:
        update = rep.marked_terminating(obj, why)
        self.plan.updates.append(update)
        self.replicas_by_app[app][rep.index_of(obj)] = rep.as_stored(obj, update)

    def _count_usage(self) -> None:
        for held in self.replicas_by_app.values():
            for obj in held.values():
                if rep.holds_resources(obj):
                    node = rep.node_of(obj)
                    self.used[node] = self.used.get(node, ZERO) + rep.request_of(obj)

    def _hold_all(self, key: AppKey) -> None:
        """Replicas nobody here places (another scheduler's App, a deleted App): one job
        per replica that only holds what the replica requests."""
        for index, obj in sorted(self.replicas_by_app.get(key, {}).items()):
            if not rep.holds_resources(obj):
                continue
            self.jobs.append(JobView(
                key=f"{key[0]}/{key[1]}~{index}", request=rep.request_of(obj),
                bound=(BoundReplica(index, rep.node_of(obj), rep.is_terminating(obj)),),
                scheduler_name=FOREIGN_SCHEDULER))

    # --- 3. node groups per App -------------------------------------------------------

    def _ours(self, app: Mapping[str, Any], policy: PropagationPolicyView | None) -> bool:
        name = dig(app, "spec.schedulerName")
        if name not in (None, "", self.config.scheduler_name):
            return False
        return policy is None or handled_by(policy.spec, self.config.policy_scheduler_name)

    def _place_groups(self, key: AppKey, app: dict[str, Any]) -> None:
        previous = dig(app, "status.placement")
        previous = previous if isinstance(previous, Mapping) else None
        policy = self.policy_of[key]
        if key not in self.ours:
            self._hold_all(key)
            return
        work = _AppWork(app, policy, self.replicas_by_app.setdefault(key, {}))
        self.works[key] = work
        if policy is None:
            work.target = {IMPLICIT: work.wanted}
        else:
            self._decide(work, policy, previous)
        self._fit_replicas_to_target(work)
        self._assign_pending(work)
        self._add_jobs(work)

    def _decide(self, work: _AppWork, policy: PropagationPolicyView,
                previous: Mapping[str, Any] | None) -> None:
        """Karmada's decision: how many replicas each NodeGroup gets."""
        groups = (previous or {}).get("groups")
        if isinstance(groups, Mapping):
            current = {str(g): int(n) for g, n in groups.items() if int(n) > 0}
        else:  # no decision recorded yet: what is running is the binding
            current = {}
            for obj in work.replicas.values():
                group = rep.group_of(obj)
                if group is not None and not rep.is_terminating(obj):
                    current[group] = current.get(group, 0) + 1
        generation = self.policy_generation.get((policy.namespace, policy.name), 0)
        changed = previous is None or (previous.get("policy"), previous.get(
            "policyGeneration")) != (policy.name, generation)
        observed = (previous or {}).get("affinityName")
        state = BindingState(
            replicas=work.wanted, current=current,
            observed_affinity=str(observed) if observed else None,
            uid=str(dig(work.app, "metadata.uid") or ""))
        failover = policy.spec.failover
        work.due = due_evictions(current, self.unhealthy, self.now, failover)
        if work.due:
            log.info("App %s/%s: node groups %s have had no Ready node for the toleration; "
                     "their replicas go elsewhere", *work.key, ", ".join(sorted(work.due)))
        state = evict(state, work.due)
        placement = policy.spec.placement
        affinity = state.observed_affinity
        target = {g: n for g, n in state.current.items() if n > 0}
        if reschedule_reason(placement, self.cluster_list, state,
                             placement_changed=changed) is not None:
            views = self._views_for(app_request(work.app.get("spec") or {}))
            decision = schedule(placement, views, state)
            target, affinity = dict(decision.clusters), decision.affinity_name
            if not decision.scheduled:
                work.decision_message = decision.message
                work.shortfall = max(0, work.wanted - sum(target.values()))
        work.target = target
        deadline = next_deadline(target, self.unhealthy, failover)
        if deadline is not None:
            self.deadlines.append(deadline)
        work.placement = {"policy": policy.name, "policyGeneration": generation,
                          "groups": dict(sorted(target.items()))}
        if affinity:
            work.placement["affinityName"] = affinity

    def _views_for(self, request: Resources) -> list[ClusterView]:
        """The groups with how many more replicas asking for ``request`` fit in each
        (the same for every App with that request: computed once per round)."""
        views = self.views_by_request.get(request)
        if views is None:
            views = []
            for cluster in self.cluster_list:
                free = self.free[cluster.name]
                available = estimate_replicas({"cpu": free.cpu, "memory": free.memory},
                                              {"cpu": request.cpu, "memory": request.memory})
                views.append(dataclasses.replace(cluster, available_replicas=available))
            self.views_by_request[request] = views
        return views

    def _fit_replicas_to_target(self, work: _AppWork) -> None:
        """Take replicas away from groups that have too many, and bring the templates
        of the others up to date."""
        by_group: dict[str, list[dict[str, Any]]] = {}
        for obj in sorted(work.replicas.values(), key=rep.index_of):
            if rep.is_terminating(obj):
                continue
            group = work.group_key(obj)
            node_group = self.membership.group_of.get(rep.node_of(obj))
            if work.policy is not None and group != IMPLICIT and node_group != group:
                self._terminate(work.key, obj, rep.Termination.LEFT_GROUP)
                continue
            by_group.setdefault(group, []).append(obj)
        for group, members in sorted(by_group.items()):
            keep = work.target.get(group, 0)
            if keep < len(members):
                if group in work.due:
                    why = rep.Termination.FAILED_OVER
                elif group in work.target or work.wanted == 0:
                    why = rep.Termination.SCALED_DOWN
                else:
                    why = rep.Termination.RESCHEDULED
                for obj in members[keep:]:  # highest indices first
                    self._terminate(work.key, obj, why)
            for obj in members[:keep]:
                self._refresh_template(work, obj)

    def _render(self, work: _AppWork, group: str | None) -> dict[str, Any] | None:
        """The App as ``group`` runs it (None: not a member of any group), or None
        with the problem noted when an override cannot be applied.  Read only."""
        if group not in work.rendered:
            if work.overrides is None:
                work.overrides = override_policies_for(work.app, self.overrides)
            # Overrides never reach status, and copying it for every group is costly.
            bare = {k: v for k, v in work.app.items() if k != "status"}
            if not work.overrides:
                work.rendered[group] = bare
                return bare
            view = self.clusters.get(group) if group is not None else None
            try:
                work.rendered[group] = apply_overrides(bare, work.overrides,
                                                       view or ClusterView(name=""))
            except OverrideError as exc:
                problem = f"node group {group}: {exc}" if group else str(exc)
                work.problems.append(problem)
                work.render_errors[group] = problem
                work.rendered[group] = None
        return work.rendered[group]

    def _render_group(self, work: _AppWork, group: str, node: str) -> str | None:
        """The group a replica of ``group`` on ``node`` is rendered for and recorded
        in: its own, or for the implicit group whichever group the node is in."""
        return group if group != IMPLICIT else self.membership.group_of.get(node)

    def _refresh_template(self, work: _AppWork, obj: dict[str, Any]) -> None:
        rendered = self._render(work, rep.group_of(obj))
        if rendered is None:
            return
        template = rendered.get("spec") or {}
        if template != dig(obj, "spec.template"):
            update = rep.with_template(obj, template)
            self.plan.updates.append(update)
            work.replicas[rep.index_of(obj)] = rep.as_stored(obj, update)

    def _assign_pending(self, work: _AppWork) -> None:
        filled: dict[str, int] = {}
        for obj in work.replicas.values():
            if not rep.is_terminating(obj):
                group = work.group_key(obj)
                filled[group] = filled.get(group, 0) + 1
        counts = {g: n - filled.get(g, 0) for g, n in sorted(work.target.items())
                  if n > filled.get(g, 0)}
        indices = iter(free_indices(work.replicas, sum(counts.values()) + work.shortfall))
        for group, count in counts.items():
            work.pending[group] = tuple(next(indices) for _ in range(count))
        for index in indices:
            work.waiting.append(Waiting(index, UNSCHEDULABLE_REASON, work.decision_message))

    def _add_jobs(self, work: _AppWork) -> None:
        by_group: dict[str, list[dict[str, Any]]] = {group: [] for group in work.target}
        for obj in work.replicas.values():
            by_group.setdefault(work.group_key(obj), []).append(obj)
        for group, members in sorted(by_group.items()):
            base = job_from_app(work.app, members)
            pending = work.pending.get(group, ())
            selector = dict(base.node_selector)
            request = base.request
            key = base.key
            if group != IMPLICIT:
                key = f"{base.key}@{group}"
                selector[GROUP_LABEL] = group
                rendered = self._render(work, group) if pending else None
                if rendered is not None:
                    spec = rendered.get("spec") or {}
                    request = app_request(spec)
                    selector = {**(spec.get("nodeSelector") or {}), GROUP_LABEL: group}
                elif pending:  # the override failed: nothing can be created there
                    problem = work.render_errors.get(group, "")
                    work.waiting += [Waiting(i, UNSCHEDULABLE_REASON, problem) for i in pending]
                    pending = work.pending[group] = ()
            work.jobs[key] = group
            self.job_owner[key] = (work.key, group)
            self.jobs.append(dataclasses.replace(
                base, key=key, request=request, node_selector=selector, pending=pending,
                min_available=self._gang_share(work, group), scheduler_name=None))

    def _gang_share(self, work: _AppWork, group: str) -> int:
        """The part of the App's gang minimum that a group's job must reach on its own:
        all of it for the implicit group, else proportional to the group's replicas."""
        if work.min_available <= 1 or group == IMPLICIT:
            return work.min_available
        share = math.ceil(work.min_available * work.target.get(group, 0) / max(1, work.wanted))
        return max(1, share)

    # --- 4. nodes within the groups ---------------------------------------------------

    def _session_nodes(self) -> list[NodeView]:
        out = []
        for name, view in sorted(self.nodes.items()):
            group = self.membership.group_of.get(name)
            if group is not None:
                view = dataclasses.replace(view, labels={**view.labels, GROUP_LABEL: group})
            out.append(view)
        return out

    def _apply_session(self, result: SessionResult) -> None:
        placed: dict[AppKey, list[tuple[str, int, str]]] = {}
        for binding in result.bindings:
            owner = self.job_owner.get(binding.job)
            if owner is not None:
                placed.setdefault(owner[0], []).append((owner[1], binding.index, binding.node))
        nominated: dict[AppKey, set[int]] = {}
        for binding in result.nominations:
            owner = self.job_owner.get(binding.job)
            if owner is not None:
                nominated.setdefault(owner[0], set()).add(binding.index)
        for eviction in result.evictions:
            owner = self.job_owner.get(eviction.job)
            if owner is None:
                continue
            obj = self.replicas_by_app.get(owner[0], {}).get(eviction.index)
            if obj is not None and not rep.is_terminating(obj):
                self._terminate(owner[0], obj, rep.Termination.EVICTED)
        used_after = dict(self.used)
        for key, work in self.works.items():
            bindings = placed.get(key, [])
            gang = ""
            if not self._gang_complete(work, bindings, nominated.get(key, set())):
                gang = (f"only {self._filled(work) + len(bindings)} of the "
                        f"{work.min_available} replicas minAvailable asks for can be placed")
                bindings = []
            created: set[int] = set()
            failed: dict[int, str] = {}
            for group, index, node in bindings:
                problem = self._create(work, group, index, node)
                if problem:
                    failed[index] = problem
                    continue
                created.add(index)
                request = rep.request_of(work.replicas[index])
                used_after[node] = used_after.get(node, ZERO) + request
            for job, group in work.jobs.items():
                why = result.unschedulable.get(job, "")
                for index in work.pending.get(group, ()):
                    if index in created:
                        continue
                    if index in failed:
                        work.waiting.append(Waiting(index, UNSCHEDULABLE_REASON, failed[index]))
                    elif index in nominated.get(key, set()):
                        work.waiting.append(Waiting(
                            index, NOMINATED_REASON,
                            "will fit once evicted replicas have stopped"))
                    else:
                        message = (self._explain(work, group, why, used_after) if why
                                   else gang or "waiting for a later session")
                        work.waiting.append(Waiting(index, UNSCHEDULABLE_REASON, message))

    def _filled(self, work: _AppWork) -> int:
        return sum(1 for o in work.replicas.values() if not rep.is_terminating(o))

    def _gang_complete(self, work: _AppWork, bindings: Sequence[tuple[str, int, str]],
                       nominated: set[int]) -> bool:
        if work.min_available <= 1 or len(work.jobs) <= 1 or not bindings:
            return True
        return self._filled(work) + len(bindings) + len(nominated) >= work.min_available

    def _create(self, work: _AppWork, group: str, index: int, node: str) -> str | None:
        """Plan the AppReplica for a binding; the problem when it cannot be made."""
        render_group = self._render_group(work, group, node)
        rendered = self._render(work, render_group)
        if rendered is None:
            return work.render_errors.get(render_group, "the App cannot be rendered")
        obj = rep.build_replica(work.app, rendered, index, node, render_group,
                                self.config.termination_grace_seconds)
        try:
            validate_object(obj)
        except InvalidObject as exc:
            # An override produced something the edge could not run: say so, create nothing.
            where = f"node group {render_group}: " if render_group else ""
            problem = f"{where}the App as rendered is invalid: {exc}"
            work.problems.append(problem)
            return problem
        self.plan.creates.append(obj)
        work.replicas[index] = obj
        return None

    def _explain(self, work: _AppWork, group: str, why: str,
                 used: Mapping[str, Resources]) -> str:
        """The session's reason, with a node count (``0/5 nodes: ...``) for a group's job
        restated over the group's own nodes - the session counted every other node as
        not matching the job's node selector."""
        if group == IMPLICIT:
            return why
        members = [self.nodes[n] for n in self.membership.members.get(group, ())]
        rendered = work.rendered.get(group)
        spec = (rendered or work.app).get("spec") or {}
        try:
            request = app_request(spec)
        except QuantityError:
            request = ZERO
        local = filter_nodes(members, request, spec.get("nodeSelector") or {}, used).message()
        return f"node group {group}: " + _FIT_MESSAGE.sub(local, why)

    # --- 5. status --------------------------------------------------------------------

    def _write_statuses(self, result: SessionResult) -> None:
        for _, work in sorted(self.works.items()):
            self._app_status(work)
        for queue in self.snap.queues:
            name = str(dig(queue, "metadata.name"))
            summary = result.queues.get(name)
            if summary is None:
                continue
            status = queue_status(summary, str(dig(queue, "status.state") or "Open"))
            self._write_if_changed(QUEUE.kind, queue, status)
        for name, obj in sorted(self.group_objects.items()):
            self._write_if_changed(NODE_GROUP.kind, obj, self.membership.statuses[name])

    def _app_status(self, work: _AppWork) -> None:
        parts = list(dict.fromkeys(
            [*work.problems, work.decision_message,
             *(w.message for w in sorted(work.waiting, key=lambda w: w.index))]))
        message = "; ".join(p for p in parts if p)
        if not message and work.policy is not None and work.target:
            message = "node groups: " + ", ".join(
                f"{g} {n}" for g, n in sorted(work.target.items()))
        status = app_status(work.app, list(work.replicas.values()), work.waiting, message,
                            work.placement, self.wall)
        self._write_if_changed(APP.kind, work.app, status)

    def _write_if_changed(self, kind: str, obj: Mapping[str, Any], status: dict[str, Any]) -> None:
        if obj.get("status") == status:
            return
        info = {APP.kind: APP, QUEUE.kind: QUEUE, NODE_GROUP.kind: NODE_GROUP}[kind]
        try:
            validate_status(info, status)
        except InvalidObject as exc:
            log.error("not writing an invalid status for %s %s: %s", kind,
                      dig(obj, "metadata.name"), exc)
            return
        namespace = dig(obj, "metadata.namespace") or None
        self.plan.statuses.append(StatusWrite(kind, namespace, str(dig(obj, "metadata.name")),
                                              status))

    def _lost_node_deadlines(self) -> None:
        for held in self.replicas_by_app.values():
            for obj in held.values():
                node = rep.node_of(obj)
                if rep.is_terminating(obj) and node in self.not_ready:
                    self.deadlines.append(self.not_ready[node] + self.config.lost_node_seconds)
