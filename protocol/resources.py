"""Kubernetes-shaped objects: metadata, the kind registry and validation.

An object travels as a plain ``dict`` (what the user wrote, plus the metadata the
store adds).  Validation runs the kind's pydantic models over it and reports the
first problem with the path of the offending field (``spec.properties[0].name``);
the stored object is the user's own dict, so a KubeEdge manifest comes back exactly
as it was applied.

Later kinds plug in by calling :func:`register` with a :class:`KindInfo`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NewType

from pydantic import BaseModel, ConfigDict, ValidationError

from protocol.errors import InvalidObject, NotFound

ObjectKey = NewType("ObjectKey", str)
"""``Kind/namespace/name`` (namespace empty for cluster-scoped kinds)."""

# Always fullmatch(), never match(): "$" also matches before a final newline, so match()
# let "name\n" through (found by tests/fuzz).
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

SYSTEM_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp")


def make_key(kind: str, namespace: str | None, name: str) -> ObjectKey:
    return ObjectKey(f"{kind}/{namespace or ''}/{name}")


def split_key(key: str) -> tuple[str, str | None, str]:
    kind, namespace, name = key.split("/", 2)
    return kind, namespace or None, name


def key_of(obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return make_key(str(obj.get("kind")), meta.get("namespace"), str(meta.get("name")))


def resource_version(obj: Mapping[str, Any]) -> int:
    """The object's resourceVersion as an integer (0 when it has none yet)."""
    raw = (obj.get("metadata") or {}).get("resourceVersion")
    try:
        return int(raw) if raw not in (None, "") else 0
    except (TypeError, ValueError):
        raise InvalidObject(
            "resourceVersion must be a decimal integer string", field="metadata.resourceVersion"
        ) from None


def check_dns_subdomain(value: str, path: str) -> None:
    if len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        raise InvalidObject(
            f"{value!r} is not a valid name: lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit, at most 253 characters",
            field=path,
        )


def check_namespace(value: str, path: str) -> None:
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise InvalidObject(f"{value!r} is not a valid namespace", field=path)


def check_label_key(key: str, path: str) -> None:
    prefix, slash, name = key.rpartition("/")
    if slash:  # "/name" has an empty prefix, which is not a DNS subdomain either
        check_dns_subdomain(prefix, path)
    if not name or len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        raise InvalidObject(f"{key!r} is not a valid label key", field=path)


def check_label_value(value: str, path: str) -> None:
    if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
        raise InvalidObject(f"{value!r} is not a valid label value", field=path)


class ObjectMeta(BaseModel):
    """The metadata a user may write.  System fields are accepted (``kubectl get -o
    yaml`` output can be re-applied) but the store overwrites them."""

    model_config = ConfigDict(extra="forbid")

    name: str
    namespace: str | None = None
    generateName: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    uid: str | None = None
    resourceVersion: str | None = None
    generation: int | None = None
    creationTimestamp: str | None = None
    deletionTimestamp: str | None = None
    deletionGracePeriodSeconds: int | None = None
    ownerReferences: list[dict[str, Any]] | None = None
    finalizers: list[str] | None = None
    managedFields: list[dict[str, Any]] | None = None
    selfLink: str | None = None


@dataclass(frozen=True)
class Column:
    """One column of ``efctl get`` table output: a header and a function of the object."""

    header: str
    path: str  # dotted path into the object, e.g. "spec.nodeName"
    wide_only: bool = False


