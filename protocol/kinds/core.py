"""Core kinds (API group ``""``, version ``v1``): Node."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from protocol.resources import Column, KindInfo, register


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class NodeCondition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    status: ConditionStatus
    lastHeartbeatTime: str | None = None
    lastTransitionTime: str | None = None
    reason: str | None = None
    message: str | None = None


class NodeAddress(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str  # InternalIP, Hostname
    address: str


class NodeInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    edgecoreVersion: str = ""
    pythonVersion: str = ""
    operatingSystem: str = ""
    kernelVersion: str = ""
    architecture: str = ""


class NodeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unschedulable: bool = False


class NodeStatus(BaseModel):
    """What a node reports about itself with every heartbeat, plus the cloud's view of
    its readiness.  Quantities use Kubernetes notation: cpu in cores ("2"), memory and
    disk in Ki ("16314440Ki")."""

    model_config = ConfigDict(extra="forbid")

    conditions: list[NodeCondition] = []
    capacity: dict[str, str] = {}
    allocatable: dict[str, str] = {}
    addresses: list[NodeAddress] = []
    nodeInfo: NodeInfo | None = None


NODE = register(
    KindInfo(
        kind="Node",
        group="",
        version="v1",
        plural="nodes",
        namespaced=False,
        spec_model=NodeSpec,
        status_model=NodeStatus,
        short_names=("no",),
        system_created=True,
        columns=(
            Column("STATUS", "status.conditions"),
            Column("CPU", "status.allocatable.cpu", wide_only=True),
            Column("MEMORY", "status.allocatable.memory", wide_only=True),
            Column("VERSION", "status.nodeInfo.edgecoreVersion", wide_only=True),
        ),
    )
)
