"""What a scheduling session takes in and gives back.

Everything here is a small frozen dataclass, so a session is a pure function of its
inputs.  The App, Queue and Node objects of the store become these views through
:mod:`cloudcore.scheduler.views`.

Inputs
    :class:`NodeView`   a node: name, labels, readiness, cordon, allocatable cpu/memory.
    :class:`QueueView`  a Volcano queue: weight, capability, guarantee, reclaimable, ...
    :class:`JobView`    an App: per-replica request, queue, priority, gang minimum,
                        node selector, which replicas are bound where, which are pending.
    :class:`SchedulerConfig` the knobs: scoring strategy, preempt/reclaim on or off.

Outputs (:class:`SessionResult`)
    bindings      replicas to bind now (app, replica index → node);
    nominations   replicas that will fit once evicted replicas have stopped (Volcano's
                  *pipelined* tasks): not to be bound yet - a later session binds them;
    evictions     preempted/reclaimed replicas to stop;
    unschedulable per-app reason for replicas left pending;
    queues        allocated and deserved per queue after the session.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from cloudcore.scheduler.resources import UNLIMITED, ZERO, FractionalResources, Resources

DEFAULT_SCHEDULER_NAME = "edgefleet-scheduler"


@dataclass(frozen=True)
class NodeView:
    """A node as the scheduler sees it.  ``ready`` is the Ready condition; ``unschedulable``
    is a cordon (``spec.unschedulable``).  Names must be unique within a session."""

    name: str
    allocatable: Resources
    labels: Mapping[str, str] = field(default_factory=dict)
    ready: bool = True
    unschedulable: bool = False


@dataclass(frozen=True)
class QueueView:
    """A Volcano queue (reference §5.1).  ``capability`` is a hard cap with
    :data:`~cloudcore.scheduler.resources.UNLIMITED_AMOUNT` in a dimension the queue does
    not cap; ``guarantee`` is a reserved floor; ``open`` is false for a Closed/Closing queue,
    whose jobs keep what they have but get nothing new."""

    name: str
    weight: int = 1
    capability: Resources = UNLIMITED
    guarantee: Resources = ZERO
    reclaimable: bool = True
    priority: int = 0
    open: bool = True


@dataclass(frozen=True)
class BoundReplica:
    """A replica that holds resources on ``node``.  A *releasing* one (evicted, or scaled
    away, and still stopping) keeps holding them but counts for nothing else: Volcano's
    Releasing task, whose resources are the node's "future idle"."""

    index: int
    node: str
    releasing: bool = False


@dataclass(frozen=True)
class JobView:
    """An App as a Volcano job whose tasks are its replicas.

    ``key`` is ``namespace/name``; ``request`` is per replica; ``min_available`` is the gang
    size (1 = each replica on its own).  ``bound`` lists replicas placed on nodes,
    ``pending`` the indices waiting for a node, ``completed`` how many finished
    successfully (they count towards the gang, as Volcano's Succeeded tasks do).  ``created``
    (RFC 3339) breaks ties in job order, then ``key``.  A job whose ``scheduler_name`` is
    another scheduler's is left alone: only the resources its bound replicas hold count.
    """

    key: str
    request: Resources = ZERO
    queue: str = "default"
    priority: int = 0
    min_available: int = 1
    node_selector: Mapping[str, str] = field(default_factory=dict)
    bound: tuple[BoundReplica, ...] = ()
    pending: tuple[int, ...] = ()
    completed: int = 0
    created: str = ""
    scheduler_name: str | None = None


class Scoring(StrEnum):
    """How to rank the nodes a replica fits on (see :mod:`cloudcore.scheduler.scoring`)."""

    LEAST_ALLOCATED = "LeastAllocated"  # spread: Kubernetes' default
    BINPACK = "Binpack"  # pack: Volcano's binpack plugin


@dataclass(frozen=True)
class SchedulerConfig:
    scoring: Scoring = Scoring.LEAST_ALLOCATED
    preempt: bool = True  # within a queue, for jobs below their gang minimum
    reclaim: bool = True  # across queues, for queues below their deserved share
    scheduler_name: str = DEFAULT_SCHEDULER_NAME


@dataclass(frozen=True)
class Binding:
    job: str
    index: int
    node: str


class EvictionAction(StrEnum):
    PREEMPT = "preempt"
    RECLAIM = "reclaim"


@dataclass(frozen=True)
class Eviction:
    job: str
    index: int
    node: str
    action: EvictionAction
    by: str  # the job that needed the room


@dataclass(frozen=True)
class QueueSummary:
    """A queue after the session: what its jobs hold and ask for, what it deserves
    (zero when it had no jobs and so took no part), and its share (allocated/deserved,
    dominant dimension)."""

    name: str
    allocated: Resources
    request: Resources
    deserved: FractionalResources
    share: float


@dataclass(frozen=True)
class SessionResult:
    bindings: tuple[Binding, ...] = ()
    nominations: tuple[Binding, ...] = ()
    evictions: tuple[Eviction, ...] = ()
    unschedulable: Mapping[str, str] = field(default_factory=dict)
    queues: Mapping[str, QueueSummary] = field(default_factory=dict)