@dataclass(frozen=True)
class KindInfo:
    kind: str
    group: str  # "" for the core group
    version: str
    plural: str
    namespaced: bool
    spec_model: type[BaseModel] | None = None
    status_model: type[BaseModel] | None = None
    short_names: tuple[str, ...] = ()
    columns: tuple[Column, ...] = ()
    # Kinds a user may not create through the API (Node is created by the join flow).
    system_created: bool = False
    extra_top_level: tuple[str, ...] = field(default=())

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def collection_path(self, namespace: str | None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            return f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{self.plural}"

    def object_path(self, namespace: str | None, name: str) -> str:
        return f"{self.collection_path(namespace)}/{name}"


class KindRegistry:
    def __init__(self) -> None:
        self._by_kind: dict[str, KindInfo] = {}
        self._aliases: dict[str, KindInfo] = {}
        self._by_path: dict[tuple[str, str, str], KindInfo] = {}

    def register(self, info: KindInfo) -> KindInfo:
        if info.kind in self._by_kind:
            raise ValueError(f"kind {info.kind} registered twice")
        self._by_kind[info.kind] = info
        for alias in (info.kind, info.plural, info.kind.lower(), *info.short_names):
            self._aliases[alias.lower()] = info
        self._by_path[(info.group, info.version, info.plural)] = info
        return info

    def all(self) -> list[KindInfo]:
        return list(self._by_kind.values())

    def by_kind(self, kind: str) -> KindInfo:
        try:
            return self._by_kind[kind]
        except KeyError:
            raise NotFound(f"unknown kind {kind!r}", field="kind") from None

    def resolve(self, name: str) -> KindInfo:
        """Kind, plural, singular or short name, any case (``nodes``, ``no``, ``Device``)."""
        try:
            return self._aliases[name.lower()]
        except KeyError:
            raise NotFound(f"unknown kind {name!r}") from None

    def by_path(self, group: str, version: str, plural: str) -> KindInfo:
        try:
            return self._by_path[(group, version, plural)]
        except KeyError:
            api = f"{group}/{version}" if group else version
            raise NotFound(f"the server has no resource {plural!r} in {api}") from None


REGISTRY = KindRegistry()


def register(info: KindInfo) -> KindInfo:
    return REGISTRY.register(info)


def pydantic_path(loc: tuple[int | str, ...], prefix: str = "") -> str:
    """Turn a pydantic error location into ``spec.properties[0].name``."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def run_model(model: type[BaseModel], data: Any, prefix: str) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(
            p for p in first["loc"] if not (isinstance(p, str) and p.startswith("function-"))
        )
        raise InvalidObject(_humanise(first), field=pydantic_path(loc, prefix)) from None


def _humanise(err: Any) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    return str(err.get("msg", "invalid value"))


def validate_object(
    obj: Any, *, registry: KindRegistry = REGISTRY
) -> tuple[KindInfo, dict[str, Any]]:
    """Check a user-written object.  Returns its kind and the object with the namespace
    defaulted; raises :class:`InvalidObject` naming the first bad field."""
    if not isinstance(obj, dict):
        raise InvalidObject("an object must be a mapping", field="")
    api_version = obj.get("apiVersion")
    kind = obj.get("kind")
    if not isinstance(api_version, str) or not api_version:
        raise InvalidObject("required field is missing", field="apiVersion")
    if not isinstance(kind, str) or not kind:
        raise InvalidObject("required field is missing", field="kind")
    try:
        info = registry.by_kind(kind)
    except NotFound:
        raise InvalidObject(f"unknown kind {kind!r}", field="kind") from None
    if info.api_version != api_version:
        raise InvalidObject(
            f"kind {kind} is served as {info.api_version}, not {api_version}", field="apiVersion"
        )
    allowed = {"apiVersion", "kind", "metadata", "spec", "status", *info.extra_top_level}
    for top in obj:
        if top not in allowed:
            raise InvalidObject("unknown field", field=str(top))
    meta_raw = obj.get("metadata")
    if not isinstance(meta_raw, dict):
        raise InvalidObject("required field is missing", field="metadata")
    meta = run_model(ObjectMeta, meta_raw, "metadata")
    assert isinstance(meta, ObjectMeta)
    check_dns_subdomain(meta.name, "metadata.name")
    if info.namespaced:
        check_namespace(meta.namespace or "default", "metadata.namespace")
    elif meta.namespace:
        raise InvalidObject(f"{kind} is cluster-scoped and takes no namespace",
                            field="metadata.namespace")
    for k, v in (meta.labels or {}).items():
        check_label_key(k, f"metadata.labels.{k}")
        check_label_value(v, f"metadata.labels.{k}")
    if meta.resourceVersion not in (None, ""):
        resource_version(obj)
    if info.spec_model is not None and "spec" in obj:
        run_model(info.spec_model, obj["spec"], "spec")
    elif info.spec_model is not None and "spec" not in obj:
        run_model(info.spec_model, {}, "spec")
    if info.status_model is not None and obj.get("status") is not None:
        run_model(info.status_model, obj["status"], "status")
    out = dict(obj)
    new_meta = {k: v for k, v in meta_raw.items() if k not in ("managedFields", "selfLink")}
    if info.namespaced:
        new_meta["namespace"] = meta.namespace or "default"
    out["metadata"] = new_meta
    return info, out


def validate_status(info: KindInfo, status: Any) -> dict[str, Any]:
    if not isinstance(status, dict):
        raise InvalidObject("status must be a mapping", field="status")
    if info.status_model is not None:
        run_model(info.status_model, status, "status")
    return status


def dig(obj: Mapping[str, Any], path: str) -> Any:
    """Follow a dotted path through nested mappings; None when any step is missing."""
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    return cur
