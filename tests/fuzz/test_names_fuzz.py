"""The naming rules /openapi.json states against the ones the server enforces.

Clients (and the API fuzzer) learn from the document which object names, namespaces,
label keys and values and user names exist; the server checks them in
protocol/resources.py and cloudcore/auth.py.  The two must agree on every string: a name
the document allows is accepted, and one it forbids is refused with a 422 naming the
field.  JSON Schema patterns match the whole string, so this also catches a Python check
whose ``$`` lets a trailing newline through.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudcore.api.openapi import (
    LABEL_KEY_SCHEMA,
    LABEL_VALUE_SCHEMA,
    NAME_SCHEMA,
    NAMESPACE_SCHEMA,
    USER_NAME_SCHEMA,
)
from cloudcore.auth import Role, TokenAuth
from protocol.errors import AlreadyExists, InvalidObject
from protocol.resources import (
    check_dns_subdomain,
    check_label_key,
    check_label_value,
    check_namespace,
)
from tests.fuzz.budget import Tally, fuzz, scaled

INTERFACE = "object, label and user names (schema vs server)"


def schema_allows(schema: dict[str, Any], value: str) -> bool:
    """JSON Schema's reading: the pattern is searched for (anchored here by ^ and $, with
    $ only at the very end) and maxLength counts characters."""
    if len(value) > schema.get("maxLength", len(value)):
        return False
    return re.fullmatch(schema["pattern"], value) is not None


def strings_near(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    """Valid strings, valid strings spoilt at one end, strings near the length limit, and
    anything at all."""
    valid = st.from_regex(schema["pattern"], fullmatch=True)
    spoilt = st.tuples(valid, st.sampled_from(["\n", " ", "\x00", "/", "_", "-", ".", "A",
                                               "\u0131", "\r\n"]), st.booleans()).map(
        lambda t: t[0] + t[1] if t[2] else t[1] + t[0])
    long = st.tuples(st.integers(55, 70) | st.integers(245, 330),
                     st.sampled_from(["a", "a.", "a-", "A"])).map(
        lambda t: (t[1] * t[0])[: t[0] - 1] + "z")
    return valid | spoilt | long | st.text(max_size=20)


def server_allows(check: Callable[[str, str], None], value: str) -> bool:
    try:
        check(value, "metadata.name")
    except InvalidObject as exc:
        assert exc.code == 422 and exc.field == "metadata.name"
        return False
    return True


def label_key_allowed(key: str) -> bool:
    # The document cannot bound the prefix's length (253) separately from the name's.
    prefix, slash, _ = key.rpartition("/")
    return schema_allows(LABEL_KEY_SCHEMA, key) and (not slash or len(prefix) <= 253)


CASES: dict[str, tuple[dict[str, Any], Callable[[str, str], None], Callable[[str], bool]]] = {
    "name": (NAME_SCHEMA, check_dns_subdomain, lambda v: schema_allows(NAME_SCHEMA, v)),
    "namespace": (NAMESPACE_SCHEMA, check_namespace,
                  lambda v: schema_allows(NAMESPACE_SCHEMA, v)),
    "label key": (LABEL_KEY_SCHEMA, check_label_key, label_key_allowed),
    "label value": (LABEL_VALUE_SCHEMA, check_label_value,
                    lambda v: schema_allows(LABEL_VALUE_SCHEMA, v)),
}


@pytest.mark.parametrize("what", sorted(CASES))
def test_the_server_accepts_exactly_the_names_the_document_allows(
        tally: Tally, what: str) -> None:
    schema, check, allowed = CASES[what]

    @fuzz()
    @given(strings_near(schema))
    def agree(value: str) -> None:
        with tally.example(INTERFACE):
            assert server_allows(check, value) is allowed(value), (what, value)

    agree()


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenAuth]:
    auth = TokenAuth.open(Path(tmp_path_factory.mktemp("users")) / "users.db")
    yield auth
    auth.close()


@fuzz(scaled(3))  # every accepted name is a durable write
@given(strings_near(USER_NAME_SCHEMA))
def test_user_names_are_accepted_exactly_as_the_document_says(
        tally: Tally, users: TokenAuth, name: str) -> None:
    with tally.example(INTERFACE):
        try:
            users.create(name, Role.VIEWER)
            accepted = True
        except AlreadyExists:
            accepted = True
        except InvalidObject as exc:
            assert exc.field == "name"
            accepted = False
        assert accepted is schema_allows(USER_NAME_SCHEMA, name), name
