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

Cost.  A round recomputes the whole plan, so that nothing depends on which events
arrived.  What makes that affordable at thousands of Apps is the
:class:`~cloudcore.apps.memo.Memo`: it keeps pure results between rounds under
everything they depend on (node views and membership, parsed policies, which policies
match an App, renderings with overrides, validity of a rendering, what each AppReplica
object says).  And an App the last round changed nothing about, whose App object,
replica objects, policy, cluster and OverridePolicies are all the very same, keeps its
node-group decision, jobs and status from that round (:class:`_Settled`).  The
scheduling session itself always runs in full: fair share is cluster-wide.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import math
import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloudcore.apps import replicas as rep
from cloudcore.apps.config import AppsControllerConfig
from cloudcore.apps.memo import ClusterState, Memo, ReplicaFacts, labels_key
from cloudcore.apps.nodegroups import Membership, free_capacity
from cloudcore.apps.status import NOMINATED_REASON, Waiting, app_status
from cloudcore.placement import (
    BindingState,
    ClusterView,
    OverrideError,
    OverridePolicyView,
    PropagationPolicyView,
    affinity_matches,
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
    queue_from_object,
    queue_status,
    with_default_queue,
)
from cloudcore.scheduler import schedule as run_session
from cloudcore.scheduler.resources import ZERO, Resources
from cloudcore.scheduler.views import ReplicaSlot, app_request, free_indices, job_from_slots
from protocol.errors import InvalidObject
from protocol.kinds.apps import APP, UNSCHEDULABLE_REASON
from protocol.kinds.nodegroups import NODE_GROUP
from protocol.kinds.scheduling import QUEUE
from protocol.quantity import QuantityError
from protocol.resources import check_dns_subdomain, dig, validate_object, validate_status

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
    reused: int = 0  # Apps whose placement was taken from the round before (for metrics)


def reconcile(snapshot: Snapshot, memory: Memory, now: float, config: AppsControllerConfig,
              memo: Memo, wall: str) -> Plan:
    """Plan one round.  ``now`` is the controller's clock (seconds, any monotonic
    scale); ``wall`` the RFC 3339 time for conditions' lastTransitionTime.  ``memo``
    keeps pure results between rounds (pass the same one every round: the plan is the
    same as with a new one, only faster)."""
    plan = _Round(snapshot, memory, now, config, memo, wall).run()
    memo.next_round()
    return plan


def _key(obj: Mapping[str, Any]) -> AppKey:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or "default"), str(meta.get("name")))


def _replica_app(obj: Mapping[str, Any]) -> AppKey:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or "default"), str((obj.get("spec") or {}).get("app")))


def _spec_version(app: Mapping[str, Any]) -> Any:
    """What identifies the App's spec: its generation when the store has given it one."""
    meta = app.get("metadata") or {}
    generation = meta.get("generation")
    if isinstance(generation, int):
        return (meta.get("uid"), generation)
    return json.dumps(app.get("spec"), sort_keys=True, default=str)


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
    render_keys: dict[str | None, Hashable] = field(default_factory=dict)
    version: tuple[Hashable, ...] | None = None
    job_views: list[JobView] = field(default_factory=list)
    # For the next round (see _Settled): did placement read free capacity, did the round
    # write anything for the App, is its status as stored.
    used_capacity: bool = False
    wrote: bool = False
    status_same: bool = True
    reused: _Settled | None = None
    overridden: set[str | None] = field(default_factory=set)  # groups an override changed
    jobs: dict[str, str] = field(default_factory=dict)  # job key -> group
    waiting: list[Waiting] = field(default_factory=list)
    due: frozenset[str] = frozenset()

    @property
    def key(self) -> AppKey:
        return _key(self.app)

    @property
    def wanted(self) -> int:
        return int((self.app.get("spec") or {}).get("replicas", 1))

    @functools.cached_property
    def min_available(self) -> int:
        return max(1, int(dig(self.app, "spec.minAvailable") or 1))

    def group_key(self, facts: ReplicaFacts) -> str:
        """Which of the App's groups a replica counts in."""
        if self.policy is None:
            return IMPLICIT
        return facts.group or IMPLICIT


