"""From stored objects (plain dicts) to the scheduler's views.

- :func:`job_from_app`: an App and its AppReplica objects become a :class:`JobView`.
  Bindings are AppReplica objects (protocol/kinds/appreplicas.py), one per placed
  replica, each holding its index.  A replica that is not terminating fills one of the
  App's ``spec.replicas`` slots: it is *bound* (holds its node's resources) while its
  phase is Pending, Running or CrashLoopBackOff, *completed* when Succeeded, and
  finished for good when Failed (it holds nothing and is not replaced).  A terminating
  replica (``spec.terminating``: evicted, scaled away, failed over) fills no slot but is
  *releasing* - it holds its node's resources until the edge reports it ``Terminated``.
  The slots no replica fills are *pending*, numbered with the lowest indices no
  AppReplica object of the App uses (a terminating replica keeps its name, and so its
  index, until it is deleted).
- :func:`queue_from_object`, :func:`node_from_object`: Queue and Node objects.
- :func:`with_default_queue`: Volcano always has a ``default`` queue; so do we, even
  when nobody stored one.
- :func:`queue_status`: a session's :class:`QueueSummary` as a Queue's ``status``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cloudcore.scheduler.model import BoundReplica, JobView, NodeView, QueueSummary, QueueView
from cloudcore.scheduler.resources import UNLIMITED_AMOUNT, Resources
from protocol.kinds.appreplicas import TERMINATED_REASON
from protocol.kinds.apps import DEFAULT_QUEUE, ReplicaPhase
from protocol.quantity import (
    QuantityError,
    cpu_millis,
    format_cpu,
    format_memory,
    memory_bytes,
)
from protocol.resources import dig

_HOLDING = (ReplicaPhase.PENDING, ReplicaPhase.RUNNING, ReplicaPhase.CRASH_LOOP_BACK_OFF)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


# A controller converts the same few quantity strings ("500m", "8Gi") for every App,
# replica and node in every round: parsing each once is most of a round's cost saved.
_cpu_cached = lru_cache(maxsize=4096)(cpu_millis)
_memory_cached = lru_cache(maxsize=4096)(memory_bytes)


def _cpu(value: Any) -> int:
    if isinstance(value, bool):  # True == 1 for the cache; the parser refuses it
        return cpu_millis(value)
    try:
        return _cpu_cached(value)
    except TypeError:  # unhashable: let the parser say what is wrong with it
        return cpu_millis(value)


def _memory(value: Any) -> int:
    if isinstance(value, bool):
        return memory_bytes(value)
    try:
        return _memory_cached(value)
    except TypeError:
        return memory_bytes(value)


def app_request(spec: Mapping[str, Any]) -> Resources:
    """Per-replica request; a dimension with a limit but no request takes the limit,
    as in Kubernetes.  Raises :class:`QuantityError` for a bad quantity."""
    resources = _mapping(spec.get("resources"))
    requests = _mapping(resources.get("requests"))
    limits = _mapping(resources.get("limits"))
    cpu = requests.get("cpu", limits.get("cpu"))
    memory = requests.get("memory", limits.get("memory"))
    return Resources(_cpu(cpu) if cpu is not None else 0,
                     _memory(memory) if memory is not None else 0)


def job_key(app: Mapping[str, Any]) -> str:
    meta = _mapping(app.get("metadata"))
    return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"


def free_indices(used: Iterable[int], count: int) -> tuple[int, ...]:
    """The ``count`` lowest non-negative indices not in ``used``."""
    taken = set(used)
    out: list[int] = []
    index = 0
    while len(out) < count:
        if index not in taken:
            out.append(index)
        index += 1
    return tuple(out)


@dataclass(frozen=True, slots=True)
class ReplicaSlot:
    """How one AppReplica object counts for its App's job (see the module docstring):
    ``fills`` a slot of ``spec.replicas`` (it is not terminating), ``completed``
    (Succeeded), ``bound`` holds its node's resources (None when it holds nothing)."""

    index: int
    fills: bool
    completed: bool
    bound: BoundReplica | None


def replica_slot(obj: Mapping[str, Any]) -> ReplicaSlot | None:
    """How an AppReplica object counts, or None when it has no index (it counts for
    nothing)."""
    rspec = _mapping(obj.get("spec"))
    index = rspec.get("index")
    if not isinstance(index, int):
        return None
    phase = dig(obj, "status.phase") or ReplicaPhase.PENDING
    node = str(rspec.get("nodeName") or "")
    if rspec.get("terminating") is True:
        stopped = dig(obj, "status.reason") == TERMINATED_REASON
        holding = bool(node) and phase in _HOLDING and not stopped
        return ReplicaSlot(index, False, False,
                           BoundReplica(index, node, releasing=True) if holding else None)
    if phase == ReplicaPhase.SUCCEEDED:
        return ReplicaSlot(index, True, True, None)
    holding = phase != ReplicaPhase.FAILED and bool(node)
    return ReplicaSlot(index, True, False, BoundReplica(index, node) if holding else None)


