"""KubeEdge's NodeGroup (``apps.kubeedge.io/v1alpha1``): a named set of edge nodes.

Accepted unchanged against KubeEdge's CRD schema (reference/kubeedge-crds/
apps_v1alpha1_nodegroup.yaml): ``spec.nodes``, ``spec.matchLabels``,
``spec.topologyEnabled`` and ``status.nodeStatuses``.  edgefleet adds a few optional
fields that placement needs, because a NodeGroup plays the part of Karmada's member
cluster (reference/placement-scheduling.md §1.2, §1.5):

- ``spec.region``, ``spec.zone``, ``spec.provider`` - matched by a policy's
  ``clusterAffinity.fieldSelector`` and grouped by its ``spreadConstraints``;
- ``status.readyNodes`` - how many member nodes are Ready (0 means the group is down);
- ``status.allocatable`` - the members' allocatable resources summed, as Kubernetes
  quantities (``{"cpu": "12", "memory": "48Gi"}``).

As with the device kinds, scalars are strict (the API server does not turn ``"5"`` into
5) and unknown fields are refused with their path.  The CRD gives ``matchLabels`` values
and the status strings no further format, so neither do we: anything the CRD accepts is
accepted here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)
from pydantic_core import PydanticCustomError

from protocol.quantity import QuantityError, parse_quantity
from protocol.resources import Column, KindInfo, register

GROUP, VERSION = "apps.kubeedge.io", "v1alpha1"


def _check_amount(value: Any) -> Any:
    # Before the union, so a wrong type is reported at the field itself.
    try:
        if parse_quantity(value) < 0:
            raise QuantityError(f"{value!r} is not a valid amount: it must not be negative")
    except QuantityError as exc:
        raise PydanticCustomError("quantity", "{reason}", {"reason": str(exc)}) from None
    return value


Amount = Annotated[StrictStr | StrictInt | StrictFloat, BeforeValidator(_check_amount)]
"""A resource amount in Kubernetes quantity notation (``"12"``, ``"500m"``, ``"48Gi"``)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodeGroupSpec(_Strict):
    # KubeEdge's fields.  A node belongs to the group when it is listed in `nodes` or
    # carries every label in `matchLabels`.
    nodes: list[StrictStr] | None = None
    matchLabels: dict[StrictStr, StrictStr] | None = None
    topologyEnabled: StrictBool | None = None
    # edgefleet's additions for placement (Karmada's cluster region/zone/provider).
    region: StrictStr | None = None
    zone: StrictStr | None = None
    provider: StrictStr | None = None


class NodeSelectionStatus(_Strict):
    nodeName: StrictStr
    readyStatus: StrictStr  # KubeEdge writes Ready, NotReady or Unknown
    selectionStatus: StrictStr  # KubeEdge writes Succeeded or Failed
    selectionStatusReason: StrictStr | None = None


class NodeGroupStatus(_Strict):
    nodeStatuses: list[NodeSelectionStatus] | None = None
    # edgefleet's additions: what placement reads about the group's health and size.
    readyNodes: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)] | None = None
    allocatable: dict[StrictStr, Amount] | None = None


NODE_GROUP = register(
    KindInfo(
        kind="NodeGroup",
        group=GROUP,
        version=VERSION,
        plural="nodegroups",
        namespaced=False,
        spec_model=NodeGroupSpec,
        status_model=NodeGroupStatus,
        short_names=("ng",),
        columns=(
            Column("READY", "status.readyNodes"),
            Column("REGION", "spec.region"),
            Column("ZONE", "spec.zone", wide_only=True),
            Column("PROVIDER", "spec.provider", wide_only=True),
            Column("CPU", "status.allocatable.cpu", wide_only=True),
            Column("MEMORY", "status.allocatable.memory", wide_only=True),
        ),
    )
)


def group_member_names(group: Mapping[str, Any], nodes: Iterable[Mapping[str, Any]]) -> list[str]:
    """The nodes (by name, sorted) that belong to ``group``: those named in
    ``spec.nodes`` that exist, plus those whose labels include every ``spec.matchLabels``
    pair.  An empty or missing ``matchLabels`` selects no node by label."""
    spec = group.get("spec") or {}
    listed = set(spec.get("nodes") or ())
    wanted: Mapping[str, str] = spec.get("matchLabels") or {}
    out: set[str] = set()
    for node in nodes:
        meta = node.get("metadata") or {}
        name = meta.get("name")
        if not isinstance(name, str):
            continue
        labels: Mapping[str, str] = meta.get("labels") or {}
        if name in listed or (wanted and all(labels.get(k) == v for k, v in wanted.items())):
            out.add(name)
    return sorted(out)