@dataclass(frozen=True, eq=False)
class _Settled:
    """An App whose last round changed nothing: no write, nothing pending or waiting,
    status as stored, placement that did not depend on free capacity, no NodeGroup
    down.  The per-App part of a round (node groups, replicas to take away, jobs) is a
    pure function of what is kept here - the App and its replica objects, its policy
    and that policy's generation, the cluster (nodes, membership, NodeGroups as
    placement sees them), the OverridePolicies and the settings - so while all of it is
    the very same, the work and jobs are the same too, and its status needs no look."""

    app: Mapping[str, Any]
    policy: PropagationPolicyView | None
    generation: int | None
    replicas: dict[int, dict[str, Any]]
    cluster: ClusterState
    clusters: object
    overrides: tuple[Any, ...]
    config: AppsControllerConfig
    work: _AppWork


class _Round:
    def __init__(self, snapshot: Snapshot, memory: Memory, now: float,
                 config: AppsControllerConfig, memo: Memo, wall: str) -> None:
        self.snap = snapshot
        self.now = now
        self.config = config
        self.memo = memo
        self.wall = wall
        self.plan = Plan()
        self.deadlines: list[float] = []

        self.cluster = memo.cluster(snapshot.nodes, snapshot.node_groups)
        self.facts = memo.replica
        self.nodes: Mapping[str, NodeView] = self.cluster.nodes
        self.membership: Membership = self.cluster.membership
        self.group_objects = {str(dig(g, "metadata.name")): g for g in snapshot.node_groups}
        self.clusters: dict[str, ClusterView] = {
            name: ClusterView.from_nodegroup({**obj, "status": self.membership.statuses[name]})
            for name, obj in self.group_objects.items()
        }
        self.cluster_list = [self.clusters[name] for name in sorted(self.clusters)]
        self.views_by_request: dict[Resources, list[ClusterView]] = {}
        self.unhealthy = track_unhealthy(memory.unhealthy_since, self.clusters.values(), now)
        self.clusters_token = memo.clusters_token(self.cluster_list)
        # With a NodeGroup down, placement depends on the clock (failover): no reuse.
        self.steady = not self.unhealthy
        self.not_ready = {name: memory.not_ready_since.get(name, now)
                          for name, view in self.nodes.items() if not view.ready}

        self.propagation = memo.policies.propagation(snapshot.propagation_policies)
        self.overrides: list[OverridePolicyView] = memo.policies.overrides(
            snapshot.override_policies)
        # The policies as they are this round, for the keys of what the memo keeps.
        self.propagation_version = tuple(_versions(snapshot.propagation_policies))
        self.override_version = tuple(_versions(snapshot.override_policies))
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
        self._keep_settled()
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
            labels = labels_key(dig(app, "metadata.labels"))
            policy = self.memo.matches.get(
                ("propagation", key, labels, claimed, self.propagation_version),
                functools.partial(propagation_policy_for, app, self.propagation,
                                  claimed_by=claimed))
            self.policy_of[key] = policy
            if self._ours(app, policy):
                self.ours.add(key)

    def _housekeeping(self) -> None:
        facts_of = self.facts
        for obj in self.snap.replicas:
            facts = facts_of(obj)
            app = facts.app
            if app in self.apps and app not in self.ours:
                # Another scheduler's App: its replicas are that scheduler's business.
                self.replicas_by_app.setdefault(app, {})[facts.index] = obj
                continue
            node = facts.node
            if node not in self.nodes:
                self.plan.deletes.append(obj)
                continue
            if facts.terminating:
                lost_for = self.now - self.not_ready.get(node, self.now)
                if facts.terminated or (node in self.not_ready and
                                        lost_for >= self.config.lost_node_seconds):
                    self.plan.deletes.append(obj)
                    continue
            held = self.replicas_by_app.setdefault(app, {})
            held[facts.index] = obj
            if app not in self.apps and not facts.terminating:
                self._terminate(app, obj, rep.Termination.APP_DELETED)

    def _terminate(self, app: AppKey, obj: dict[str, Any], why: rep.Termination) -> None:
        update = rep.marked_terminating(obj, why)
        self.plan.updates.append(update)
        work = self.works.get(app)
        if work is not None:
            work.wrote = True
        self.replicas_by_app[app][rep.index_of(obj)] = rep.as_stored(obj, update)

    def _count_usage(self) -> None:
        facts_of = self.facts
        used = self.used
        for held in self.replicas_by_app.values():
            for obj in held.values():
                facts = facts_of(obj)
                if facts.holds:
                    node = facts.node
                    used[node] = used.get(node, ZERO) + facts.request

    def _hold_all(self, key: AppKey) -> None:
        """Replicas nobody here places (another scheduler's App, a deleted App): one job
        per replica that only holds what the replica requests."""
        for index, obj in sorted(self.replicas_by_app.get(key, {}).items()):
            facts = self.facts(obj)
            if not facts.holds:
                continue
            self.jobs.append(JobView(
                key=f"{key[0]}/{key[1]}~{index}", request=facts.request,
                bound=(BoundReplica(index, facts.node, facts.terminating),),
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
        if self._reuse_settled(key, app, policy):
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

    def _generation_of(self, policy: PropagationPolicyView | None) -> int | None:
        if policy is None:
            return None
        return self.policy_generation.get((policy.namespace, policy.name), 0)

    def _reuse_settled(self, key: AppKey, app: dict[str, Any],
                       policy: PropagationPolicyView | None) -> bool:
        """Take the App's work and jobs from the last round if it was settled then and
        nothing its placement reads has changed since (see :class:`_Settled`)."""
        entry = self.memo.settled.get(key)
        if (not self.steady or not isinstance(entry, _Settled) or entry.app is not app
                or entry.policy is not policy or entry.cluster is not self.cluster
                or entry.clusters is not self.clusters_token
                or entry.generation != self._generation_of(policy)
                or entry.overrides != self.override_version or entry.config != self.config):
            return False
        replicas = self.replicas_by_app.setdefault(key, {})
        if len(replicas) != len(entry.replicas) or any(
                entry.replicas.get(index) is not obj for index, obj in replicas.items()):
            return False
        work = copy.copy(entry.work)
        work.replicas = replicas
        work.waiting, work.problems = [], []
        work.reused = entry
        self.plan.reused += 1
        self.works[key] = work
        for job in work.job_views:
            self.jobs.append(job)
            self.job_owner[job.key] = (key, work.jobs[job.key])
        return True

    def _keep_settled(self) -> None:
        """Remember, for the next round, the Apps this round changed nothing about."""
        if not self.steady:
            return
        for key, work in self.works.items():
            if work.wrote or not work.status_same:
                continue
            if work.reused is not None:
                self.memo.keep_settled(key, work.reused)
                continue
            if (work.used_capacity or work.waiting or work.problems or work.due
                    or work.decision_message or work.shortfall
                    or any(work.pending.values())):
                continue
            self.memo.keep_settled(key, _Settled(
                work.app, work.policy, self._generation_of(work.policy), dict(work.replicas),
                self.cluster, self.clusters_token, self.override_version, self.config, work))

    def _decide(self, work: _AppWork, policy: PropagationPolicyView,
                previous: Mapping[str, Any] | None) -> None:
        """Karmada's decision: how many replicas each NodeGroup gets."""
        groups = (previous or {}).get("groups")
        if isinstance(groups, Mapping):
            current = {str(g): int(n) for g, n in groups.items() if int(n) > 0}
        else:  # no decision recorded yet: what is running is the binding
            current = {}
            for obj in work.replicas.values():
                facts = self.facts(obj)
                group = facts.group
                if group is not None and not facts.terminating:
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
            work.used_capacity = True
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
        for _, obj in sorted(work.replicas.items()):
            facts = self.facts(obj)
            if facts.terminating:
                continue
            group = work.group_key(facts)
            node_group = self.membership.group_of.get(facts.node)
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
        with the problem noted when an override cannot be applied.  Read only: the
        rendering may be shared with other rounds and with the replicas built from it."""
        if group not in work.rendered:
            overrides = self._overrides_of(work)
            # Overrides never reach status, and copying it for every group is costly.
            bare = {k: v for k, v in work.app.items() if k != "status"}
            if not overrides:
                work.rendered[group] = bare
                return bare
            view = self.clusters.get(group) if group is not None else None
            rendered, error, overridden = self.memo.renders.get(
                self._render_key(work, group),
                functools.partial(_apply_overrides, bare, overrides,
                                  view or ClusterView(name="")))
            work.rendered[group] = rendered
            if overridden:
                work.overridden.add(group)
            if error is not None:
                problem = f"node group {group}: {error}" if group else error
                work.problems.append(problem)
                work.render_errors[group] = problem
        return work.rendered[group]

    def _overrides_of(self, work: _AppWork) -> list[OverridePolicyView]:
        """The OverridePolicies that apply to the App, in the order to apply them."""
        if work.overrides is None:
            meta = work.app.get("metadata") or {}
            work.overrides = self.memo.matches.get(
                ("override", work.key, labels_key(meta.get("labels")), self.override_version),
                functools.partial(override_policies_for, work.app, self.overrides))
        return work.overrides

    def _app_version(self, work: _AppWork) -> tuple[Hashable, ...]:
        """Everything about the App a rendering depends on: its spec, labels and
        annotations, and the OverridePolicies there are."""
        if work.version is None:
            meta = work.app.get("metadata") or {}
            work.version = (work.key, _spec_version(work.app), labels_key(meta.get("labels")),
                            labels_key(meta.get("annotations")), self.override_version)
        return work.version

    def _render_key(self, work: _AppWork, group: str | None) -> Hashable:
        """Everything the App as ``group`` runs it depends on: the App and - when any
        OverridePolicy applies to it - the group's identity."""
        key = work.render_keys.get(group)
        if key is None:
            where: Hashable = None
            if self._overrides_of(work):
                view = self.clusters.get(group) if group is not None else None
                where = (group, labels_key(view.labels), view.region, view.zone,
                         view.provider) if view is not None else group
            key = work.render_keys[group] = (self._app_version(work), where)
        return key

    def _render_group(self, work: _AppWork, group: str, node: str) -> str | None:
        """The group a replica of ``group`` on ``node`` is rendered for and recorded
        in: its own, or for the implicit group whichever group the node is in."""
        return group if group != IMPLICIT else self.membership.group_of.get(node)

    def _refresh_template(self, work: _AppWork, obj: dict[str, Any]) -> None:
        facts = self.facts(obj)
        rendered = self._render(work, facts.group)
        if rendered is None:
            return
        template = rendered.get("spec") or {}
        if facts.matches is template:
            return  # found equal before (the rendering and the replica are unchanged)
        if template != dig(obj, "spec.template"):
            update = rep.with_template(obj, template)
            self.plan.updates.append(update)
            work.wrote = True
            work.replicas[facts.index] = rep.as_stored(obj, update)
        else:
            facts.matches = template

    def _assign_pending(self, work: _AppWork) -> None:
        filled: dict[str, int] = {}
        for obj in work.replicas.values():
            facts = self.facts(obj)
            if not facts.terminating:
                group = work.group_key(facts)
                filled[group] = filled.get(group, 0) + 1
        counts = {g: n - filled.get(g, 0) for g, n in sorted(work.target.items())
                  if n > filled.get(g, 0)}
        indices = iter(free_indices(work.replicas, sum(counts.values()) + work.shortfall))
        for group, count in counts.items():
            work.pending[group] = tuple(next(indices) for _ in range(count))
        for index in indices:
            work.waiting.append(Waiting(index, UNSCHEDULABLE_REASON, work.decision_message))

    def _add_jobs(self, work: _AppWork) -> None:
        by_group: dict[str, list[ReplicaSlot]] = {group: [] for group in work.target}
        for obj in work.replicas.values():
            facts = self.facts(obj)
            slots = by_group.setdefault(work.group_key(facts), [])
            if facts.slot is not None:
                slots.append(facts.slot)
        for group, members in sorted(by_group.items()):
            base = job_from_slots(work.app, members)
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
            job = JobView(
                key=key, request=request, queue=base.queue, priority=base.priority,
                min_available=self._gang_share(work, group), node_selector=selector,
                bound=base.bound, pending=pending, completed=base.completed,
                created=base.created, scheduler_name=None)
            work.job_views.append(job)
            self.jobs.append(job)

    def _gang_share(self, work: _AppWork, group: str) -> int:
        """The part of the App's gang minimum that a group's job must reach on its own:
        all of it for the implicit group, else proportional to the group's replicas."""
        if work.min_available <= 1 or group == IMPLICIT:
            return work.min_available
        share = math.ceil(work.min_available * work.target.get(group, 0) / max(1, work.wanted))
        return max(1, share)

    # --- 4. nodes within the groups ---------------------------------------------------

    def _session_nodes(self) -> list[NodeView]:
        """The nodes with their group as a label (kept with the cluster state)."""
        if self.cluster.session_nodes is None:
            out = []
            for name, view in sorted(self.nodes.items()):
                group = self.membership.group_of.get(name)
                if group is not None:
                    view = dataclasses.replace(view,
                                               labels={**view.labels, GROUP_LABEL: group})
                out.append(view)
            self.cluster.session_nodes = out
        return self.cluster.session_nodes

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
            if obj is not None and not self.facts(obj).terminating:
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
                request = self.facts(work.replicas[index]).request
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
        return sum(1 for o in work.replicas.values() if not self.facts(o).terminating)

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
        grace = self.config.termination_grace_seconds
        obj = rep.build_replica(work.app, rendered, index, node, render_group, grace)
        # Replicas built from one rendering differ only in name, index, node and group
        # name (any string), so a rendering is validated once (with a stand-in name) and
        # each name on its own; the App itself, where no override changed it, once for
        # all its groups.
        if render_group in work.overridden:
            check_key = (self._render_key(work, render_group), grace)
        else:
            check_key = (self._app_version(work), grace)
        error = self.memo.checks.get(check_key, functools.partial(_invalid_replica, obj))
        if error is None:
            try:
                check_dns_subdomain(str(obj["metadata"]["name"]), "metadata.name")
            except InvalidObject as exc:
                error = str(exc)
        if error is not None:
            # An override produced something the edge could not run: say so, create nothing.
            where = f"node group {render_group}: " if render_group else ""
            problem = f"{where}the App as rendered is invalid: {error}"
            work.problems.append(problem)
            return problem
        self.plan.creates.append(obj)
        work.wrote = True
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
            if work.reused is not None and not work.wrote:
                continue  # its status is as stored, and nothing it shows has changed
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
        replicas = [obj for _, obj in sorted(work.replicas.items())]
        status = app_status(work.app, replicas, work.waiting, message, work.placement,
                            self.wall, entries=[self.facts(obj).entry for obj in replicas])
        work.status_same = work.app.get("status") == status
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
                facts = self.facts(obj)
                node = facts.node
                if facts.terminating and node in self.not_ready:
                    self.deadlines.append(self.not_ready[node] + self.config.lost_node_seconds)


def _versions(objects: Sequence[Mapping[str, Any]]) -> list[tuple[Any, Any, Any]]:
    return [(dig(o, "metadata.namespace"), dig(o, "metadata.name"),
             dig(o, "metadata.resourceVersion")) for o in objects]


def _apply_overrides(bare: dict[str, Any], overrides: Sequence[OverridePolicyView],
                     view: ClusterView) -> tuple[dict[str, Any] | None, str | None, bool]:
    """The App rendered for the group, or the problem; and whether any rule applied
    (where none does the App is used as it is - no copy, nothing to check again)."""
    if not any(affinity_matches(rule.targetCluster, view)
               for policy in overrides for rule in policy.spec.overrideRules or ()):
        return bare, None, False
    try:
        return apply_overrides(bare, overrides, view), None, True
    except OverrideError as exc:
        return None, str(exc), True


def _invalid_replica(obj: Mapping[str, Any]) -> str | None:
    """What is wrong with the AppReplica ``obj`` apart from its name, or None."""
    stand_in = {**obj, "metadata": {**obj["metadata"], "name": "replica-0"}}
    try:
        validate_object(stand_in)
    except InvalidObject as exc:
        return str(exc)
    return None
