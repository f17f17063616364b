"""Kubernetes label selectors: the ``?labelSelector=`` / ``efctl get -l`` text form and
the structured ``{matchLabels, matchExpressions}`` form that NodeGroups and policies use.

Text grammar (whitespace between tokens is ignored)::

    selector    := "" | requirement ("," requirement)*
    requirement := "!" KEY                          key absent
                 | KEY                              key present
                 | KEY ("=" | "==" | "!=") [VALUE]  a missing value means ""
                 | KEY ("in" | "notin") "(" [VALUE] ("," [VALUE])* ")"

As in Kubernetes, ``!=`` and ``notin`` also match objects that lack the key, ``()``
means the set holding only the empty value, and keys and values must be valid label
keys and values.  A parsed selector keeps its requirements in one canonical order, so
``str(parse_selector(text))`` parses back to an equal selector.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from protocol.errors import BadRequest, InvalidObject
from protocol.resources import check_label_key, check_label_value

_PARAM = "labelSelector"


class Operator(StrEnum):
    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    NOT_EXISTS = "!"


_SINGLE_VALUE_OPS = (Operator.EQUALS, Operator.NOT_EQUALS)
_SET_OPS = (Operator.IN, Operator.NOT_IN)
_OP_ORDER = {op: i for i, op in enumerate(Operator)}


@dataclass(frozen=True)
class Requirement:
    key: str
    op: Operator
    values: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        # Guard the invariants that make str() parse back to the same requirement.
        if self.op in _SINGLE_VALUE_OPS and len(self.values) != 1:
            raise ValueError(f"operator {self.op!r} takes exactly one value")
        if self.op in _SET_OPS and not self.values:
            raise ValueError(f"operator {self.op!r} takes at least one value")
        if self.op in (Operator.EXISTS, Operator.NOT_EXISTS) and self.values:
            raise ValueError(f"operator {self.op!r} takes no values")

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op is Operator.EXISTS:
            return present
        if self.op is Operator.NOT_EXISTS:
            return not present
        if self.op in (Operator.EQUALS, Operator.IN):
            return present and labels[self.key] in self.values
        # NOT_EQUALS / NOT_IN: an object without the key is "not equal" too.
        return not present or labels[self.key] not in self.values

    def sort_key(self) -> tuple[str, int, tuple[str, ...]]:
        return (self.key, _OP_ORDER[self.op], tuple(sorted(self.values)))

    def __str__(self) -> str:
        if self.op is Operator.EXISTS:
            return self.key
        if self.op is Operator.NOT_EXISTS:
            return f"!{self.key}"
        if self.op in _SINGLE_VALUE_OPS:
            (value,) = self.values
            return f"{self.key}{self.op.value}{value}"
        return f"{self.key} {self.op.value} ({','.join(sorted(self.values))})"


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def of(cls, requirements: list[Requirement]) -> Selector:
        """A selector in canonical form: requirements sorted, duplicates dropped."""
        return cls(tuple(sorted(set(requirements), key=Requirement.sort_key)))

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        have = labels or {}
        return all(req.matches(have) for req in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(req) for req in self.requirements)


EVERYTHING = Selector()


# --- text form -------------------------------------------------------------------------

_IDENT, _EQ, _NEQ, _BANG, _LPAREN, _RPAREN, _COMMA, _END = (
    "identifier", "'='", "'!='", "'!'", "'('", "')'", "','", "end of selector",
)
# Characters that end an identifier.  '<' and '>' are Kubernetes' numeric operators
# (gt/lt, only meaningful for node affinity); we stop on them so they get a clear error.
_SYMBOLS = frozenset("=!(),<>")
_VALUE_RULE = (
    "at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
)
_KEY_RULE = f"an optional DNS-subdomain prefix and '/', then a name of {_VALUE_RULE}"


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    pos: int


def _bad(message: str, pos: int, found: _Token | None = None, hint: str = "") -> BadRequest:
    text = f"{_PARAM}: {message} at {pos}"
    if found is not None:
        text += ", found end of selector" if found.kind == _END else f", found {found.text!r}"
    if hint:
        text += f" ({hint})"
    return BadRequest(text)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == "!" and text.startswith("!=", i):
            tokens.append(_Token(_NEQ, "!=", i))
            i += 2
        elif ch == "=":
            width = 2 if text.startswith("==", i) else 1
            tokens.append(_Token(_EQ, text[i : i + width], i))
            i += width
        elif ch in "<>":
            raise _bad(f"operator {ch!r} is not supported", i)
        elif ch in _SYMBOLS:
            kind = {"!": _BANG, "(": _LPAREN, ")": _RPAREN, ",": _COMMA}[ch]
            tokens.append(_Token(kind, ch, i))
            i += 1
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] not in _SYMBOLS:
                i += 1
            tokens.append(_Token(_IDENT, text[start:i], start))
    tokens.append(_Token(_END, "", n))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.at = 0

    def peek(self) -> _Token:
        return self.tokens[self.at]

    def take(self) -> _Token:
        tok = self.tokens[self.at]
        if tok.kind != _END:
            self.at += 1
        return tok

    def expect(self, kind: str, what: str) -> _Token:
        tok = self.take()
        if tok.kind != kind:
            raise _bad(f"expected {what}", tok.pos, tok)
        return tok

    def selector(self) -> Selector:
        requirements: list[Requirement] = []
        if self.peek().kind == _END:
            return EVERYTHING
        while True:
            requirements.append(self.requirement())
            tok = self.take()
            if tok.kind == _END:
                return Selector.of(requirements)
            if tok.kind != _COMMA:
                raise _bad("expected ',' or end of selector", tok.pos, tok)

    def requirement(self) -> Requirement:
        if self.peek().kind == _BANG:
            self.take()
            key = self.key()
            return Requirement(key, Operator.NOT_EXISTS)
        key = self.key()
        tok = self.peek()
        if tok.kind in (_COMMA, _END):
            return Requirement(key, Operator.EXISTS)
        if tok.kind in (_EQ, _NEQ):
            self.take()
            op = Operator.EQUALS if tok.kind == _EQ else Operator.NOT_EQUALS
            return Requirement(key, op, frozenset({self.single_value()}))
        if tok.kind == _IDENT and tok.text in ("in", "notin"):
            self.take()
            op = Operator.IN if tok.text == "in" else Operator.NOT_IN
            return Requirement(key, op, self.value_set(tok.text))
        raise _bad("expected '=', '==', '!=', 'in', 'notin', ',' or end of selector",
                   tok.pos, tok)

    def key(self) -> str:
        tok = self.expect(_IDENT, "a label key")
        try:
            check_label_key(tok.text, _PARAM)
        except InvalidObject:
            raise _bad(f"invalid label key {tok.text!r}", tok.pos, hint=_KEY_RULE) from None
        return tok.text

    def value(self, tok: _Token) -> str:
        try:
            check_label_value(tok.text, _PARAM)
        except InvalidObject:
            raise _bad(f"invalid label value {tok.text!r}", tok.pos, hint=_VALUE_RULE) from None
        return tok.text

    def single_value(self) -> str:
        tok = self.peek()
        if tok.kind in (_COMMA, _END):  # "key=" selects the empty value
            return ""
        if tok.kind != _IDENT:
            raise _bad("expected a value", tok.pos, tok)
        return self.value(self.take())

    def value_set(self, op_text: str) -> frozenset[str]:
        self.expect(_LPAREN, f"'(' after {op_text!r}")
        values: set[str] = set()
        current: str | None = None  # value seen since the last ',' or '('
        while True:
            tok = self.take()
            if tok.kind == _IDENT:
                if current is not None:
                    raise _bad("expected ',' or ')'", tok.pos, tok)
                current = self.value(tok)
            elif tok.kind in (_COMMA, _RPAREN):
                # An empty slot ("()", "(a,)", "(a,,b)") stands for the empty value.
                values.add(current if current is not None else "")
                current = None
                if tok.kind == _RPAREN:
                    return frozenset(values)
            else:
                raise _bad("expected ')'", tok.pos, tok)


def parse_selector(text: str) -> Selector:
    """Parse ``?labelSelector=`` text; raises :class:`BadRequest` naming the problem
    and its 0-based character position."""
    return _Parser(text).selector()


# --- structured form -------------------------------------------------------------------

_EXPRESSION_OPS = {
    "In": Operator.IN,
    "NotIn": Operator.NOT_IN,
    "Exists": Operator.EXISTS,
    "DoesNotExist": Operator.NOT_EXISTS,
}


def selector_from_label_selector(obj: Mapping[str, Any], path: str) -> Selector:
    """Build a selector from a Kubernetes ``LabelSelector`` object found at ``path``.

    An empty object selects everything.  Problems raise :class:`InvalidObject` naming
    the offending field, e.g. ``spec.nodeSelector.matchExpressions[1].operator``.
    """
    if not isinstance(obj, Mapping):
        raise InvalidObject("must be an object", field=path)
    for name in obj:
        if name not in ("matchLabels", "matchExpressions"):
            raise InvalidObject("unknown field", field=f"{path}.{name}")
    requirements = _match_labels(obj.get("matchLabels"), f"{path}.matchLabels")
    expressions = obj.get("matchExpressions")
    if expressions is not None:
        if not isinstance(expressions, list):
            raise InvalidObject("must be a list", field=f"{path}.matchExpressions")
        for i, expr in enumerate(expressions):
            requirements.append(_match_expression(expr, f"{path}.matchExpressions[{i}]"))
    return Selector.of(requirements)


def _match_labels(labels: Any, path: str) -> list[Requirement]:
    if labels is None:
        return []
    if not isinstance(labels, Mapping):
        raise InvalidObject("must be an object of label keys to values", field=path)
    out = []
    for key, value in labels.items():
        field = f"{path}.{key}"
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidObject("label keys and values must be strings", field=field)
        check_label_key(key, field)
        check_label_value(value, field)
        out.append(Requirement(key, Operator.EQUALS, frozenset({value})))
    return out


def _match_expression(expr: Any, path: str) -> Requirement:
    if not isinstance(expr, Mapping):
        raise InvalidObject("must be an object", field=path)
    for name in expr:
        if name not in ("key", "operator", "values"):
            raise InvalidObject("unknown field", field=f"{path}.{name}")
    key = expr.get("key")
    if key is None:
        raise InvalidObject("required field is missing", field=f"{path}.key")
    if not isinstance(key, str):
        raise InvalidObject("must be a string", field=f"{path}.key")
    check_label_key(key, f"{path}.key")
    operator = expr.get("operator")
    if operator is None:
        raise InvalidObject("required field is missing", field=f"{path}.operator")
    op = _EXPRESSION_OPS.get(operator) if isinstance(operator, str) else None
    if op is None:
        raise InvalidObject(
            f"{operator!r} is not a valid operator: must be one of In, NotIn, Exists, "
            "DoesNotExist", field=f"{path}.operator",
        )
    raw_values = expr.get("values")
    values: list[str] = []
    if raw_values is not None:
        if not isinstance(raw_values, list):
            raise InvalidObject("must be a list of strings", field=f"{path}.values")
        for i, value in enumerate(raw_values):
            if not isinstance(value, str):
                raise InvalidObject("must be a string", field=f"{path}.values[{i}]")
            check_label_value(value, f"{path}.values[{i}]")
            values.append(value)
    if op in _SET_OPS and not values:
        raise InvalidObject(f"must be non-empty when operator is {operator}",
                            field=f"{path}.values")
    if op not in _SET_OPS and values:
        raise InvalidObject(f"must be empty when operator is {operator}",
                            field=f"{path}.values")
    return Requirement(key, op, frozenset(values))
