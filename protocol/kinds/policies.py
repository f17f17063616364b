"""PropagationPolicy and OverridePolicy (``policy.edgefleet.io/v1alpha1``), with
Karmada's field names and meanings over NodeGroups (reference/placement-scheduling.md
§1-§2; a NodeGroup plays Karmada's member cluster).

What a policy *does* lives in cloudcore/placement/; this module only says which
policies are well formed, so that a bad one is refused when it is applied, with the
path of the offending field, and never reaches the scheduler:

- unknown fields, wrong types and out-of-range numbers (a weight below 1, a negative
  ``minGroups``) - by pydantic, ``extra="forbid"``, strict scalars;
- Karmada's own webhook rules: ``clusterAffinity`` and ``clusterAffinities`` are
  exclusive, affinity names are unique, spread constraints have one field or label,
  one constraint per field, ``maxGroups >= minGroups``, and any other spread
  constraint needs a ``cluster`` one;
- selectors that can never match: an ``In`` with no values, contradictory label or
  field requirements, a ``clusterNames`` list that ``exclude`` empties, a resource
  selector naming a kind edgefleet does not serve;
- settings that would be silently ignored (``weightPreference`` on an Aggregated or
  Duplicated placement, ``maxGroups`` left at 0 so that nothing is ever selected).

Karmada fields edgefleet does not implement (``propagateDeps``, ``conflictResolution``,
``suspension``, image and field overriders, ...) are refused as unknown rather than
accepted and ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictInt,
    StrictStr,
    model_validator,
)

from protocol.errors import InvalidObject, NotFound
from protocol.resources import (
    REGISTRY,
    Column,
    KindInfo,
    check_label_key,
    check_label_value,
    register,
)
from protocol.selectors import Operator, Selector, selector_from_label_selector

GROUP, VERSION = "policy.edgefleet.io", "v1alpha1"
DEFAULT_SCHEDULER = "default-scheduler"
DEFAULT_TOLERATION_SECONDS = 300

Int32 = Annotated[StrictInt, Field(ge=-(2**31), le=2**31 - 1)]
NonNegInt32 = Annotated[StrictInt, Field(ge=0, le=2**31 - 1)]
Weight = Annotated[StrictInt, Field(ge=1, le=2**31 - 1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _never(path: str, message: str) -> InvalidObject:
    return InvalidObject(message, field=path)


# --- selectors -------------------------------------------------------------------------


class LabelSelectorRequirement(_Strict):
    key: StrictStr
    operator: StrictStr  # In, NotIn, Exists, DoesNotExist - checked with the whole selector
    values: list[StrictStr] | None = None


class LabelSelector(_Strict):
    """A Kubernetes label selector.  Its compiled form is kept after validation so the
    scheduler does not re-parse it for every decision."""

    matchLabels: dict[StrictStr, StrictStr] | None = None
    matchExpressions: list[LabelSelectorRequirement] | None = None

    _compiled: Selector | None = PrivateAttr(default=None)

    def check(self, path: str) -> None:
        selector = selector_from_label_selector(self.model_dump(exclude_none=True), path)
        problem = _label_contradiction(selector)
        if problem:
            raise _never(path, f"can never match: {problem}")
        self._compiled = selector

    @property
    def selector(self) -> Selector:
        if self._compiled is None:
            self.check("labelSelector")
        assert self._compiled is not None
        return self._compiled


def _label_contradiction(selector: Selector) -> str | None:
    """Why no label set can satisfy every requirement, or None when one can."""
    allowed: dict[str, frozenset[str]] = {}
    forbidden: dict[str, set[str]] = {}
    present: set[str] = set()
    absent: set[str] = set()
    for req in selector.requirements:
        if req.op in (Operator.EQUALS, Operator.IN):
            allowed[req.key] = allowed.get(req.key, req.values) & req.values
            present.add(req.key)
        elif req.op in (Operator.NOT_EQUALS, Operator.NOT_IN):
            forbidden.setdefault(req.key, set()).update(req.values)
        elif req.op is Operator.EXISTS:
            present.add(req.key)
        else:
            absent.add(req.key)
    for key in sorted(present & absent):
        return f"label {key!r} is required both to exist and to be absent"
    for key, values in sorted(allowed.items()):
        if not values - forbidden.get(key, set()):
            return f"no value of label {key!r} satisfies every requirement on it"
    return None


class FieldKey(StrEnum):
    PROVIDER = "provider"
    REGION = "region"
    ZONE = "zone"


class FieldOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"


class FieldSelectorRequirement(_Strict):
    key: FieldKey
    operator: FieldOperator
    values: Annotated[list[StrictStr], Field(min_length=1)]


class FieldSelector(_Strict):
    """Matches a NodeGroup's ``spec.provider``, ``spec.region`` or ``spec.zone``."""

    matchExpressions: list[FieldSelectorRequirement] | None = None

    def check(self, path: str) -> None:
        allowed: dict[FieldKey, set[str]] = {}
        forbidden: dict[FieldKey, set[str]] = {}
        for req in self.matchExpressions or ():
            if req.operator is FieldOperator.IN:
                values = set(req.values)
                allowed[req.key] = allowed.get(req.key, values) & values
            else:
                forbidden.setdefault(req.key, set()).update(req.values)
        for key, values in allowed.items():
            if not values - forbidden.get(key, set()):
                raise _never(f"{path}.matchExpressions",
                             f"can never match: no {key.value} satisfies every requirement")

    def matches(self, fields: Mapping[FieldKey, str | None]) -> bool:
        for req in self.matchExpressions or ():
            value = fields.get(req.key)
            inside = value is not None and value in req.values
            if inside != (req.operator is FieldOperator.IN):
                return False
        return True


