"""Pure results kept from one reconcile round to the next, each under everything it
depends on, so that a round recomputes only what changed.

A round is a pure function of the store's objects, but most of its work is the same
from one round to the next: the same 5,000 Node objects become the same scheduler
views, the same NodeGroups the same membership, the same App is rendered with the same
OverridePolicies for the same group, and so on.  Each such result is kept here under a
key made of its inputs - or, for a whole-cluster result, next to the inputs it was made
from, compared by identity and equality - so that using a kept result gives exactly
what computing it again would.  Nothing is ever invalidated by hand.

Each round keeps only what it used (:meth:`Recall.next_round`): an App deleted, a node
gone or a policy changed leaves nothing behind after one round.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cloudcore.apps import replicas as rep
from cloudcore.apps.nodegroups import Membership, ready_status, resolve_membership
from cloudcore.apps.policies import PolicyBook
from cloudcore.apps.status import replica_entry
from cloudcore.scheduler import NodeView, Resources, node_from_object
from cloudcore.scheduler.views import ReplicaSlot, replica_slot
from protocol.resources import dig

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Recall(Generic[K, V]):
    """Values by key, computed at most once while the key is in use: a value survives
    into the next round only if this round asked for it."""

    def __init__(self) -> None:
        self._last: dict[K, V] = {}
        self._this: dict[K, V] = {}

    def get(self, key: K, compute: Callable[[], V]) -> V:
        this = self._this
        if key in this:
            return this[key]
        last = self._last
        value = last[key] if key in last else compute()
        this[key] = value
        return value

    def next_round(self) -> None:
        self._last, self._this = self._this, {}


def labels_key(labels: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((labels or {}).items()))


@dataclass
class ClusterState:
    """The scheduler's view of every node (by name), each node's KubeEdge readiness
    (Ready / NotReady / Unknown), and NodeGroup membership; ``session_nodes``, the node
    views a scheduling session takes, is filled in by the first round that needs it."""

    nodes: Mapping[str, NodeView]
    readiness: Mapping[str, str]
    membership: Membership
    session_nodes: list[NodeView] | None = None


class ReplicaFacts:
    """What a round reads from one AppReplica object, read once per object (the
    informer hands out the same object until it changes): the fields of
    :mod:`cloudcore.apps.replicas`, its request, ``slot`` (how it counts for its App's
    scheduling job), ``entry`` (its line in the App's status; these three on first use)
    and ``matches``, the last template object it was found equal to (comparing again
    costs more than remembering)."""

    __slots__ = ("_entry", "_request", "_slot", "_slot_read", "app", "group", "holds", "index",
                 "matches", "node", "obj", "phase", "terminated", "terminating")

    def __init__(self, obj: Mapping[str, Any]) -> None:
        self.obj = obj
        meta = obj.get("metadata") or {}
        spec = obj.get("spec")
        spec = spec if isinstance(spec, Mapping) else {}
        self.app: tuple[str, str] = (str(meta.get("namespace") or "default"),
                                     str(spec.get("app")))
        self.index = rep.index_of(obj)
        self.node = rep.node_of(obj)
        self.group = rep.group_of(obj)
        self.terminating = rep.is_terminating(obj)
        self.phase = rep.phase_of(obj)
        self.terminated = rep.has_terminated(obj)
        self.holds = self.phase in rep.HOLDING and not self.terminated
        self.matches: object | None = None
        self._request: Resources | None = None
        self._entry: dict[str, Any] | None = None
        self._slot: ReplicaSlot | None = None
        self._slot_read = False

    @property
    def request(self) -> Resources:
        if self._request is None:
            self._request = rep.request_of(self.obj)
        return self._request

    @property
    def entry(self) -> dict[str, Any]:
        if self._entry is None:
            self._entry = replica_entry(self.obj)
        return self._entry

    @property
    def slot(self) -> ReplicaSlot | None:
        if not self._slot_read:
            self._slot = replica_slot(self.obj)
            self._slot_read = True
        return self._slot


class Memo:
    """What one controller keeps between its rounds (pass the same one to every round)."""

    def __init__(self) -> None:
        self.policies = PolicyBook()
        """Parsed PropagationPolicies and OverridePolicies, by key and resourceVersion."""
        self.renders: Recall[Hashable, Any] = Recall()
        """The App rendered for a group (OverridePolicies applied), by the App's identity,
        generation, labels and annotations, the policies and the group's identity."""
        self.checks: Recall[Hashable, str | None] = Recall()
        """Whether an AppReplica built from a rendering is valid (None) or what is wrong."""
        self.matches: Recall[Hashable, Any] = Recall()
        """Which policies govern an App, by its namespace, name and labels and the
        policies' keys and resourceVersions."""
        self._nodes: dict[str, tuple[str, NodeView, str]] = {}  # name -> (rv, view, ready)
        self._cluster: tuple[list[tuple[Any, Any]], list[tuple[NodeView, str]],
                             ClusterState] | None = None
        # id(object) -> its facts, which hold the object: its id cannot be reused meanwhile.
        self._facts: dict[int, ReplicaFacts] = {}
        self._facts_next: dict[int, ReplicaFacts] = {}
        self.settled: dict[Hashable, Any] = {}
        """Apps the last round changed nothing about, with everything their placement read
        (the plan checks it all before it reuses anything)."""
        self._settled_next: dict[Hashable, Any] = {}
        self._clusters: tuple[list[Any], object] | None = None

    def next_round(self) -> None:
        """Forget what the round just finished did not use."""
        for recall in (self.renders, self.checks, self.matches):
            recall.next_round()
        self._facts, self._facts_next = self._facts_next, {}
        self.settled, self._settled_next = self._settled_next, {}

    def keep_settled(self, key: Hashable, entry: Any) -> None:
        """For the next round: an App this round changed nothing about."""
        self._settled_next[key] = entry

    def clusters_token(self, clusters: list[Any]) -> object:
        """An object that stays the same from round to round while ``clusters`` (the
        NodeGroups as placement sees them) compare equal."""
        if self._clusters is not None and self._clusters[0] == clusters:
            return self._clusters[1]
        token = object()
        self._clusters = (clusters, token)
        return token

    def replica(self, obj: Mapping[str, Any]) -> ReplicaFacts:
        """The facts of an AppReplica object (read once while the object is in use)."""
        key = id(obj)
        facts = self._facts_next.get(key)
        if facts is not None and facts.obj is obj:
            return facts
        facts = self._facts.get(key)
        if facts is None or facts.obj is not obj:
            facts = ReplicaFacts(obj)
        self._facts_next[key] = facts
        return facts

    def cluster(self, node_objects: Sequence[Mapping[str, Any]],
                groups: Sequence[Mapping[str, Any]]) -> ClusterState:
        """Node views, readiness and membership: recomputed only when a node's view or
        readiness, or a NodeGroup's spec, changed (a node heartbeat that changes neither
        keeps the kept views, so membership is kept too)."""
        kept = self._nodes
        fresh: dict[str, tuple[str, NodeView, str]] = {}
        entries: list[tuple[NodeView, str]] = []
        for obj in node_objects:
            meta = obj.get("metadata") or {}
            name = str(meta.get("name"))
            rv = str(meta.get("resourceVersion") or "")
            held = kept.get(name)
            if held is None or not rv or held[0] != rv:
                view, ready = node_from_object(obj), ready_status(obj)
                if held is not None and held[1] == view and held[2] == ready:
                    view = held[1]  # the same view: keep the object, and so the membership
                held = (rv, view, ready)
            fresh[name] = held
            entries.append((held[1], held[2]))
        self._nodes = fresh
        # Membership reads a group's name and spec only; its status - which the
        # controller itself writes - does not count.
        group_key = [(dig(g, "metadata.name"), g.get("spec")) for g in groups]
        if self._cluster is not None:
            old_key, old_entries, state = self._cluster
            if old_key == group_key and old_entries == entries:
                return state
        views = {view.name: view for view, _ in entries}
        readiness = {view.name: ready for view, ready in entries}
        state = ClusterState(views, readiness, resolve_membership(groups, views, readiness))
        self._cluster = (group_key, entries, state)
        return state
