"""AppReplica (``apps.edgefleet.io/v1alpha1``): one replica of an App, bound to a node.

The apps controller writes one per placed replica — as Kubernetes writes a Pod per
replica of a Deployment and Karmada a Work per member cluster — with the App's spec
*rendered for the replica's NodeGroup* (OverridePolicies applied) in ``spec.template``.
An AppReplica travels to its ``spec.nodeName`` only; that node's edged runs it and is
the only writer of its ``status``.  Taking a replica away is two steps, so the cloud
knows when its resources are free: the controller sets ``spec.terminating``, the edge
stops the process (SIGTERM, SIGKILL after ``terminationGracePeriodSeconds``) and reports
``status.reason: Terminated``, then the controller deletes the object.  A replica whose
node is gone for good is deleted directly.

Users read these (``efctl get appreplicas -l apps.edgefleet.io/app=NAME``) but do not
create them.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from protocol.kinds.apps import GROUP, VERSION, AppSpec, ReplicaPhase
from protocol.resources import Column, KindInfo, register

APP_LABEL = "apps.edgefleet.io/app"
"""Label on every AppReplica naming its App."""
TERMINATED_REASON = "Terminated"
"""``status.reason`` once the edge has stopped a terminating replica for good."""

Count = Annotated[StrictInt, Field(ge=0, le=2**31 - 1)]
NonEmpty = Annotated[StrictStr, Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AppReplicaSpec(_Strict):
    app: NonEmpty
    index: Count
    nodeName: NonEmpty
    nodeGroup: StrictStr | None = None
    template: AppSpec
    terminating: StrictBool = False
    terminationGracePeriodSeconds: Count = 10


class AppReplicaStatus(_Strict):
    phase: ReplicaPhase = ReplicaPhase.PENDING
    restarts: Count = 0
    lastExitCode: StrictInt | None = None
    startTime: StrictStr | None = None
    reason: StrictStr | None = None
    message: StrictStr | None = None


def replica_name(app: str, index: int) -> str:
    return f"{app}-{index}"


APP_REPLICA = register(KindInfo(
    kind="AppReplica", group=GROUP, version=VERSION, plural="appreplicas", namespaced=True,
    spec_model=AppReplicaSpec, status_model=AppReplicaStatus, short_names=("ar",),
    system_created=True,
    columns=(
        Column("APP", "spec.app"),
        Column("NODE", "spec.nodeName"),
        Column("PHASE", "status.phase"),
        Column("RESTARTS", "status.restarts"),
        Column("GROUP", "spec.nodeGroup", wide_only=True),
        Column("EXIT", "status.lastExitCode", wide_only=True),
        Column("STARTED", "status.startTime", wide_only=True),
        Column("REASON", "status.reason", wide_only=True),
    ),
))