class ClusterAffinity(_Strict):
    """Which NodeGroups qualify.  Karmada's rule: a group named in ``exclude`` never
    matches; otherwise every criterion that is set must hold; none set matches all."""

    labelSelector: LabelSelector | None = None
    fieldSelector: FieldSelector | None = None
    clusterNames: list[StrictStr] | None = None
    exclude: list[StrictStr] | None = None

    def check(self, path: str) -> None:
        if self.labelSelector is not None:
            self.labelSelector.check(f"{path}.labelSelector")
        if self.fieldSelector is not None:
            self.fieldSelector.check(f"{path}.fieldSelector")
        if self.clusterNames and set(self.clusterNames) <= set(self.exclude or ()):
            raise _never(f"{path}.clusterNames",
                         "can never match: every group named here is also in exclude")


class ClusterAffinityTerm(ClusterAffinity):
    affinityName: Annotated[StrictStr, Field(min_length=1, max_length=32)]


class ResourceSelector(_Strict):
    apiVersion: Annotated[StrictStr, Field(min_length=1)]
    kind: Annotated[StrictStr, Field(min_length=1)]
    namespace: StrictStr | None = None
    name: StrictStr | None = None
    labelSelector: LabelSelector | None = None  # ignored when name is set (Karmada)

    def check(self, path: str) -> None:
        # A selector for a kind we do not serve, or under the wrong apiVersion, would
        # silently select nothing forever.
        try:
            info = REGISTRY.by_kind(self.kind)
        except NotFound:
            raise _never(f"{path}.kind", f"can never match: no kind {self.kind!r} is served"
                         ) from None
        if info.api_version != self.apiVersion:
            raise _never(f"{path}.apiVersion",
                         f"can never match: {self.kind} is served as {info.api_version}")
        if self.labelSelector is not None:
            self.labelSelector.check(f"{path}.labelSelector")


def _check_resource_selectors(selectors: Iterable[ResourceSelector], path: str) -> None:
    for i, sel in enumerate(selectors):
        sel.check(f"{path}[{i}]")


# --- PropagationPolicy -----------------------------------------------------------------


