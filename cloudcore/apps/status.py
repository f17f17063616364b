"""An App's status, aggregated from its AppReplicas and the controller's decisions.

- ``replicas``: one entry per AppReplica (what its edge reports; a replica being taken
  away shows why - ``Evicted``, ``ScaledDown``, ``FailedOver`` ... - until the edge
  reports its own reason), then one entry without a node per replica still waiting for
  one, with reason ``Unschedulable`` (or ``Nominated`` when it will fit once evicted
  replicas stop) and the explanation as message;
- ``readyReplicas``: replicas Running and not being taken away;
- ``message``: why replicas are not placed (``0/5 nodes: 3 insufficient cpu, 2 not
  ready``, or the node-group decision's failure), else where they were placed;
- ``conditions``: ``Scheduled`` - True once every replica the App wants has a node;
- ``placement``: the node-group decision (protocol/kinds/apps.py);
- ``observedGeneration``: the App generation this status describes.

A condition's ``lastTransitionTime`` moves only when its status does, so an unchanged
App gets an identical status and nothing is written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cloudcore.apps import replicas as rep
from protocol.kinds.apps import UNSCHEDULABLE_REASON, ReplicaPhase
from protocol.resources import dig

NOMINATED_REASON = "Nominated"
SCHEDULED = "Scheduled"


@dataclass(frozen=True)
class Waiting:
    """A replica the App wants that has no node yet."""

    index: int
    reason: str
    message: str


def replica_entry(obj: Mapping[str, Any]) -> dict[str, Any]:
    status = obj.get("status") or {}
    entry: dict[str, Any] = {"index": rep.index_of(obj), "node": rep.node_of(obj),
                             "phase": rep.phase_of(obj),
                             "restarts": int(status.get("restarts") or 0)}
    for field in ("lastExitCode", "startTime"):
        if status.get(field) is not None:
            entry[field] = status[field]
    reason = status.get("reason")
    if rep.is_terminating(obj) and not reason:
        reason = rep.termination_reason(obj) or "Terminating"
    if reason:
        entry["reason"] = str(reason)
    if status.get("message"):
        entry["message"] = str(status["message"])
    return entry


def waiting_entry(waiting: Waiting) -> dict[str, Any]:
    return {"index": waiting.index, "phase": ReplicaPhase.PENDING.value, "restarts": 0,
            "reason": waiting.reason, "message": waiting.message}


def _condition(old: Mapping[str, Any] | None, type_: str, ok: bool, reason: str,
               message: str, wall: str) -> dict[str, Any]:
    value = "True" if ok else "False"
    since = (old or {}).get("lastTransitionTime") if (old or {}).get("status") == value else None
    cond: dict[str, Any] = {"type": type_, "status": value, "reason": reason,
                            "lastTransitionTime": since or wall}
    if message:
        cond["message"] = message
    return cond


def app_status(
    app: Mapping[str, Any],
    replicas: Sequence[Mapping[str, Any]],
    waiting: Sequence[Waiting],
    message: str,
    placement: Mapping[str, Any] | None,
    wall: str,
    *,
    entries: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The status ``app`` should show.  ``replicas``: its AppReplicas as they will be
    after this round; ``waiting``: the replicas it wants that have no node.  A caller
    that keeps :func:`replica_entry` of each replica passes them as ``entries``, in
    index order."""
    if entries is None:
        entries = [replica_entry(r) for r in sorted(replicas, key=rep.index_of)]
    listed = [*entries, *(waiting_entry(w) for w in sorted(waiting, key=lambda w: w.index))]
    ready = sum(1 for r in replicas if not rep.is_terminating(r)
                and rep.phase_of(r) == ReplicaPhase.RUNNING)
    old_conditions = {c.get("type"): c for c in dig(app, "status.conditions") or ()
                      if isinstance(c, Mapping)}
    if waiting:
        reason = UNSCHEDULABLE_REASON if any(w.reason == UNSCHEDULABLE_REASON
                                             for w in waiting) else NOMINATED_REASON
        scheduled = _condition(old_conditions.get(SCHEDULED), SCHEDULED, False, reason,
                               message, wall)
    else:
        scheduled = _condition(old_conditions.get(SCHEDULED), SCHEDULED, True, SCHEDULED,
                               "", wall)
    status: dict[str, Any] = {"replicas": listed, "readyReplicas": ready,
                              "conditions": [scheduled]}
    if message:
        status["message"] = message
    generation = dig(app, "metadata.generation")
    if isinstance(generation, int):
        status["observedGeneration"] = generation
    if placement is not None:
        status["placement"] = dict(placement)
    return status
