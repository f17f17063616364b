"""What each efctl command does, given parsed arguments and an API client."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import quote

from efctl.client import ApiClient
from efctl.manifests import Document, ManifestError, load_manifests
from efctl.render import describe as render_describe
from efctl.render import object_ref, replica_table, table, to_json, to_yaml
from protocol.errors import EdgefleetError, NotFound
from protocol.resources import REGISTRY, KindInfo, validate_object

DEFAULT_NAMESPACE = "default"


class CommandError(Exception):
    """A command failed; the message is the one line efctl prints after ``error:``."""


def resolve_kind(name: str) -> KindInfo:
    try:
        return REGISTRY.resolve(name)
    except NotFound:
        known = ", ".join(sorted(k.plural for k in REGISTRY.all()))
        raise CommandError(f"unknown kind {name!r} (known kinds: {known})") from None


def _namespace_of(kind: KindInfo, namespace: str | None) -> str | None:
    return (namespace or DEFAULT_NAMESPACE) if kind.namespaced else None


def _label(kind: KindInfo, namespace: str | None, name: str) -> str:
    return f"{kind.kind} {namespace}/{name}" if namespace else f"{kind.kind} {name}"


@dataclass(frozen=True)
class Manifest:
    """A document of a manifest file, checked and addressed."""

    doc: Document
    kind: KindInfo
    obj: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def namespace(self) -> str | None:
        ns = self.obj["metadata"].get("namespace")
        return str(ns) if ns else None

    @property
    def path(self) -> str:
        return self.kind.object_path(self.namespace, self.name)

    @property
    def label(self) -> str:
        return _label(self.kind, self.namespace, self.name)


def _doc_label(doc: Document) -> str:
    """Best-effort ``Kind ns/name`` of a document that may not validate."""
    meta = doc.obj.get("metadata")
    kind = doc.obj.get("kind")
    if isinstance(meta, dict) and isinstance(meta.get("name"), str) and isinstance(kind, str):
        ns = meta.get("namespace")
        try:
            namespaced = REGISTRY.by_kind(kind).namespaced
        except NotFound:
            namespaced = bool(ns)
        ns = (ns or DEFAULT_NAMESPACE) if namespaced else None
        return f"{kind} {ns}/{meta['name']}" if ns else f"{kind} {meta['name']}"
    return f"document {doc.index}"


def load_checked(file: str) -> tuple[str, list[Manifest]]:
    """Parse and validate every document before anything is sent, so a mistake
    anywhere in the file changes nothing on the server."""
    try:
        source, docs = load_manifests(file)
    except ManifestError as exc:
        raise CommandError(str(exc)) from None
    if not docs:
        raise CommandError(f"{source}: no objects in the file")
    out: list[Manifest] = []
    for doc in docs:
        # status is the system's; the server ignores it, so it is not judged here.
        body = {k: v for k, v in doc.obj.items() if k != "status"}
        try:
            kind, obj = validate_object(body)
        except EdgefleetError as exc:
            raise CommandError(f"{_doc_label(doc)}: {exc} ({source}, document {doc.index})") \
                from None
        out.append(Manifest(doc, kind, {**doc.obj, "metadata": obj["metadata"]}))
    return source, out


def apply(client: ApiClient, file: str, out: TextIO = sys.stdout) -> None:
    source, manifests = load_checked(file)
    for m in manifests:
        try:
            try:
                before: str | None = client.get(m.path)["metadata"].get("resourceVersion")
            except NotFound:
                before = None
            code, stored = client.put(m.path, m.obj)
        except EdgefleetError as exc:
            raise CommandError(f"{m.label}: {exc} ({source}, document {m.doc.index})") from None
        if code == 201:
            result = "created"
        elif stored["metadata"].get("resourceVersion") == before:
            result = "unchanged"
        else:
            result = "configured"
        out.write(f"{object_ref(m.kind, m.name)} {result}\n")
        out.flush()


def get(
    client: ApiClient, kind_name: str, name: str | None, *, namespace: str | None,
    all_namespaces: bool, selector: str | None, output: str, out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> None:
    kind = resolve_kind(kind_name)
    if name is not None and (all_namespaces or selector):
        raise CommandError("a NAME cannot be combined with -A or -l")
    all_namespaces = all_namespaces and kind.namespaced
    ns = None if all_namespaces else _namespace_of(kind, namespace)
    if name is not None:
        try:
            obj = client.get(kind.object_path(ns, name))
        except EdgefleetError as exc:
            raise CommandError(str(exc)) from None
        if output == "json":
            out.write(to_json(obj))
        elif output == "yaml":
            out.write(to_yaml(obj))
        else:
            out.write(table(kind, [obj], wide=output == "wide", all_namespaces=False))
            if kind.kind == "App" and output == "wide" and (replicas := replica_table(obj)):
                out.write("\n" + replicas)
        return
    params = {"labelSelector": selector} if selector else None
    try:
        listing = client.get(kind.collection_path(ns), params=params)
    except EdgefleetError as exc:
        raise CommandError(str(exc)) from None
    items = listing.get("items") or []
    if output == "json":
        out.write(to_json(listing))
    elif output == "yaml":
        out.write(to_yaml(listing))
    elif not items:
        where = f" in {ns} namespace" if ns else ""
        err.write(f"No resources found{where}.\n")
    else:
        out.write(table(kind, items, wide=output == "wide", all_namespaces=all_namespaces))


def describe(
    client: ApiClient, kind_name: str, name: str, *, namespace: str | None,
    out: TextIO = sys.stdout,
) -> None:
    kind = resolve_kind(kind_name)
    try:
        obj = client.get(kind.object_path(_namespace_of(kind, namespace), name))
    except EdgefleetError as exc:
        raise CommandError(str(exc)) from None
    out.write(render_describe(kind, obj))


def delete(
    client: ApiClient, kind_name: str | None, name: str | None, *, namespace: str | None,
    file: str | None, out: TextIO = sys.stdout,
) -> None:
    if file is not None:
        if kind_name is not None or name is not None:
            raise CommandError("give either KIND NAME or -f FILE, not both")
        source, manifests = load_checked(file)
        targets = [(m.kind, m.namespace, m.name, f" ({source}, document {m.doc.index})")
                   for m in manifests]
    else:
        if kind_name is None or name is None:
            raise CommandError("delete needs KIND NAME or -f FILE")
        kind = resolve_kind(kind_name)
        targets = [(kind, _namespace_of(kind, namespace), name, "")]
    for kind, ns, obj_name, where in targets:
        try:
            client.delete(kind.object_path(ns, obj_name))
        except EdgefleetError as exc:
            raise CommandError(f"{_label(kind, ns, obj_name)}: {exc}{where}") from None
        qualified = f"{kind.kind.lower()}.{kind.group}" if kind.group else kind.kind.lower()
        out.write(f'{qualified} "{obj_name}" deleted\n')
        out.flush()


def token_create(client: ApiClient, ttl: str | None, out: TextIO = sys.stdout) -> None:
    body = {"ttl": ttl} if ttl else {}
    try:
        created = client.post("/auth/jointokens", body)
    except EdgefleetError as exc:
        raise CommandError(str(exc)) from None
    out.write(f"{created['token']}\n")


def node_revoke(client: ApiClient, name: str, out: TextIO = sys.stdout) -> None:
    try:
        client.post(f"/auth/nodes/{quote(name, safe='')}/revoke", {})
    except EdgefleetError as exc:
        raise CommandError(str(exc)) from None
    out.write(f"node/{name} revoked\n")


def user_create(client: ApiClient, name: str, role: str, out: TextIO = sys.stdout) -> None:
    try:
        created = client.post("/auth/users", {"name": name, "role": role})
    except EdgefleetError as exc:
        raise CommandError(str(exc)) from None
    out.write(f"{created['token']}\n")