def job_from_app(app: Mapping[str, Any], replicas: Iterable[Mapping[str, Any]] = ()) -> JobView:
    """The scheduler's view of a (validated) App object and its AppReplica objects
    (those whose ``spec.app`` names it; see the module docstring)."""
    slots = (replica_slot(obj) for obj in replicas)
    return job_from_slots(app, [slot for slot in slots if slot is not None])


def job_from_slots(app: Mapping[str, Any], slots: Iterable[ReplicaSlot]) -> JobView:
    """:func:`job_from_app` from the replicas' slots (:func:`replica_slot`), for a caller
    that keeps them between sessions."""
    spec = _mapping(app.get("spec"))
    wanted = int(spec.get("replicas", 1))
    bound: list[BoundReplica] = []
    used: set[int] = set()
    filled = 0
    completed = 0
    for slot in slots:
        used.add(slot.index)
        filled += slot.fills
        completed += slot.completed
        if slot.bound is not None:
            bound.append(slot.bound)
    meta = _mapping(app.get("metadata"))
    return JobView(
        key=job_key(app),
        request=app_request(spec),
        queue=str(spec.get("queue") or DEFAULT_QUEUE),
        priority=int(spec.get("priority") or 0),
        min_available=max(1, int(spec.get("minAvailable") or 1)),
        node_selector=dict(_mapping(spec.get("nodeSelector"))),
        bound=tuple(sorted(bound, key=lambda b: b.index)),
        pending=free_indices(used, max(0, wanted - filled)),
        completed=completed,
        created=str(meta.get("creationTimestamp") or ""),
        scheduler_name=spec.get("schedulerName"),
    )


def _amounts(value: Any, default: int) -> Resources:
    amounts = _mapping(value)
    cpu, memory = amounts.get("cpu"), amounts.get("memory")
    return Resources(_cpu(cpu) if cpu is not None else default,
                     _memory(memory) if memory is not None else default)


def queue_from_object(queue: Mapping[str, Any]) -> QueueView:
    """The scheduler's view of a (validated) Queue object."""
    spec = _mapping(queue.get("spec"))
    state = dig(queue, "status.state")
    return QueueView(
        name=str(dig(queue, "metadata.name")),
        weight=int(spec.get("weight") or 1),
        capability=_amounts(spec.get("capability"), UNLIMITED_AMOUNT),
        guarantee=_amounts(dig(spec, "guarantee.resource"), 0),
        reclaimable=spec.get("reclaimable") is not False,
        priority=int(spec.get("priority") or 0),
        open=state in (None, "Open"),
    )


def node_from_object(node: Mapping[str, Any]) -> NodeView:
    """The scheduler's view of a Node object.  Allocatable comes from the node's own
    heartbeat; an amount that does not parse counts as zero (nothing fits there)."""
    ready = any(
        isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in dig(node, "status.conditions") or ()
    )
    allocatable = _mapping(dig(node, "status.allocatable"))
    try:
        cpu = _cpu(allocatable.get("cpu", 0))
    except QuantityError:
        cpu = 0
    try:
        memory = _memory(allocatable.get("memory", 0))
    except QuantityError:
        memory = 0
    return NodeView(
        name=str(dig(node, "metadata.name")),
        allocatable=Resources(cpu, memory),
        labels=dict(_mapping(dig(node, "metadata.labels"))),
        ready=ready,
        unschedulable=dig(node, "spec.unschedulable") is True,
    )


def with_default_queue(queues: Sequence[QueueView]) -> list[QueueView]:
    """``queues`` plus a ``default`` queue (weight 1, no limits) unless one is stored."""
    if any(q.name == DEFAULT_QUEUE for q in queues):
        return list(queues)
    return [*queues, QueueView(DEFAULT_QUEUE)]


def queue_status(summary: QueueSummary, state: str = "Open") -> dict[str, Any]:
    """``{allocated: {cpu, memory}, deserved: {cpu, memory}, state}`` in canonical
    quantities (deserved rounded down to whole millicores and bytes)."""
    deserved = summary.deserved.floor()
    return {
        "allocated": {"cpu": format_cpu(summary.allocated.cpu),
                      "memory": format_memory(summary.allocated.memory)},
        "deserved": {"cpu": format_cpu(deserved.cpu), "memory": format_memory(deserved.memory)},
        "state": state,
    }