class TolerationOperator(StrEnum):
    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(_Strict):
    """A Kubernetes toleration, matched against a NodeGroup's taints (edgefleet puts
    ``nodegroup.edgefleet.io/not-ready:NoSchedule`` on a group with no Ready node)."""

    key: StrictStr | None = None
    operator: TolerationOperator | None = None  # default Equal
    value: StrictStr | None = None
    effect: TaintEffect | None = None  # empty tolerates every effect
    tolerationSeconds: Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)] | None = None

    def check(self, path: str) -> None:
        if self.operator is TolerationOperator.EXISTS and self.value:
            raise InvalidObject("must be empty when operator is Exists", field=f"{path}.value")
        if not self.key and self.operator is not TolerationOperator.EXISTS:
            raise InvalidObject("an empty key needs operator Exists", field=f"{path}.operator")


class SpreadField(StrEnum):
    CLUSTER = "cluster"
    REGION = "region"
    ZONE = "zone"
    PROVIDER = "provider"


class SpreadConstraint(_Strict):
    spreadByField: SpreadField | None = None
    spreadByLabel: StrictStr | None = None
    maxGroups: NonNegInt32 | None = None
    minGroups: NonNegInt32 | None = None

    @property
    def field(self) -> SpreadField | None:
        """The field spread over; a constraint with neither field nor label spreads by
        cluster (Karmada's webhook default)."""
        if self.spreadByField is None and not self.spreadByLabel:
            return SpreadField.CLUSTER
        return self.spreadByField

    @property
    def min_groups(self) -> int:
        return self.minGroups or 1  # Karmada's webhook turns 0 into 1

    @property
    def max_groups(self) -> int:
        return self.maxGroups or 0


class ReplicaSchedulingType(StrEnum):
    DUPLICATED = "Duplicated"
    DIVIDED = "Divided"


class ReplicaDivisionPreference(StrEnum):
    AGGREGATED = "Aggregated"
    WEIGHTED = "Weighted"


class DynamicWeightFactor(StrEnum):
    AVAILABLE_REPLICAS = "AvailableReplicas"


class StaticClusterWeight(_Strict):
    targetCluster: ClusterAffinity
    weight: Weight


class WeightPreference(_Strict):
    staticWeightList: list[StaticClusterWeight] | None = None
    dynamicWeight: DynamicWeightFactor | None = None  # when set, the static list is ignored


class ReplicaSchedulingStrategy(_Strict):
    replicaSchedulingType: ReplicaSchedulingType = ReplicaSchedulingType.DIVIDED
    replicaDivisionPreference: ReplicaDivisionPreference | None = None
    weightPreference: WeightPreference | None = None

    @property
    def division(self) -> ReplicaDivisionPreference:
        # Karmada's webhook defaults an empty preference under Divided to Weighted.
        return self.replicaDivisionPreference or ReplicaDivisionPreference.WEIGHTED

    def check(self, path: str) -> None:
        duplicated = self.replicaSchedulingType is ReplicaSchedulingType.DUPLICATED
        if duplicated and self.replicaDivisionPreference is not None:
            raise InvalidObject("applies only to replicaSchedulingType Divided",
                                field=f"{path}.replicaDivisionPreference")
        if self.weightPreference is None:
            return
        if duplicated or self.division is not ReplicaDivisionPreference.WEIGHTED:
            raise InvalidObject("applies only to Divided replicas with the Weighted preference",
                                field=f"{path}.weightPreference")
        for i, entry in enumerate(self.weightPreference.staticWeightList or ()):
            entry.targetCluster.check(f"{path}.weightPreference.staticWeightList[{i}]"
                                      ".targetCluster")


