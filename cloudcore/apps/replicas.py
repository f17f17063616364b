"""AppReplica objects: building them, reading them, and the copies that change them.

The contract with the edge is in protocol/kinds/appreplicas.py.  What this module adds
is the controller's bookkeeping on top of it: the annotation that says *why* a replica is
being taken away (shown in the App's status), and which replicas still hold their
node's resources.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from cloudcore.scheduler.resources import ZERO, Resources
from cloudcore.scheduler.views import app_request
from protocol.kinds.appreplicas import APP_LABEL, APP_REPLICA, TERMINATED_REASON, replica_name
from protocol.kinds.apps import EVICTED_REASON, ReplicaPhase
from protocol.quantity import QuantityError
from protocol.resources import dig

TERMINATION_REASON_ANNOTATION = "apps.edgefleet.io/termination-reason"
"""Why the controller set ``spec.terminating`` (one of :class:`Termination`)."""

HOLDING = (ReplicaPhase.PENDING, ReplicaPhase.RUNNING, ReplicaPhase.CRASH_LOOP_BACK_OFF)
"""Phases in which a replica's process may be running, and so holds its node's resources."""


class Termination(StrEnum):
    SCALED_DOWN = "ScaledDown"  # spec.replicas went down: highest indices go first
    EVICTED = EVICTED_REASON  # preempted or reclaimed by the scheduler
    FAILED_OVER = "FailedOver"  # its NodeGroup had no Ready node for too long
    RESCHEDULED = "Rescheduled"  # a new placement decision dropped its NodeGroup
    LEFT_GROUP = "NodeLeftGroup"  # its node no longer belongs to its NodeGroup
    APP_DELETED = "AppDeleted"


def build_replica(app: Mapping[str, Any], rendered: Mapping[str, Any], index: int, node: str,
                  group: str | None, grace_seconds: int) -> dict[str, Any]:
    """A new AppReplica of ``app``: ``rendered`` is the App as ``group`` runs it
    (OverridePolicies applied); its spec becomes the template and its labels and
    annotations the replica's, plus the App label.  The template *is* the rendered
    spec, not a copy (the replicas of one rendering are thousands of objects the store
    copies anyway): treat both as read-only."""
    meta = rendered.get("metadata") or {}
    app_name = str(dig(app, "metadata.name"))
    labels = {**(meta.get("labels") or {}), APP_LABEL: app_name}
    out_meta: dict[str, Any] = {
        "name": replica_name(app_name, index),
        "namespace": str(dig(app, "metadata.namespace") or "default"),
        "labels": labels,
    }
    if meta.get("annotations"):
        out_meta["annotations"] = dict(meta["annotations"])
    spec: dict[str, Any] = {"app": app_name, "index": index, "nodeName": node,
                            "template": rendered.get("spec") or {},
                            "terminating": False,
                            "terminationGracePeriodSeconds": grace_seconds}
    if group is not None:
        spec["nodeGroup"] = group
    return {"apiVersion": APP_REPLICA.api_version, "kind": APP_REPLICA.kind,
            "metadata": out_meta, "spec": spec}


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = obj.get("spec")
    # (a plain dict first: this runs for every replica several times a round, and
    # isinstance against an ABC is slow)
    return spec if type(spec) is dict or isinstance(spec, Mapping) else {}


def index_of(obj: Mapping[str, Any]) -> int:
    return int(_spec(obj).get("index") or 0)


def node_of(obj: Mapping[str, Any]) -> str:
    return str(_spec(obj).get("nodeName") or "")


def group_of(obj: Mapping[str, Any]) -> str | None:
    group = _spec(obj).get("nodeGroup")
    return str(group) if group else None


def is_terminating(obj: Mapping[str, Any]) -> bool:
    return _spec(obj).get("terminating") is True


def _status(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    status = obj.get("status")
    return status if type(status) is dict or isinstance(status, Mapping) else {}


def phase_of(obj: Mapping[str, Any]) -> str:
    return str(_status(obj).get("phase") or ReplicaPhase.PENDING)


def has_terminated(obj: Mapping[str, Any]) -> bool:
    """The edge has stopped it for good (only meaningful once it is terminating)."""
    return bool(_status(obj).get("reason") == TERMINATED_REASON)


def holds_resources(obj: Mapping[str, Any]) -> bool:
    """Whether its node's resources are still taken by it: a process that may be
    running (Pending, Running, CrashLoopBackOff) and not reported Terminated."""
    return phase_of(obj) in HOLDING and not has_terminated(obj)


def request_of(obj: Mapping[str, Any]) -> Resources:
    """What one replica asks of its node, from its template."""
    try:
        return app_request(_spec(obj).get("template") or {})
    except QuantityError:
        return ZERO


def termination_reason(obj: Mapping[str, Any]) -> str | None:
    notes = dig(obj, "metadata.annotations")  # (the key has dots: no dig through it)
    reason = notes.get(TERMINATION_REASON_ANNOTATION) if isinstance(notes, Mapping) else None
    return str(reason) if reason else None


def _for_apply(obj: Mapping[str, Any]) -> dict[str, Any]:
    # The store keeps status on apply; the copy carries no resourceVersion precondition
    # because only the controller writes an AppReplica's spec.
    out = copy.deepcopy(dict(obj))
    out.pop("status", None)
    meta = out.setdefault("metadata", {})
    for system in ("resourceVersion", "uid", "creationTimestamp", "generation"):
        meta.pop(system, None)
    return out


def marked_terminating(obj: Mapping[str, Any], why: Termination) -> dict[str, Any]:
    out = _for_apply(obj)
    out["spec"]["terminating"] = True
    notes = out["metadata"].setdefault("annotations", {})
    notes[TERMINATION_REASON_ANNOTATION] = why.value
    return out


def with_template(obj: Mapping[str, Any], template: Mapping[str, Any]) -> dict[str, Any]:
    out = _for_apply(obj)
    out["spec"]["template"] = copy.deepcopy(dict(template))
    return out


def as_stored(obj: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``update`` as it will look once stored: the stored object's status and system
    metadata kept (what the plan reasons about after deciding the update)."""
    out = copy.deepcopy(dict(update))
    meta = out.setdefault("metadata", {})
    for system in ("resourceVersion", "uid", "creationTimestamp", "generation"):
        if system in (obj.get("metadata") or {}):
            meta[system] = obj["metadata"][system]
    if "status" in obj:
        out["status"] = obj["status"]
    return out
