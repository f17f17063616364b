"""Parsed PropagationPolicies and OverridePolicies, parsed again only when they change.

Stored policies were validated when they were applied; parsing them once more per
reconcile would cost a pydantic pass per policy per round, so the parsed views are kept
by key and resourceVersion.  A stored policy that no longer parses (a kind it selected
was unregistered, say) is skipped with a warning rather than stopping placement.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import ValidationError

from cloudcore.placement import OverridePolicyView, PropagationPolicyView
from protocol.errors import EdgefleetError
from protocol.resources import ObjectKey, key_of, resource_version

log = logging.getLogger(__name__)

View = TypeVar("View", PropagationPolicyView, OverridePolicyView)


class PolicyBook:
    def __init__(self) -> None:
        self._propagation: dict[ObjectKey, tuple[int, PropagationPolicyView | None]] = {}
        self._override: dict[ObjectKey, tuple[int, OverridePolicyView | None]] = {}

    def propagation(self, objects: Sequence[dict[str, Any]]) -> list[PropagationPolicyView]:
        return _parse(objects, self._propagation, PropagationPolicyView.from_object)

    def overrides(self, objects: Sequence[dict[str, Any]]) -> list[OverridePolicyView]:
        return _parse(objects, self._override, OverridePolicyView.from_object)


def _parse(objects: Sequence[dict[str, Any]],
           cache: dict[ObjectKey, tuple[int, View | None]],
           parse: Callable[[dict[str, Any]], View]) -> list[View]:
    seen: set[ObjectKey] = set()
    out: list[View] = []
    for obj in objects:
        key, rv = key_of(obj), resource_version(obj)
        seen.add(key)
        held = cache.get(key)
        if held is None or held[0] != rv:
            view: View | None
            try:
                view = parse(obj)
            except (ValidationError, EdgefleetError) as exc:
                log.warning("ignoring %s: it does not parse: %s", key, exc)
                view = None
            held = cache[key] = (rv, view)
        if held[1] is not None:
            out.append(held[1])
    for gone in set(cache) - seen:
        del cache[gone]
    return out
