"""Label selectors (protocol/selectors.py) under arbitrary text and arbitrary objects.

``?labelSelector=`` comes straight from any API client and ``nodeSelector`` /
``matchExpressions`` from any stored policy.  What callers rely on: any text parses to a
selector or is refused with a BadRequest (a 400, never a 500); any structured selector
is built or refused with an InvalidObject naming the field; whatever is accepted prints
as text that parses back to the same selector; and matching agrees with a plain reading
of the Kubernetes rules.  (tests/unit/protocol/test_selectors.py does the same for a
fixed pool of keys and well-formed text; here keys and values come from the label
grammar itself and the text is anything at all.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cloudcore.api.openapi import LABEL_KEY_SCHEMA, LABEL_VALUE_SCHEMA
from protocol.errors import BadRequest, InvalidObject
from protocol.selectors import Operator, Selector, parse_selector, selector_from_label_selector
from tests.fuzz.budget import Tally, fuzz

INTERFACE = "label selectors (protocol.selectors)"

label_keys = st.from_regex(LABEL_KEY_SCHEMA["pattern"], fullmatch=True).filter(
    lambda k: len(k.rpartition("/")[0]) <= 253)
label_values = st.from_regex(LABEL_VALUE_SCHEMA["pattern"], fullmatch=True).filter(
    lambda v: len(v) <= 63)
# A few keys and values shared by selectors and labels, so that matches happen.
keys = st.sampled_from(["app", "example.com/tier", "x_1.y-2"]) | label_keys
values = st.sampled_from(["", "a", "v1.2-x"]) | label_values
labels = st.dictionaries(keys, values, max_size=5)

OPERATORS = {"In": Operator.IN, "NotIn": Operator.NOT_IN, "Exists": Operator.EXISTS,
             "DoesNotExist": Operator.NOT_EXISTS}


@st.composite
def expressions(draw: st.DrawFn) -> dict[str, Any]:
    operator = draw(st.sampled_from(sorted(OPERATORS)))
    expr: dict[str, Any] = {"key": draw(keys), "operator": operator}
    if operator in ("In", "NotIn"):
        expr["values"] = draw(st.lists(values, min_size=1, max_size=3))
    return expr


structured = st.fixed_dictionaries({}, optional={
    "matchLabels": st.dictionaries(keys, values, max_size=3),
    "matchExpressions": st.lists(expressions(), max_size=3),
})

selector_alphabet = st.sampled_from([*"=!(),<> \tab01-_./", "in", "notin", "==", "!="])
selectorish = st.lists(selector_alphabet, max_size=25).map("".join)


def reference_matches(obj: Mapping[str, Any], have: Mapping[str, str]) -> bool:
    """The Kubernetes LabelSelector rules, read off the structured form directly."""
    for key, value in (obj.get("matchLabels") or {}).items():
        if have.get(key) != value:
            return False
    for expr in obj.get("matchExpressions") or []:
        key, op, vals = expr["key"], expr["operator"], expr.get("values") or []
        ok = {"In": key in have and have[key] in vals,
              "NotIn": key not in have or have[key] not in vals,
              "Exists": key in have,
              "DoesNotExist": key not in have}[op]
        if not ok:
            return False
    return True


def _round_trips(selector: Selector) -> None:
    again = parse_selector(str(selector))
    assert again == selector, (str(selector), str(again))
    assert str(again) == str(selector)


@fuzz()
@given(st.text(max_size=60) | selectorish)
def test_any_text_parses_or_is_a_bad_request(tally: Tally, text: str) -> None:
    with tally.example(INTERFACE):
        try:
            selector = parse_selector(text)
        except BadRequest as exc:
            assert exc.code == 400 and exc.message.startswith("labelSelector: ")
            return
        _round_trips(selector)


@fuzz()
@given(structured, labels)
def test_structured_selectors_print_parse_back_and_match_like_kubernetes(
        tally: Tally, obj: dict[str, Any], have: dict[str, str]) -> None:
    with tally.example(INTERFACE):
        selector = selector_from_label_selector(obj, "spec.nodeSelector")
        _round_trips(selector)
        assert selector.matches(have) is reference_matches(obj, have)
        assert parse_selector(str(selector)).matches(have) is reference_matches(obj, have)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10) | keys | values,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["matchLabels", "matchExpressions", "key", "operator", "values",
                         "In", "Exists"]) | st.text(max_size=6), inner, max_size=3),
    max_leaves=15,
)


@fuzz()
@given(json_values | structured)
def test_any_object_is_a_selector_or_an_invalid_object_naming_the_field(
        tally: Tally, obj: Any) -> None:
    with tally.example(INTERFACE):
        try:
            selector = selector_from_label_selector(obj, "spec.nodeSelector")
        except InvalidObject as exc:
            assert exc.code == 422
            assert exc.field is not None and exc.field.startswith("spec.nodeSelector")
            return
        _round_trips(selector)
