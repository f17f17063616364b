"""From stored objects (plain dicts) to the scheduler's views.

- :func:`job_from_app`: an App becomes a :class:`JobView`.  Replica ``i`` (``0 <= i <
  spec.replicas``) is *bound* when its ``status.replicas`` entry names a node and its
  phase is Pending, Running or CrashLoopBackOff; *completed* when Succeeded; finished for
  good when Failed (it neither holds resources nor waits for a node); otherwise - no
  entry, or no node - *pending*.  An entry that names a node but is being taken away
  (``reason: Evicted``, or an index at or beyond ``spec.replicas`` after a scale-down) is
  *releasing*: it holds its node's resources until its entry is removed, and an evicted
  index within ``spec.replicas`` is pending again at the same time.
- :func:`queue_from_object`, :func:`node_from_object`: Queue and Node objects.
- :func:`with_default_queue`: Volcano always has a ``default`` queue; so do we, even
  when nobody stored one.
- :func:`queue_status`: a session's :class:`QueueSummary` as a Queue's ``status``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cloudcore.scheduler.model import BoundReplica, JobView, NodeView, QueueSummary, QueueView
from cloudcore.scheduler.resources import UNLIMITED_AMOUNT, Resources
from protocol.kinds.apps import DEFAULT_QUEUE, EVICTED_REASON, ReplicaPhase
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


def app_request(spec: Mapping[str, Any]) -> Resources:
    """Per-replica request; a dimension with a limit but no request takes the limit,
    as in Kubernetes.  Raises :class:`QuantityError` for a bad quantity."""
    resources = _mapping(spec.get("resources"))
    requests = _mapping(resources.get("requests"))
    limits = _mapping(resources.get("limits"))
    cpu = requests.get("cpu", limits.get("cpu"))
    memory = requests.get("memory", limits.get("memory"))
    return Resources(cpu_millis(cpu) if cpu is not None else 0,
                     memory_bytes(memory) if memory is not None else 0)


def job_key(app: Mapping[str, Any]) -> str:
    meta = _mapping(app.get("metadata"))
    return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"


def job_from_app(app: Mapping[str, Any]) -> JobView:
    """The scheduler's view of a (validated) App object."""
    spec = _mapping(app.get("spec"))
    replicas = int(spec.get("replicas", 1))
    bound: list[BoundReplica] = []
    seen: set[int] = set()
    completed = 0
    pending: set[int] = set()
    for entry in dig(app, "status.replicas") or ():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("index"), int):
            continue
        index = int(entry["index"])
        seen.add(index)
        phase = entry.get("phase", ReplicaPhase.PENDING)
        node = entry.get("node")
        wanted = index < replicas
        if phase == ReplicaPhase.SUCCEEDED:
            completed += 1 if wanted else 0
        elif phase == ReplicaPhase.FAILED:
            continue
        elif node and phase in _HOLDING:
            releasing = entry.get("reason") == EVICTED_REASON or not wanted
            bound.append(BoundReplica(index, str(node), releasing))
            if releasing and wanted:
                pending.add(index)
        elif wanted:
            pending.add(index)
    pending.update(i for i in range(replicas) if i not in seen)
    meta = _mapping(app.get("metadata"))
    return JobView(
        key=job_key(app),
        request=app_request(spec),
        queue=str(spec.get("queue") or DEFAULT_QUEUE),
        priority=int(spec.get("priority") or 0),
        min_available=max(1, int(spec.get("minAvailable") or 1)),
        node_selector=dict(_mapping(spec.get("nodeSelector"))),
        bound=tuple(sorted(bound, key=lambda b: b.index)),
        pending=tuple(sorted(pending)),
        completed=completed,
        created=str(meta.get("creationTimestamp") or ""),
        scheduler_name=spec.get("schedulerName"),
    )


def _amounts(value: Any, default: int) -> Resources:
    amounts = _mapping(value)
    cpu, memory = amounts.get("cpu"), amounts.get("memory")
    return Resources(cpu_millis(cpu) if cpu is not None else default,
                     memory_bytes(memory) if memory is not None else default)


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
        cpu = cpu_millis(allocatable.get("cpu", 0))
    except QuantityError:
        cpu = 0
    try:
        memory = memory_bytes(allocatable.get("memory", 0))
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
