"""Walking a KubeEdge CRD's OpenAPI schema, for the "accepted unchanged" tests: every
field path it declares, the smallest object holding a value at that path, the values
the API server would refuse there, and the field paths our pydantic models declare."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel

Place = Callable[[Any], Any]
"""Builds the smallest valid value of a schema with the given value put at one path."""


def crd_schema(path: Path, version: str) -> dict[str, Any]:
    crd = yaml.safe_load(path.read_text())
    (entry,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = entry["schema"]["openAPIV3Schema"]
    assert isinstance(schema, dict)
    return schema


def minimal(schema: dict[str, Any]) -> Any:
    """The smallest value the schema accepts."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = str(schema.get("type"))
    if kind == "object":
        return {name: minimal(schema["properties"][name]) for name in schema.get("required", [])}
    scalars: dict[str, Any] = {"string": "s", "integer": 1, "boolean": True, "number": 1.5}
    return [] if kind == "array" else scalars[kind]


def wrong_values(schema: dict[str, Any]) -> list[Any]:
    """Values the API server would refuse for this schema."""
    if "enum" in schema:
        return [5, "NOT_" + schema["enum"][0]]
    by_type: dict[str, list[Any]] = {
        "string": [5, True, ["s"]],
        "integer": ["5", True, 1.5, 2**63 if schema.get("format") != "int32" else 2**31],
        "boolean": ["yes", 1],
        "number": ["1.5", True],
        "array": ["x", {}],
        "object": ["x", [1]],
    }
    return by_type[schema["type"]]


def _same(v: Any) -> Any:
    return v


def _in_list(place: Place) -> Place:
    return lambda v: [place(v)]


def _in_field(base: dict[str, Any], name: str, place: Place) -> Place:
    return lambda v: {**base, name: place(v)}


def places(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any], Place]]:
    """Every field under ``schema``: its path, its schema and how to build an otherwise
    minimal value of ``schema`` with something put in that field."""
    if schema.get("type") == "array":
        if schema["items"].get("type") != "object":
            yield f"{path}[0]", schema["items"], _in_list(_same)
        for sub_path, sub_schema, place in places(schema["items"], f"{path}[0]"):
            yield sub_path, sub_schema, _in_list(place)
    if schema.get("type") != "object":
        return
    base = minimal(schema)
    for name, prop in schema.get("properties", {}).items():
        prop_path = f"{path}.{name}"
        yield prop_path, prop, _in_field(base, name, _same)
        for sub_path, sub_schema, place in places(prop, prop_path):
            yield sub_path, sub_schema, _in_field(base, name, place)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        yield f"{path}.k", extra, _in_field(base, "k", _same)


def setter(path: list[str | int], value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation putting ``value`` at ``path`` of an object."""
    def mutate(obj: dict[str, Any]) -> None:
        cur: Any = obj
        for step in path[:-1]:
            cur = cur[step]
        cur[path[-1]] = value

    return mutate


def model_fields(model: type[BaseModel], path: str) -> Iterator[str]:
    """Every field path the pydantic models declare, in the CRD walk's notation."""
    for name, info in model.model_fields.items():
        here = f"{path}.{name}"
        yield here
        stack: list[tuple[Any, str]] = [(info.annotation, here)]
        while stack:
            tp, at = stack.pop()
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                yield from model_fields(tp, at)
            elif get_origin(tp) is list:
                stack.extend((arg, f"{at}[0]") for arg in get_args(tp))
            elif get_origin(tp) is not dict:
                stack.extend((arg, at) for arg in get_args(tp))