class Placement(_Strict):
    clusterAffinity: ClusterAffinity | None = None
    clusterAffinities: list[ClusterAffinityTerm] | None = None
    clusterTolerations: list[Toleration] | None = None
    spreadConstraints: list[SpreadConstraint] | None = None
    replicaScheduling: ReplicaSchedulingStrategy | None = None

    def check(self, path: str) -> None:
        if self.clusterAffinity is not None:
            self.clusterAffinity.check(f"{path}.clusterAffinity")
            if self.clusterAffinities:
                raise InvalidObject("cannot be used together with clusterAffinity",
                                    field=f"{path}.clusterAffinities")
        seen: set[str] = set()
        for i, term in enumerate(self.clusterAffinities or ()):
            if term.affinityName in seen:
                raise InvalidObject(f"duplicate affinityName {term.affinityName!r}",
                                    field=f"{path}.clusterAffinities[{i}].affinityName")
            seen.add(term.affinityName)
            term.check(f"{path}.clusterAffinities[{i}]")
        for i, tol in enumerate(self.clusterTolerations or ()):
            tol.check(f"{path}.clusterTolerations[{i}]")
        self._check_spread(f"{path}.spreadConstraints")
        if self.replicaScheduling is not None:
            self.replicaScheduling.check(f"{path}.replicaScheduling")

    def _check_spread(self, path: str) -> None:
        constraints = self.spreadConstraints or []
        seen: set[str] = set()
        for i, sc in enumerate(constraints):
            at = f"{path}[{i}]"
            if sc.spreadByField is not None and sc.spreadByLabel:
                raise InvalidObject("spreadByField and spreadByLabel cannot both be set",
                                    field=f"{at}.spreadByLabel")
            if sc.spreadByLabel:
                check_label_key(sc.spreadByLabel, f"{at}.spreadByLabel")
            what = sc.field.value if sc.field is not None else f"label:{sc.spreadByLabel}"
            if what in seen:
                raise InvalidObject(f"more than one constraint spreads by {what}",
                                    field=f"{at}.spreadByField")
            seen.add(what)
            if sc.max_groups == 0:
                raise InvalidObject("must be at least 1: with 0 no group is ever selected",
                                    field=f"{at}.maxGroups")
            if sc.max_groups < sc.min_groups:
                raise InvalidObject(f"must not be below minGroups ({sc.min_groups})",
                                    field=f"{at}.maxGroups")
        grouping = [i for i, sc in enumerate(constraints) if sc.field is not SpreadField.CLUSTER]
        if grouping and SpreadField.CLUSTER.value not in seen:
            raise InvalidObject("spreading by region, zone, provider or label also needs a "
                                "spreadByField: cluster constraint", field=path)
        if len(grouping) > 1:
            raise InvalidObject("at most one of region, zone, provider or a label can be "
                                "spread over", field=f"{path}[{grouping[1]}]")
        if grouping:
            by_group = constraints[grouping[0]]
            (by_cluster,) = [sc for sc in constraints if sc.field is SpreadField.CLUSTER]
            if by_group.min_groups > by_cluster.max_groups:
                # One group per region (zone, ...) at least: more regions than groups
                # allowed can never be satisfied.
                raise InvalidObject(
                    f"needs at least {by_group.min_groups} node groups, more than the "
                    f"cluster constraint's maxGroups ({by_cluster.max_groups})",
                    field=f"{path}[{grouping[0]}].minGroups")

    @property
    def replica_scheduling_type(self) -> ReplicaSchedulingType:
        # Karmada: no replicaScheduling at all means every group gets a full copy.
        if self.replicaScheduling is None:
            return ReplicaSchedulingType.DUPLICATED
        return self.replicaScheduling.replicaSchedulingType


class PreemptionPolicy(StrEnum):
    ALWAYS = "Always"
    NEVER = "Never"


class PurgeMode(StrEnum):
    DIRECTLY = "Directly"
    GRACEFULLY = "Gracefully"
    NEVER = "Never"
    # The names before Karmada v1.15, still accepted there.
    IMMEDIATELY = "Immediately"
    GRACIOUSLY = "Graciously"


class DecisionConditions(_Strict):
    tolerationSeconds: NonNegInt32 | None = None  # default 300; 0 = at once


class ApplicationFailoverBehavior(_Strict):
    """How long a NodeGroup may have no Ready node before its replicas go elsewhere."""

    decisionConditions: DecisionConditions
    purgeMode: PurgeMode | None = None  # default Gracefully
    gracePeriodSeconds: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)] | None = None

    @property
    def toleration_seconds(self) -> int:
        seconds = self.decisionConditions.tolerationSeconds
        return DEFAULT_TOLERATION_SECONDS if seconds is None else seconds

    def check(self, path: str) -> None:
        graceful = self.purgeMode in (None, PurgeMode.GRACEFULLY, PurgeMode.GRACIOUSLY)
        if self.gracePeriodSeconds is not None and not graceful:
            raise InvalidObject("applies only to purgeMode Gracefully",
                                field=f"{path}.gracePeriodSeconds")


