"""How deeply nested a JSON document may be, anywhere edgefleet accepts one.

Python's ``json`` parses about a thousand levels, but pydantic serialises at most 255:
an object nested deeper than that is accepted by the API or the link and then cannot be
encoded into the envelope that carries it to a node, which fails that node's sync for as
long as the object exists (found by tests/fuzz).  No real object comes near
:data:`MAX_DEPTH`; both entry points refuse anything deeper.
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 100
"""Levels of objects and arrays a document may nest, the outermost one included; far
below the encoder's limit, with room for the envelope around an object."""


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` (parsed JSON) nests more than ``limit`` objects and arrays."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, dict | list))
    return False
