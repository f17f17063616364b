"""Which policies apply to a resource, in what order (reference/placement-scheduling.md
§1.1, §1.7, §1.8, §2).

Every selector match has an *implicit priority*: a selector naming the resource beats
one matching its labels, which beats one matching only its apiVersion and kind.

- **PropagationPolicy**: only policies in the resource's namespace count.  Among those
  matching, the highest explicit ``priority`` wins, then the highest implicit
  priority, then the alphabetically first name.  A resource already *claimed* by a
  policy keeps it while it still matches, unless a policy with ``preemption: Always``
  and a strictly higher explicit priority matches - then the best such policy takes
  over.
- **OverridePolicy**: every matching policy applies, lowest implicit priority first,
  ties by name ascending, so the most specific (and alphabetically last) policy has
  the last word.  An OverridePolicy without resourceSelectors matches everything, at
  the lowest priority.
- ``schedulerName``: a policy naming another scheduler is left to that scheduler.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from protocol.kinds.policies import (
    DEFAULT_SCHEDULER,
    OverrideSpec,
    PreemptionPolicy,
    PropagationSpec,
    ResourceSelector,
    parse_override_spec,
    parse_propagation_spec,
)


class ImplicitPriority(IntEnum):
    MISMATCH = 0
    KIND = 1  # apiVersion + kind only (or an OverridePolicy with no selectors)
    LABEL_SELECTOR = 2
    NAME = 3


@dataclass(frozen=True)
class PropagationPolicyView:
    """A stored PropagationPolicy with its spec parsed once."""

    name: str
    namespace: str
    spec: PropagationSpec

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> PropagationPolicyView:
        meta = obj.get("metadata") or {}
        return cls(str(meta.get("name")), str(meta.get("namespace") or "default"),
                   parse_propagation_spec(obj))


@dataclass(frozen=True)
class OverridePolicyView:
    """A stored OverridePolicy with its spec parsed once."""

    name: str
    namespace: str
    spec: OverrideSpec

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> OverridePolicyView:
        meta = obj.get("metadata") or {}
        return cls(str(meta.get("name")), str(meta.get("namespace") or "default"),
                   parse_override_spec(obj))


def _identity(resource: Mapping[str, Any]) -> tuple[str, str, str, str, Mapping[str, str]]:
    meta = resource.get("metadata") or {}
    return (str(resource.get("apiVersion") or ""), str(resource.get("kind") or ""),
            str(meta.get("namespace") or ""), str(meta.get("name") or ""),
            meta.get("labels") or {})


def selector_priority(resource: Mapping[str, Any], selector: ResourceSelector) -> ImplicitPriority:
    """How one resource selector matches the resource (Karmada's ResourceMatches)."""
    api_version, kind, namespace, name, labels = _identity(resource)
    if selector.apiVersion != api_version or selector.kind != kind:
        return ImplicitPriority.MISMATCH
    if selector.namespace and selector.namespace != namespace:
        return ImplicitPriority.MISMATCH
    if selector.name:
        return ImplicitPriority.NAME if selector.name == name else ImplicitPriority.MISMATCH
    if selector.labelSelector is not None:
        if selector.labelSelector.selector.matches(labels):
            return ImplicitPriority.LABEL_SELECTOR
        return ImplicitPriority.MISMATCH
    return ImplicitPriority.KIND


def resource_priority(
    resource: Mapping[str, Any], selectors: Iterable[ResourceSelector]
) -> ImplicitPriority:
    """The best match among ``selectors`` (a resource matches if any selector does)."""
    return max((selector_priority(resource, s) for s in selectors),
               default=ImplicitPriority.MISMATCH)


def _namespace(resource: Mapping[str, Any]) -> str:
    return str((resource.get("metadata") or {}).get("namespace") or "")


def propagation_policy_for(
    resource: Mapping[str, Any],
    policies: Iterable[PropagationPolicyView],
    *,
    claimed_by: str | None = None,
) -> PropagationPolicyView | None:
    """The PropagationPolicy that governs ``resource``, or None when none matches.
    ``claimed_by`` names the policy that placed it so far, if any."""
    namespace = _namespace(resource)
    matches: list[tuple[PropagationPolicyView, ImplicitPriority]] = []
    for policy in policies:
        if policy.namespace != namespace:
            continue
        implicit = resource_priority(resource, policy.spec.resourceSelectors)
        if implicit is not ImplicitPriority.MISMATCH:
            matches.append((policy, implicit))
    matches.sort(key=lambda m: (-m[0].spec.explicit_priority, -m[1], m[0].name))
    if claimed_by is not None:
        claimer = next((p for p, _ in matches if p.name == claimed_by), None)
        if claimer is not None:
            for policy, _ in matches:
                if (policy.spec.preemption is PreemptionPolicy.ALWAYS
                        and policy.spec.explicit_priority > claimer.spec.explicit_priority):
                    return policy
            return claimer
    return matches[0][0] if matches else None


def override_policies_for(
    resource: Mapping[str, Any], policies: Iterable[OverridePolicyView]
) -> list[OverridePolicyView]:
    """Every OverridePolicy that applies to ``resource``, in the order to apply them."""
    namespace = _namespace(resource)
    found: list[tuple[ImplicitPriority, str, OverridePolicyView]] = []
    for policy in policies:
        if policy.namespace != namespace:
            continue
        selectors: Sequence[ResourceSelector] = policy.spec.resourceSelectors or ()
        implicit = resource_priority(resource, selectors) if selectors else ImplicitPriority.KIND
        if implicit is not ImplicitPriority.MISMATCH:
            found.append((implicit, policy.name, policy))
    found.sort(key=lambda f: (f[0], f[1]))
    return [policy for _, _, policy in found]


def handled_by(spec: PropagationSpec, scheduler_name: str = DEFAULT_SCHEDULER) -> bool:
    """Whether the scheduler called ``scheduler_name`` places workloads of this policy
    (an empty ``schedulerName`` means the default scheduler)."""
    return spec.scheduler_name == scheduler_name
