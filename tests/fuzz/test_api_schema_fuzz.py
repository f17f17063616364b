"""The REST API against its own /openapi.json.

A real cloudcore serves the document; schemathesis reads it over HTTPS (trusting the
cloud's CA) and generates requests for every operation: valid ones (positive mode, with
object names lined up with their paths so that writes reach the store and later reads
find something) and ones that break the document on purpose (negative mode).  What a
client depends on: no request gets a 5xx, every answer is one the document declares,
with a body that matches its schema, and a request the document forbids is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode, Response
from schemathesis.checks import CheckFunction
from schemathesis.core.result import Err
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fuzz.budget import Tally, fuzz, scaled
from tests.harness import Cloud

pytestmark = [pytest.mark.system, pytest.mark.slow]

INTERFACE = "cloudcore REST API (/openapi.json)"
PER_OPERATION = scaled(75)
"""Examples per operation and generation mode (4 by default: about 700 requests)."""

# Names the positive cases reuse, so that one case's PUT is another's GET, DELETE or
# status write; the rest keep the name schemathesis made up.
NAMES = ("fuzz-a", "fuzz-b")

COMMON_CHECKS: list[CheckFunction] = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
CHECKS = {
    GenerationMode.POSITIVE: COMMON_CHECKS,
    GenerationMode.NEGATIVE: [*COMMON_CHECKS, negative_data_rejection],
}


def _without_watch(case: Case[Any]) -> Case[Any]:
    # ?watch=true answers with a stream that only ends when the server does; the watch
    # endpoint has its own tests (tests/integration/api/test_api_watch.py).
    if case.query:
        case.query.pop("watch", None)
    return case


def _line_up(case: Case[Any], reuse: str | None) -> Case[Any]:
    """A positive case whose body names the object its path names (else it is only ever
    a 400 'does not match the path')."""
    params = case.path_parameters
    if params is None:
        return case
    if reuse is not None and "name" in params:
        params["name"] = reuse
        if "namespace" in params:
            params["namespace"] = "default"
    body = case.body
    meta = body.get("metadata") if isinstance(body, dict) else None
    if isinstance(meta, dict):
        if "name" in params:
            meta["name"] = params["name"]
        if "namespace" in params:
            meta["namespace"] = params["namespace"]
        elif "name" in params or case.method.upper() == "POST":
            meta.pop("namespace", None)  # a cluster-scoped kind takes none
    return case


def _strategy(operation: Any, mode: GenerationMode) -> st.SearchStrategy[Case[Any]]:
    cases: st.SearchStrategy[Case[Any]] = operation.as_strategy(generation_mode=mode)
    cases = cases.map(_without_watch)
    if mode is GenerationMode.POSITIVE:
        cases = cases.flatmap(lambda case: st.sampled_from((None, *NAMES)).map(
            lambda reuse: _line_up(case, reuse)))
    return cases


def _takes_input(operation: Any) -> bool:
    """Whether a negative case can exist (GET /healthz has nothing to get wrong)."""
    return bool(operation.path_parameters or operation.query or operation.body)


def _run_operation(operation: Any, mode: GenerationMode,
                   send: Callable[[Case[Any]], Response],
                   failures: dict[str, str]) -> tuple[int, int]:
    """Run one operation's budget; returns (requests sent, requests that failed)."""
    tried, failed = 0, 0
    label = f"{operation.label} [{mode.value}]"

    @fuzz(PER_OPERATION, io=True,
          suppress=[HealthCheck.filter_too_much, HealthCheck.large_base_example])
    @given(case=_strategy(operation, mode))
    def run(case: Case[Any]) -> None:
        nonlocal tried, failed
        tried += 1
        response = send(case)
        try:
            case.validate_response(response, checks=CHECKS[mode])
        except FailureGroup as exc:  # every operation runs; its first failure is shown
            failed += 1
            failures.setdefault(label, str(exc)[:4000])

    run()
    return tried, failed


def test_every_operation_answers_as_its_schema_says(
        cloud_factory: Callable[..., Cloud], tmp_path: Path, tally: Tally) -> None:
    cloud = cloud_factory().start()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(cloud.ca_pem())
    # The admin's token through the document's own security scheme, so that negative
    # cases never "break" a header the test then overwrites.
    config = schemathesis.Config.from_dict(
        {"auth": {"openapi": {"bearerAuth": {"bearer": cloud.admin_token()}}}})
    schema = schemathesis.openapi.from_url(f"{cloud.url}/openapi.json", config=config,
                                           verify=str(ca_file), timeout=10)
    session = requests.Session()

    def send(case: Case[Any]) -> Response:
        return case.call(base_url=cloud.url, session=session, timeout=10,
                         verify=str(ca_file))

    failures: dict[str, str] = {}
    tried, failed, operations = 0, 0, 0
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()  # the document itself is broken
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and not _takes_input(operation):
                continue
            sent, broke = _run_operation(operation, mode, send, failures)
            tried, failed = tried + sent, failed + broke
    session.close()
    tally.add(INTERFACE, tried, failed)

    assert operations > 50, "the document lists every kind's operations"
    assert not failures, "\n\n".join(f"== {label}\n{text}" for label, text in failures.items())
    assert "unexpected error serving" not in cloud.log()
