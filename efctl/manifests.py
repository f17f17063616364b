"""Reading multi-document YAML manifests into plain JSON-ready objects.

The YAML is parsed safely (no Python tags).  Unquoted timestamps stay strings, as
they do for kubectl, because a Kubernetes object has no date type.  Every document
must be a mapping, at most 1 MiB once converted to JSON, and made only of JSON
values; the first violation is reported with its file, line or field path.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

MAX_DOCUMENT_BYTES = 1 << 20


class ManifestError(Exception):
    """A manifest cannot be used; the message is one line for the user."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that leaves timestamps as strings."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True)
class Document:
    index: int  # 1-based position among the file's non-empty documents
    obj: dict[str, Any]


def read_source(name: str) -> tuple[str, str]:
    """``name`` is a path or ``-`` for stdin; returns (display name, text)."""
    if name == "-":
        return "<stdin>", sys.stdin.read()
    try:
        return name, Path(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{name}: no such file") from None
    except UnicodeDecodeError:
        raise ManifestError(f"{name}: not UTF-8 text") from None
    except OSError as exc:
        raise ManifestError(f"{name}: {exc.strerror or exc}") from None


def _yaml_error(source: str, exc: yaml.YAMLError) -> ManifestError:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = exc.problem or exc.context or "unexpected content"
        return ManifestError(
            f"{source}: invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
        )
    return ManifestError(f"{source}: invalid YAML: {' '.join(str(exc).split())}")


def _path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def check_json_ready(obj: Any, limit: int = MAX_DOCUMENT_BYTES) -> None:
    """Raise ManifestError naming the first value JSON cannot carry, or when the
    object would exceed ``limit`` bytes of JSON.  Counting stops at the limit, so a
    YAML alias bomb is refused without being expanded."""
    size = 0
    pending: list[tuple[str, Any]] = [("", obj)]
    while pending:
        path, value = pending.pop()
        where = path or "the document"
        if isinstance(value, dict):
            size += 2
            for key, item in value.items():
                if not isinstance(key, str):
                    raise ManifestError(
                        f"{where}: key {key!r} is not a string; quote it"
                    )
                size += len(key) + 4
                pending.append((_path(path, key), item))
        elif isinstance(value, list):
            size += 2
            pending.extend((_path(path, i), item) for i, item in enumerate(value))
        elif isinstance(value, str):
            size += len(value.encode("utf-8")) + 2
        elif isinstance(value, float) and not math.isfinite(value):
            raise ManifestError(f"{where}: {value} is not a JSON number")
        elif value is None or isinstance(value, (bool, int, float)):
            size += len(json.dumps(value))
        else:
            raise ManifestError(
                f"{where}: a YAML {type(value).__name__} value cannot be sent as JSON; quote it"
            )
        if size > limit:
            raise ManifestError(f"the document is larger than {limit} bytes")


def parse_documents(text: str, source: str) -> list[Document]:
    """All non-empty documents of ``text``.  Nothing is returned unless every
    document parses and is usable, so a bad file changes nothing."""
    try:
        raw_docs = list(yaml.load_all(text, Loader=_Loader))  # _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        raise _yaml_error(source, exc) from None
    except RecursionError:
        raise ManifestError(f"{source}: invalid YAML: nested too deeply") from None
    docs: list[Document] = []
    for raw in raw_docs:
        if raw is None:
            continue  # an empty document, e.g. after a trailing '---'
        index = len(docs) + 1
        if not isinstance(raw, dict):
            raise ManifestError(
                f"{source}: document {index} is a {type(raw).__name__}, not a mapping "
                "with apiVersion, kind and metadata"
            )
        try:
            check_json_ready(raw)
        except ManifestError as exc:
            raise ManifestError(f"{source}: document {index}: {exc}") from None
        docs.append(Document(index, raw))
    return docs


def load_manifests(name: str) -> tuple[str, list[Document]]:
    source, text = read_source(name)
    return source, parse_documents(text, source)
