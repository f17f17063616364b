"""Kubernetes-style REST paths, parsed into what they address.

    /api/v1/PLURAL[/NAME[/status]]                         core kinds (cluster-scoped,
    /api/v1/namespaces/NS/PLURAL[/NAME[/status]]            or namespaced)
    /apis/GROUP/VERSION/PLURAL[/NAME[/status]]              cluster-scoped kinds; for a
                                                            namespaced kind PLURAL alone
                                                            lists all namespaces
    /apis/GROUP/VERSION/namespaces/NS/PLURAL[/NAME[/status]]

Parsing is pure: the kind comes from the registry, a path that names nothing raises
:class:`~protocol.errors.NotFound`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from protocol.errors import InvalidObject, NotFound
from protocol.resources import REGISTRY, KindInfo, KindRegistry, check_namespace


class Scope(StrEnum):
    COLLECTION = "collection"
    OBJECT = "object"
    STATUS = "status"


@dataclass(frozen=True)
class Target:
    kind: KindInfo
    scope: Scope
    namespace: str | None  # None: cluster-scoped kind, or a list across all namespaces
    name: str | None = None


def parse_resource_path(
    path: str, *, registry: KindRegistry = REGISTRY,
) -> Target:
    """``path`` is the full request path, starting with ``/api/`` or ``/apis/``."""
    parts = path.strip("/").split("/")
    if any(p == "" for p in parts) or len(parts) < 3:
        raise _missing(path)
    if parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif parts[0] == "apis" and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise _missing(path)

    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    kind = registry.by_path(group, version, rest[0])
    if namespace is not None and not kind.namespaced:
        raise NotFound(f"{kind.plural} are cluster-scoped: drop /namespaces/{namespace} from "
                       "the path")
    if namespace is not None:
        try:
            check_namespace(namespace, "namespace")
        except InvalidObject as exc:  # nothing can live there, so listing it finds nothing
            raise NotFound(f"{exc.message}, so it holds no {kind.plural}") from None
    if len(rest) == 1:
        return Target(kind, Scope.COLLECTION, namespace)
    if kind.namespaced and namespace is None:
        raise NotFound(f"{kind.plural} are namespaced: address one under "
                       f"{kind.collection_path('NAMESPACE')}/{rest[1]}")
    if len(rest) == 2:
        return Target(kind, Scope.OBJECT, namespace, rest[1])
    if len(rest) == 3 and rest[2] == "status":
        return Target(kind, Scope.STATUS, namespace, rest[1])
    raise _missing(path)


def _missing(path: str) -> NotFound:
    return NotFound(f"the server has no resource at {path}")
