"""What a JSON document must not hold, anywhere edgefleet accepts one.

Python's ``json`` parses about a thousand levels, but pydantic serialises at most 255:
an object nested deeper than that is accepted by the API or the link and then cannot be
encoded into the envelope that carries it to a node, which fails that node's sync for as
long as the object exists (found by tests/fuzz).  No real object comes near
:data:`MAX_DEPTH`; both entry points refuse anything deeper.

The same goes for a lone UTF-16 surrogate: ``"\\ud800"`` is valid JSON syntax and
``json.loads`` turns it into a Python string that no UTF-8 encoder will write back out
(found by tests/fuzz on the link).  Only a ``\\uD8xx``-``\\uDFxx`` escape can produce one
from UTF-8 input, so the strings are only walked when the text holds such an escape.
"""

from __future__ import annotations

import re
from typing import Any

MAX_DEPTH = 100
"""Levels of objects and arrays a document may nest, the outermost one included; far
below the encoder's limit, with room for the envelope around an object."""

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


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


def may_be_too_deep(text: str | bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON ``text`` has enough brackets to nest past ``limit``: a count at C
    speed that spares almost every frame the walk of :func:`too_deep` (nesting needs an
    opening bracket per level; brackets inside strings only make this say yes more)."""
    if isinstance(text, str):
        return text.count("{") + text.count("[") > limit
    return text.count(b"{") + text.count(b"[") > limit


def may_hold_surrogates(text: str | bytes) -> bool:
    """Whether JSON ``text`` has an escape that could decode to a lone surrogate."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return _SURROGATE_ESCAPE.search(raw) is not None


def lone_surrogate(value: Any) -> bool:
    """Whether any string (key or value) in parsed JSON ``value`` holds a lone surrogate,
    which UTF-8 cannot carry."""
    stack: list[Any] = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False
