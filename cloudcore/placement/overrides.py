"""Rendering a workload for one node group by applying its OverridePolicies
(reference/placement-scheduling.md §2, Karmada's override manager).

Policies apply in :func:`cloudcore.placement.matching.override_policies_for` order;
within a policy, every rule whose ``targetCluster`` matches the group applies, in list
order; within a rule the overriders apply in a fixed order: artifact, command, args,
env, labels, annotations, plaintext.  Later writes win.  Any overrider that cannot be
applied (a JSON pointer to nothing, a value of the wrong shape) raises
:class:`OverrideError` and the workload is not rendered for that group, as Karmada
aborts rendering the Work.

The App's process fields (``spec.command``, ``spec.args``, ``spec.env``,
``spec.artifacts``) are edited where they are; ``spec.env`` may be a Kubernetes-style
list of ``{name, value}`` or a plain mapping, and is kept in the shape it has (a
missing one is created as a list).  The input is never modified.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from cloudcore.placement.clusters import ClusterView, affinity_matches
from cloudcore.placement.matching import OverridePolicyView, override_policies_for
from protocol.kinds.policies import (
    ArtifactOverrider,
    CommandArgsOverrider,
    ListOperator,
    MapOperator,
    MapOverrider,
    Overriders,
    PlaintextOverrider,
)


class OverrideError(Exception):
    """An overrider could not be applied; the message names policy, rule and overrider."""


def render_for_group(
    resource: Mapping[str, Any],
    policies: Iterable[OverridePolicyView],
    group: ClusterView,
) -> dict[str, Any]:
    """``resource`` as ``group`` should run it: every applicable OverridePolicy among
    ``policies`` applied in order."""
    return apply_overrides(resource, override_policies_for(resource, policies), group)


def apply_overrides(
    resource: Mapping[str, Any],
    ordered: Iterable[OverridePolicyView],
    group: ClusterView,
) -> dict[str, Any]:
    """Apply already-ordered policies to a deep copy of ``resource``."""
    out: dict[str, Any] = copy.deepcopy(dict(resource))
    for policy in ordered:
        for i, rule in enumerate(policy.spec.overrideRules or ()):
            if affinity_matches(rule.targetCluster, group):
                where = f"OverridePolicy {policy.namespace}/{policy.name} overrideRules[{i}]"
                _apply_rule(out, rule.overriders, where)
    return out


def _apply_rule(obj: dict[str, Any], rule: Overriders, where: str) -> None:
    name = str((obj.get("metadata") or {}).get("name") or "")
    for i, art in enumerate(rule.artifactOverrider or ()):
        _artifact(obj, art, f"{where}.artifactOverrider[{i}]")
    for cmd in rule.commandOverrider or ():
        _list_field(obj, "command", cmd, name)
    for arg in rule.argsOverrider or ():
        _list_field(obj, "args", arg, name)
    for i, env in enumerate(rule.envOverrider or ()):
        _env(obj, env, f"{where}.envOverrider[{i}]")
    for labels in rule.labelsOverrider or ():
        _map(_meta_map(obj, "labels"), labels)
    for notes in rule.annotationsOverrider or ():
        _map(_meta_map(obj, "annotations"), notes)
    for i, patch in enumerate(rule.plaintext or ()):
        _plaintext(obj, patch, f"{where}.plaintext[{i}]")


def _spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        raise OverrideError("spec is not an object")
    return spec


def _meta_map(obj: dict[str, Any], key: str) -> dict[str, Any]:
    meta = obj.setdefault("metadata", {})
    found = meta.get(key)
    if isinstance(found, dict):
        return found
    fresh: dict[str, Any] = {}
    meta[key] = fresh
    return fresh


def _list_field(obj: dict[str, Any], key: str, ov: CommandArgsOverrider, app_name: str) -> None:
    if ov.containerName and ov.containerName != app_name:
        return  # Karmada applies a container overrider only to the named container
    spec = _spec(obj)
    items = [str(x) for x in spec.get(key) or []]
    values = ov.value or []
    if ov.operator is ListOperator.ADD:
        spec[key] = items + list(values)
    else:
        spec[key] = [x for x in items if x not in values]


def _map(target: dict[str, Any], ov: MapOverrider) -> None:
    for key, value in (ov.value or {}).items():
        if ov.operator is MapOperator.ADD:
            target[key] = value
        elif key in target:
            if ov.operator is MapOperator.REPLACE:
                target[key] = value
            else:
                del target[key]


def _env(obj: dict[str, Any], ov: MapOverrider, where: str) -> None:
    spec = _spec(obj)
    env = spec.get("env")
    if env is None:
        env = spec["env"] = []
    if isinstance(env, dict):
        _map(env, ov)
        return
    if not isinstance(env, list):
        raise OverrideError(f"{where}: spec.env is neither a list nor a mapping")
    index = {e.get("name"): i for i, e in enumerate(env) if isinstance(e, dict)}
    for key, value in (ov.value or {}).items():
        at = index.get(key)
        if ov.operator is MapOperator.REMOVE:
            if at is not None:
                env[at] = None
        elif at is not None:
            env[at] = {"name": key, "value": value}
        elif ov.operator is MapOperator.ADD:
            index[key] = len(env)
            env.append({"name": key, "value": value})
    spec["env"] = [e for e in env if e is not None]


def _artifact(obj: dict[str, Any], ov: ArtifactOverrider, where: str) -> None:
    spec = _spec(obj)
    artifacts = spec.get("artifacts")
    if artifacts is None:
        artifacts = spec["artifacts"] = []
    if not isinstance(artifacts, list):
        raise OverrideError(f"{where}: spec.artifacts is not a list")
    value = dict(ov.value or {})
    name = ov.name or value.get("name")
    at = next((i for i, a in enumerate(artifacts)
               if isinstance(a, dict) and a.get("name") == name), None)
    if ov.operator is MapOperator.ADD:
        entry = {**value, "name": name}
        if at is None:
            artifacts.append(entry)
        else:
            artifacts[at] = entry
    elif at is None:
        raise OverrideError(f"{where}: the App has no artifact named {name!r}")
    elif ov.operator is MapOperator.REPLACE:
        artifacts[at] = {**artifacts[at], **value, "name": name}
    else:
        del artifacts[at]


# --- plaintext: RFC 6902 add / remove / replace at an RFC 6901 pointer ----------------------


def _tokens(pointer: str) -> list[str]:
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]]


def _index(container: list[Any], token: str, *, allow_end: bool, where: str) -> int:
    if token == "-" and allow_end:
        return len(container)
    # isascii(): isdigit() alone passes "²", which int() refuses with a ValueError that
    # no caller expects (found by tests/fuzz).
    if not (token.isascii() and token.isdigit()) or (len(token) > 1 and token.startswith("0")):
        raise OverrideError(f"{where}: {token!r} is not an array index")
    i = int(token)
    if i > len(container) or (i == len(container) and not allow_end):
        raise OverrideError(f"{where}: index {i} is out of range")
    return i


def _plaintext(obj: dict[str, Any], ov: PlaintextOverrider, where: str) -> None:
    tokens = _tokens(ov.path)
    parent: Any = obj
    for depth, token in enumerate(tokens[:-1]):
        if isinstance(parent, dict) and token in parent:
            parent = parent[token]
        elif isinstance(parent, list):
            parent = parent[_index(parent, token, allow_end=False, where=where)]
        else:
            missing = "/" + "/".join(tokens[: depth + 1])
            raise OverrideError(f"{where}: {missing} does not exist")
    last = tokens[-1]
    value = copy.deepcopy(ov.value)
    if isinstance(parent, dict):
        if ov.operator is not MapOperator.ADD and last not in parent:
            raise OverrideError(f"{where}: {ov.path} does not exist")
        if ov.operator is MapOperator.REMOVE:
            del parent[last]
        else:
            parent[last] = value
    elif isinstance(parent, list):
        adding = ov.operator is MapOperator.ADD
        i = _index(parent, last, allow_end=adding, where=where)
        if adding:
            parent.insert(i, value)
        elif ov.operator is MapOperator.REPLACE:
            parent[i] = value
        else:
            del parent[i]
    else:
        raise OverrideError(f"{where}: the parent of {ov.path} is not an object or array")
