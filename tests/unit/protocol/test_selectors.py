"""Label selectors: the ``?labelSelector=`` / ``efctl get -l`` text and the structured
``{matchLabels, matchExpressions}`` form, with Kubernetes semantics."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import BadRequest, InvalidObject
from protocol.selectors import (
    Operator,
    Requirement,
    Selector,
    parse_selector,
    selector_from_label_selector,
)

WEB_PROD = {"app": "web", "env": "prod"}
WEB_DEV = {"app": "web", "env": "dev", "example.com/tier": "front"}
DB = {"app": "db"}


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("", WEB_PROD, True),
        ("   ", {}, True),
        ("", None, True),
        ("app=web", WEB_PROD, True),
        ("app==web", WEB_PROD, True),
        ("app = web", WEB_PROD, True),
        ("app=web", DB, False),
        ("app=web", None, False),
        ("app!=web", DB, True),
        ("app!=web", WEB_PROD, False),
        ("env!=prod", DB, True),  # != matches objects that lack the key
        ("env in (prod,dev)", WEB_DEV, True),
        ("env in (prod, staging)", WEB_DEV, False),
        ("env in (prod)", DB, False),
        ("env notin (prod)", WEB_DEV, True),
        ("env notin (prod)", WEB_PROD, False),
        ("env notin (prod)", DB, True),  # notin matches objects that lack the key
        ("env", WEB_PROD, True),
        ("env", DB, False),
        ("!env", DB, True),
        ("!env", WEB_PROD, False),
        ("app=web,env=prod", WEB_PROD, True),
        ("app=web,env=prod", WEB_DEV, False),
        ("app=web, !env", WEB_PROD, False),
        ("example.com/tier=front", WEB_DEV, True),
        ("example.com/tier", WEB_PROD, False),
        ("app in(web,db),env notin(dev)", DB, True),
        ("app=", {"app": ""}, True),  # an empty value is a value
        ("app=", DB, False),
        ("app in ()", {"app": ""}, True),
        ("app in (db,)", {"app": ""}, True),
        ("app in (db,)", DB, True),
        ("in=x", {"in": "x"}, True),  # 'in' is only a keyword where an operator goes
        ("app in (in,notin)", {"app": "notin"}, True),
    ],
)
def test_matches(text: str, labels: dict[str, str] | None, expected: bool) -> None:
    assert parse_selector(text).matches(labels) is expected


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("", ""),
        ("b=2 , a==1", "a=1,b=2"),
        ("x notin ( q , p ), !y, z", "x notin (p,q),!y,z"),
        ("a in (,x)", "a in (,x)"),
        ("a in ()", "a in ()"),
        ("a=1,a=1", "a=1"),
    ],
)
def test_canonical_text(text: str, canonical: str) -> None:
    selector = parse_selector(text)
    assert str(selector) == canonical
    assert parse_selector(canonical) == selector


def test_empty_selector() -> None:
    assert parse_selector("").empty
    assert parse_selector(" \t").empty
    assert not parse_selector("a").empty


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("env in (a, b", "labelSelector: expected ')' at 12"),
        ("env in (a, b c)", "labelSelector: expected ',' or ')' at 13"),
        ("env in a", "labelSelector: expected '(' after 'in' at 7"),
        ("a,", "labelSelector: expected a label key at 2"),
        (",a", "labelSelector: expected a label key at 0"),
        ("a,,b", "labelSelector: expected a label key at 2"),
        ("a b", "at 2"),
        ("!a=b", "labelSelector: expected ',' or end of selector at 2"),
        ("!", "labelSelector: expected a label key at 1"),
        ("=b", "labelSelector: expected a label key at 0"),
        ("a=(b)", "labelSelector: expected a value at 2"),
        ("a=b=c", "at 3"),
        ("a=b)", "at 3"),
        ("x>1", "operator '>' is not supported at 1"),
        ("x<1", "operator '<' is not supported at 1"),
        ("Bad_/key", "invalid label key 'Bad_/key' at 0"),
        ("a" * 64, "invalid label key"),
        ("app=-web", "invalid label value '-web' at 4"),
        ("app in (ok, b@d)", "invalid label value 'b@d' at 12"),
        ("app=" + "v" * 64, "invalid label value"),
    ],
)
def test_bad_text_is_rejected_with_position(text: str, message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_selector(text)
    assert message in caught.value.message
    assert caught.value.code == 400


def test_selector_from_label_selector() -> None:
    selector = selector_from_label_selector(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "staging"]},
                {"key": "tier", "operator": "NotIn", "values": ["db"]},
                {"key": "zone", "operator": "Exists"},
                {"key": "retired", "operator": "DoesNotExist", "values": []},
            ],
        },
        "spec.nodeSelector",
    )
    assert selector == parse_selector(
        "app=web,env in (prod,staging),tier notin (db),zone,!retired"
    )
    assert selector.matches({"app": "web", "env": "prod", "zone": "a"})
    assert not selector.matches({"app": "web", "env": "prod", "zone": "a", "retired": "y"})
    assert not selector.matches({"app": "web", "env": "prod"})


def test_empty_label_selector_selects_everything() -> None:
    selector = selector_from_label_selector({}, "spec.selector")
    assert selector.empty
    assert selector.matches({"anything": "x"})
    assert selector_from_label_selector({"matchLabels": None}, "s").empty


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"matchLabel": {"a": "b"}}, "sel.matchLabel"),
        ({"matchLabels": ["a"]}, "sel.matchLabels"),
        ({"matchLabels": {"a": 1}}, "sel.matchLabels.a"),
        ({"matchLabels": {"bad key": "b"}}, "sel.matchLabels.bad key"),
        ({"matchLabels": {"a": "-b"}}, "sel.matchLabels.a"),
        ({"matchExpressions": {"key": "a"}}, "sel.matchExpressions"),
        (
            {"matchExpressions": [{"key": "a", "operator": "Exists"},
                                  {"key": "b", "operator": "Equals", "values": ["x"]}]},
            "sel.matchExpressions[1].operator",
        ),
        ({"matchExpressions": [{"key": "a", "operator": "in", "values": ["x"]}]},
         "sel.matchExpressions[0].operator"),
        ({"matchExpressions": [{"operator": "Exists"}]}, "sel.matchExpressions[0].key"),
        ({"matchExpressions": [{"key": "a"}]}, "sel.matchExpressions[0].operator"),
        ({"matchExpressions": [{"key": "a", "operator": "In"}]},
         "sel.matchExpressions[0].values"),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
         "sel.matchExpressions[0].values"),
        ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
         "sel.matchExpressions[0].values"),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["x", 2]}]},
         "sel.matchExpressions[0].values[1]"),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": "x"}]},
         "sel.matchExpressions[0].values"),
        ({"matchExpressions": [{"key": "a", "operator": "Exists", "value": "x"}]},
         "sel.matchExpressions[0].value"),
        ({"matchExpressions": ["a"]}, "sel.matchExpressions[0]"),
    ],
)
def test_bad_label_selector_names_the_field(obj: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidObject) as caught:
        selector_from_label_selector(obj, "sel")
    assert caught.value.field == field


def test_requirement_rejects_inconsistent_values() -> None:
    with pytest.raises(ValueError):
        Requirement("a", Operator.EQUALS, frozenset({"x", "y"}))
    with pytest.raises(ValueError):
        Requirement("a", Operator.IN, frozenset())
    with pytest.raises(ValueError):
        Requirement("a", Operator.EXISTS, frozenset({"x"}))


# --- properties ------------------------------------------------------------------------
# A generated requirement is (operator, key, values) plus how to spell it; the reference
# evaluator below works from that tuple alone, independently of the module's classes.

KEYS = st.sampled_from(["app", "env", "example.com/tier", "a.b-c_d", "x"])
VALUES = st.sampled_from(["", "a", "b", "v1", "x.y-z"])
SPACE = st.sampled_from(["", " ", "  ", "\t"])

Spec = tuple[str, str, list[str]]


@st.composite
def requirement_texts(draw: st.DrawFn) -> tuple[Spec, str]:
    op = draw(st.sampled_from(["=", "!=", "in", "notin", "exists", "!"]))
    key = draw(KEYS)
    s1, s2, s3 = draw(SPACE), draw(SPACE), draw(SPACE)
    if op in ("=", "!="):
        value = draw(VALUES)
        spelled = "==" if op == "=" and draw(st.booleans()) else op
        return (op, key, [value]), f"{s1}{key}{s2}{spelled}{s3}{value}{draw(SPACE)}"
    if op in ("in", "notin"):
        values = draw(st.lists(VALUES, min_size=1, max_size=4))
        items = f"{draw(SPACE)},".join(values)
        return (op, key, values), f"{s1}{key} {s2}{op}{s3}({items})"
    if op == "!":
        return (op, key, []), f"{s1}!{s2}{key}{s3}"
    return (op, key, []), f"{s1}{key}{s2}"


@st.composite
def selector_texts(draw: st.DrawFn) -> tuple[list[Spec], str]:
    parts = draw(st.lists(requirement_texts(), max_size=5))
    return [spec for spec, _ in parts], ",".join(text for _, text in parts)


def reference_matches(specs: list[Spec], labels: Mapping[str, str]) -> bool:
    for op, key, values in specs:
        if op == "exists":
            ok = key in labels
        elif op == "!":
            ok = key not in labels
        elif op in ("=", "in"):
            ok = key in labels and labels[key] in values
        else:  # "!=" and "notin" are also true when the key is missing
            ok = key not in labels or labels[key] not in values
        if not ok:
            return False
    return True


@given(selector_texts())
def test_canonical_text_round_trips(generated: tuple[list[Spec], str]) -> None:
    _, text = generated
    selector = parse_selector(text)
    again = parse_selector(str(selector))
    assert again == selector
    assert str(again) == str(selector)


@given(st.lists(requirement_texts(), max_size=5))
def test_constructed_selector_round_trips(parts: list[tuple[Spec, str]]) -> None:
    names = {"=": Operator.EQUALS, "!=": Operator.NOT_EQUALS, "in": Operator.IN,
             "notin": Operator.NOT_IN, "exists": Operator.EXISTS, "!": Operator.NOT_EXISTS}
    selector = Selector.of(
        [Requirement(key, names[op], frozenset(values)) for (op, key, values), _ in parts]
    )
    assert parse_selector(str(selector)) == selector


@given(selector_texts(), st.dictionaries(KEYS, VALUES, max_size=5))
def test_matches_agrees_with_reference(
    generated: tuple[list[Spec], str], labels: dict[str, str]
) -> None:
    specs, text = generated
    assert parse_selector(text).matches(labels) is reference_matches(specs, labels)
