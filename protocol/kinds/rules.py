"""KubeEdge's message routes, ``rules.kubeedge.io/v1`` Rule and RuleEndpoint, accepted
unchanged (the CRD schemas in shared/reference/kubeedge-crds/router_v1_*.yaml).

These are the objects; what a Rule means once joined with its endpoints is
:mod:`protocol.routes`, and the router that carries messages is cloudcore/router/ and
edgecore/router.py.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr

from protocol.resources import Column, KindInfo, register

GROUP, VERSION = "rules.kubeedge.io", "v1"


class RuleEndpointType(StrEnum):
    REST = "rest"
    EVENTBUS = "eventbus"
    SERVICEBUS = "servicebus"


class RuleEndpointSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ruleEndpointType: RuleEndpointType
    # Only servicebus needs one: {"service_port": "8080"}.
    properties: dict[StrictStr, StrictStr] | None = None


class RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: StrictStr  # a RuleEndpoint name
    sourceResource: dict[StrictStr, StrictStr]  # rest {"path"}; eventbus {"topic", "node_name"}
    target: StrictStr
    targetResource: dict[StrictStr, StrictStr]  # rest {"resource"}; eventbus {"topic"}; ...


class RuleStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    successMessages: StrictInt | None = None
    failMessages: StrictInt | None = None
    errors: list[StrictStr] | None = None


class RuleEndpointStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")


RULE_ENDPOINT = register(KindInfo(
    kind="RuleEndpoint", group=GROUP, version=VERSION, plural="ruleendpoints", namespaced=True,
    spec_model=RuleEndpointSpec, status_model=RuleEndpointStatus, short_names=("re",),
    columns=(Column("TYPE", "spec.ruleEndpointType"),),
))

RULE = register(KindInfo(
    kind="Rule", group=GROUP, version=VERSION, plural="rules", namespaced=True,
    spec_model=RuleSpec, status_model=RuleStatus,
    columns=(
        Column("SOURCE", "spec.source"),
        Column("TARGET", "spec.target"),
        Column("SUCCESS", "status.successMessages", wide_only=True),
        Column("FAIL", "status.failMessages", wide_only=True),
    ),
))