class FailoverBehavior(_Strict):
    application: ApplicationFailoverBehavior | None = None


class PropagationSpec(_Strict):
    resourceSelectors: Annotated[list[ResourceSelector], Field(min_length=1)]
    placement: Placement | None = None
    priority: Int32 | None = None
    preemption: PreemptionPolicy | None = None
    failover: FailoverBehavior | None = None
    schedulerName: StrictStr | None = None

    @model_validator(mode="after")
    def _semantics(self) -> PropagationSpec:
        # InvalidObject is not a ValueError, so pydantic passes it through with our
        # exact path: this model is only validated as an object's `spec`.
        _check_resource_selectors(self.resourceSelectors, "spec.resourceSelectors")
        if self.placement is not None:
            self.placement.check("spec.placement")
        if self.failover is not None and self.failover.application is not None:
            self.failover.application.check("spec.failover.application")
        return self

    @property
    def explicit_priority(self) -> int:
        return self.priority or 0

    @property
    def scheduler_name(self) -> str:
        return self.schedulerName or DEFAULT_SCHEDULER


class PolicyStatus(_Strict):
    """Policies have no status (as in Karmada); anything written there is refused."""


# --- OverridePolicy --------------------------------------------------------------------


class ListOperator(StrEnum):
    ADD = "add"
    REMOVE = "remove"


class MapOperator(StrEnum):
    ADD = "add"
    REMOVE = "remove"
    REPLACE = "replace"


class CommandArgsOverrider(_Strict):
    """``add`` appends the values; ``remove`` deletes every item equal to one of them.
    An App runs one process, so ``containerName`` is optional; when given it must be
    the App's name for the overrider to apply (Karmada skips other containers)."""

    containerName: StrictStr | None = None
    operator: ListOperator
    value: list[StrictStr] | None = None


class MapOverrider(_Strict):
    """Labels, annotations or env: ``add`` sets the keys, ``replace`` changes only keys
    that exist, ``remove`` deletes the keys that exist (their values are ignored)."""

    operator: MapOperator
    value: dict[StrictStr, StrictStr] | None = None


class ArtifactOverrider(_Strict):
    """Artifacts are keyed by name.  ``add`` appends ``value`` (which names itself,
    or takes ``name``); ``replace`` sets the given fields on the named artifact (a
    different sha256, say); ``remove`` drops it."""

    name: StrictStr | None = None
    operator: MapOperator
    value: dict[StrictStr, Any] | None = None

    def check(self, path: str) -> None:
        if self.operator is MapOperator.REMOVE:
            if self.value is not None:
                raise InvalidObject("must be empty when operator is remove",
                                    field=f"{path}.value")
            if not self.name:
                raise InvalidObject("required when operator is remove", field=f"{path}.name")
            return
        if self.value is None:
            raise InvalidObject(f"required when operator is {self.operator.value}",
                                field=f"{path}.value")
        if self.operator is MapOperator.REPLACE and not self.name:
            raise InvalidObject("required when operator is replace", field=f"{path}.name")
        if self.operator is MapOperator.ADD and not (self.name or self.value.get("name")):
            raise InvalidObject("the artifact to add needs a name (here or in value.name)",
                                field=f"{path}.name")


_POINTER = re.compile(r"^(/([^~]|~[01])*)+$")
# Fields that make an object what it is: overriding them per group would rename or
# re-kind the workload on some groups, which nothing downstream could follow.
_IDENTITY = ("/apiVersion", "/kind", "/metadata", "/metadata/name", "/metadata/namespace",
             "/metadata/uid", "/metadata/resourceVersion", "/status")


