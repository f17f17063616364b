"""The Queue kind (``scheduling.edgefleet.io/v1alpha1``), with Volcano's field names.

A Queue is a tenant's share of the nodes' CPU and memory (cluster-scoped)::

    apiVersion: scheduling.edgefleet.io/v1alpha1
    kind: Queue
    metadata: {name: team-vision}
    spec:
      weight: 2                                  # 1..65535, default 1: share of what is left
      capability: {cpu: "64", memory: 256Gi}     # hard cap; a missing dimension is unlimited
      reclaimable: true                          # others may take back what it borrowed
      guarantee: {resource: {cpu: "4", memory: 16Gi}}   # reserved floor
      priority: 0                                # higher queues are served first

Status: ``allocated`` and ``deserved`` (what the proportion plugin computed in the last
scheduling session) and ``state`` (Open, Closed, Closing, Unknown; only an Open queue -
or one with no state yet - gets new placements).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from protocol.errors import InvalidObject
from protocol.quantity import CpuQuantity, MemoryQuantity, cpu_millis, memory_bytes
from protocol.resources import Column, KindInfo, register

GROUP = "scheduling.edgefleet.io"
VERSION = "v1alpha1"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QueueResources(_Strict):
    """A Volcano ResourceList restricted to what edgefleet schedules: cpu and memory."""

    cpu: CpuQuantity | None = None
    memory: MemoryQuantity | None = None


class QueueGuarantee(_Strict):
    resource: QueueResources | None = None


class QueueSpec(_Strict):
    weight: Annotated[StrictInt, Field(ge=1, le=65535)] = 1
    capability: QueueResources | None = None
    reclaimable: StrictBool | None = None  # unset means true, as in Volcano
    guarantee: QueueGuarantee | None = None
    priority: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)] = 0

    @model_validator(mode="after")
    def _guarantee_within_capability(self) -> QueueSpec:
        # InvalidObject keeps our exact path through pydantic (this model is only ever
        # validated as an object's `spec`).
        guaranteed = self.guarantee.resource if self.guarantee else None
        if guaranteed is None or self.capability is None:
            return self
        for name, convert in (("cpu", cpu_millis), ("memory", memory_bytes)):
            floor = getattr(guaranteed, name)
            cap = getattr(self.capability, name)
            if floor is not None and cap is not None and convert(floor) > convert(cap):
                raise InvalidObject(
                    f"guarantee {floor} exceeds the capability {cap}",
                    field=f"spec.guarantee.resource.{name}",
                )
        return self


class QueueState(StrEnum):
    OPEN = "Open"
    CLOSED = "Closed"
    CLOSING = "Closing"
    UNKNOWN = "Unknown"


class QueueStatus(_Strict):
    allocated: QueueResources | None = None
    deserved: QueueResources | None = None
    state: QueueState | None = None


QUEUE = register(KindInfo(
    kind="Queue", group=GROUP, version=VERSION, plural="queues", namespaced=False,
    spec_model=QueueSpec, status_model=QueueStatus, short_names=("q",),
    columns=(
        Column("WEIGHT", "spec.weight"),
        Column("STATE", "status.state"),
        Column("RECLAIMABLE", "spec.reclaimable", wide_only=True),
        Column("CAPABILITY", "spec.capability", wide_only=True),
        Column("ALLOCATED", "status.allocated", wide_only=True),
        Column("DESERVED", "status.deserved", wide_only=True),
    ),
))
