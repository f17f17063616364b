"""The cloud's view of every Rule and RuleEndpoint, joined into routes (pure).

Kept up to date from the dispatcher's store watch.  Each Rule is re-resolved whenever
it or an endpoint of its namespace changes; a rule that cannot be resolved keeps its
reason (:meth:`RouteIndex.error_of`) for the Rule's ``status.errors``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from protocol.kinds.rules import RuleEndpointType
from protocol.resources import resource_version
from protocol.routes import InvalidRoute, Route, normalize_path, resolve_route, route_matches_topic

Name = tuple[str, str]  # (namespace, name)


def _name_of(obj: Mapping[str, Any]) -> Name:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace")), str(meta.get("name"))


class RouteIndex:
    def __init__(self) -> None:
        self._rules: dict[Name, dict[str, Any]] = {}
        self._endpoints: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self._routes: dict[Name, Route] = {}
        self._errors: dict[Name, str] = {}

    # ---- changes ---------------------------------------------------------------------

    def upsert(self, obj: dict[str, Any]) -> list[Name]:
        """Take a newer Rule or RuleEndpoint; returns the rules whose resolution
        error changed (so their status can say so)."""
        kind = obj.get("kind")
        ns, name = _name_of(obj)
        if kind == "Rule":
            held = self._rules.get((ns, name))
            if held is not None and resource_version(held) >= resource_version(obj):
                return []
            self._rules[(ns, name)] = obj
            return self._resolve([(ns, name)])
        if kind == "RuleEndpoint":
            held = self._endpoints[ns].get(name)
            if held is not None and resource_version(held) >= resource_version(obj):
                return []
            self._endpoints[ns][name] = obj
            return self._resolve(self._rules_in(ns))
        return []

    def delete(self, obj: dict[str, Any]) -> list[Name]:
        kind = obj.get("kind")
        ns, name = _name_of(obj)
        if kind == "Rule":
            self._rules.pop((ns, name), None)
            self._routes.pop((ns, name), None)
            self._errors.pop((ns, name), None)
            return []
        if kind == "RuleEndpoint":
            self._endpoints[ns].pop(name, None)
            return self._resolve(self._rules_in(ns))
        return []

    def _rules_in(self, namespace: str) -> list[Name]:
        return [n for n in self._rules if n[0] == namespace]

    def _resolve(self, names: list[Name]) -> list[Name]:
        changed = []
        for n in names:
            before = self._errors.get(n)
            try:
                self._routes[n] = resolve_route(self._rules[n], self._endpoints[n[0]])
                self._errors.pop(n, None)
            except (InvalidRoute, KeyError, ValueError) as exc:
                self._routes.pop(n, None)
                self._errors[n] = str(exc)
            if self._errors.get(n) != before:
                changed.append(n)
        return changed

    # ---- queries ---------------------------------------------------------------------

    def rest_routes(self, namespace: str, path: str) -> list[Route]:
        wanted = normalize_path(path)
        return sorted(
            (r for (ns, _), r in self._routes.items()
             if ns == namespace and r.source is RuleEndpointType.REST and r.rest_path == wanted),
            key=lambda r: r.rule,
        )

    def eventbus_routes(self, node: str, topic: str) -> list[Route]:
        return sorted((r for r in self._routes.values() if route_matches_topic(r, node, topic)),
                      key=lambda r: r.ref)

    def error_of(self, name: Name) -> str | None:
        return self._errors.get(name)

    def has_rule(self, name: Name) -> bool:
        return name in self._rules