class PlaintextOverrider(_Strict):
    """One RFC 6902 JSON-patch operation on the App manifest."""

    path: StrictStr
    operator: MapOperator
    value: Any = None

    def check(self, path: str) -> None:
        if not _POINTER.fullmatch(self.path):
            raise InvalidObject("must be a JSON pointer such as /spec/args", field=f"{path}.path")
        if self.path in _IDENTITY or self.path.startswith("/status/"):
            raise InvalidObject(f"{self.path} cannot be overridden", field=f"{path}.path")
        has_value = "value" in self.model_fields_set
        if self.operator is MapOperator.REMOVE and has_value:
            raise InvalidObject("must be empty when operator is remove", field=f"{path}.value")
        if self.operator is not MapOperator.REMOVE and not has_value:
            raise InvalidObject(f"required when operator is {self.operator.value}",
                                field=f"{path}.value")


class Overriders(_Strict):
    """Applied in this order within one rule (Karmada's order, with the artifact
    overrider in the image overrider's place and env after command and args)."""

    artifactOverrider: list[ArtifactOverrider] | None = None
    commandOverrider: list[CommandArgsOverrider] | None = None
    argsOverrider: list[CommandArgsOverrider] | None = None
    envOverrider: list[MapOverrider] | None = None
    labelsOverrider: list[MapOverrider] | None = None
    annotationsOverrider: list[MapOverrider] | None = None
    plaintext: list[PlaintextOverrider] | None = None

    def check(self, path: str) -> None:
        for i, art in enumerate(self.artifactOverrider or ()):
            art.check(f"{path}.artifactOverrider[{i}]")
        for i, labels in enumerate(self.labelsOverrider or ()):
            for key, value in (labels.value or {}).items():
                at = f"{path}.labelsOverrider[{i}].value.{key}"
                check_label_key(key, at)
                check_label_value(value, at)
        for i, env in enumerate(self.envOverrider or ()):
            for key in env.value or {}:
                if not _ENV_NAME.fullmatch(key):
                    raise InvalidObject(f"{key!r} is not a valid environment variable name",
                                        field=f"{path}.envOverrider[{i}].value.{key}")
        for i, patch in enumerate(self.plaintext or ()):
            patch.check(f"{path}.plaintext[{i}]")


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class RuleWithCluster(_Strict):
    targetCluster: ClusterAffinity | None = None  # None: every group
    overriders: Overriders


class OverrideSpec(_Strict):
    resourceSelectors: list[ResourceSelector] | None = None  # empty: every resource
    overrideRules: list[RuleWithCluster] | None = None

    @model_validator(mode="after")
    def _semantics(self) -> OverrideSpec:
        _check_resource_selectors(self.resourceSelectors or (), "spec.resourceSelectors")
        for i, rule in enumerate(self.overrideRules or ()):
            at = f"spec.overrideRules[{i}]"
            if rule.targetCluster is not None:
                rule.targetCluster.check(f"{at}.targetCluster")
            rule.overriders.check(f"{at}.overriders")
        return self


# --- registration ----------------------------------------------------------------------

PROPAGATION_POLICY = register(KindInfo(
    kind="PropagationPolicy", group=GROUP, version=VERSION, plural="propagationpolicies",
    namespaced=True, spec_model=PropagationSpec, status_model=PolicyStatus,
    short_names=("pp",),
    columns=(
        Column("PRIORITY", "spec.priority"),
        Column("SCHEDULER", "spec.schedulerName", wide_only=True),
        Column("PREEMPTION", "spec.preemption", wide_only=True),
    ),
))

OVERRIDE_POLICY = register(KindInfo(
    kind="OverridePolicy", group=GROUP, version=VERSION, plural="overridepolicies",
    namespaced=True, spec_model=OverrideSpec, status_model=PolicyStatus,
    short_names=("op",),
))


def parse_propagation_spec(obj: Mapping[str, Any]) -> PropagationSpec:
    """The validated spec of a stored PropagationPolicy object."""
    return PropagationSpec.model_validate(obj.get("spec") or {})


def parse_override_spec(obj: Mapping[str, Any]) -> OverrideSpec:
    """The validated spec of a stored OverridePolicy object."""
    return OverrideSpec.model_validate(obj.get("spec") or {})
