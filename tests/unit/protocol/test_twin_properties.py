"""Properties of the twin parsers and algebra over generated input."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.twin import (
    DesiredValue,
    TwinProperty,
    apply_desired_from_cloud,
    apply_edge_update,
    delta,
    pending_reports,
    sent_marker,
)
from protocol.twin_messages import (
    BaseRequest,
    StateUpdateRequest,
    TwinError,
    TwinUpdateRequest,
    parse_get_request,
    parse_state_update,
    parse_update_request,
)
from protocol.twin_values import TwinType, values_equal

T0 = 1_700_000_000_000

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
field_names = st.sampled_from(["event_id", "timestamp", "twin", "Twin", "state", "STATE",
                               "actual", "expected", "value", "metadata", "type", "optional",
                               "actual_version", "cloud", "edge", "x"])
# JSON shaped like the requests, so the generator reaches past the first type check.
request_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6)
    | st.sampled_from(["int", "float", "boolean", "deleted", "online", "1", "1.5", "true"]),
    lambda children: st.dictionaries(field_names | st.text(max_size=4), children, max_size=4),
    max_leaves=25,
)


def _check_parse(payload: bytes) -> None:
    for parse, kind in ((parse_update_request, TwinUpdateRequest),
                        (parse_get_request, BaseRequest),
                        (parse_state_update, StateUpdateRequest)):
        out = parse(payload, 4096)
        assert isinstance(out, TwinError | kind)
        if isinstance(out, TwinError):
            assert out.code in (400, 413)
            json.loads(out.to_result(T0).to_json())  # the answer can always be sent


@given(st.binary(max_size=300))
def test_random_bytes_never_raise(payload: bytes) -> None:
    _check_parse(payload)


@given(json_values)
def test_random_json_never_raises(value: Any) -> None:
    _check_parse(json.dumps(value).encode())


@settings(max_examples=300)
@given(request_like)
def test_request_shaped_json_never_raises(value: Any) -> None:
    _check_parse(json.dumps(value).encode())
    if isinstance(value, dict):
        wrapped = json.dumps({"event_id": "e", "twin": {"t": value}}).encode()
        _check_parse(wrapped)
        request = parse_update_request(wrapped)
        if isinstance(request, TwinUpdateRequest):  # and applying it never raises either
            apply_edge_update({}, request, T0).result.to_json()


# --- the algebra -----------------------------------------------------------------------

names = st.sampled_from(["a", "b", "c"])
kinds = st.sampled_from(["int", "float", "string", "boolean", "deleted", ""])
values = st.sampled_from(["", "0", "1", "01", "1.0", "2.5", "-3", "true", "false", "x", "NaN"])
side_values = st.none() | st.fixed_dictionaries({"value": values})
edge_props = st.none() | st.fixed_dictionaries({}, optional={
    "expected": side_values.filter(lambda v: v is not None),
    "actual": side_values.filter(lambda v: v is not None),
    "optional": st.booleans(),
    "metadata": st.fixed_dictionaries({"type": kinds}),
})
edge_requests = st.dictionaries(names, edge_props, max_size=3).map(
    lambda twin: TwinUpdateRequest(event_id="e", twin=twin))
cloud_specs = st.dictionaries(
    names,
    st.builds(DesiredValue, value=st.none() | values,
              value_type=st.none() | st.sampled_from([TwinType.INT, TwinType.FLOAT,
                                                      TwinType.STRING])),
    max_size=3,
)
steps = st.lists(st.one_of(edge_requests, cloud_specs), min_size=1, max_size=12)


def _versions(prop: TwinProperty) -> tuple[int, int, int, int]:
    return (prop.expected_version.cloud, prop.expected_version.edge,
            prop.actual_version.cloud, prop.actual_version.edge)


def _check_delta(twin: dict[str, TwinProperty]) -> None:
    d = delta(twin)
    for name, prop in twin.items():
        wants = (not prop.deleted and prop.expected is not None and prop.expected.value != "")
        if not wants:
            assert name not in d
            continue
        assert prop.expected is not None
        differs = prop.actual is None or not values_equal(
            prop.expected.value, prop.actual.value, prop.value_type)
        assert (name in d) is differs
        if differs:
            assert d[name] == prop.expected.value


@settings(max_examples=300)
@given(steps)
def test_sequences_of_updates_keep_the_twin_consistent(sequence: list[Any]) -> None:
    twin: dict[str, TwinProperty] = {}
    now = T0
    for step in sequence:
        now += 1
        before = twin
        if isinstance(step, TwinUpdateRequest):
            outcome = apply_edge_update(twin, step, now)
            json.loads(outcome.result.to_json())
            if outcome.error is not None:
                assert outcome.twin == before and outcome.changed == frozenset()
                continue
            twin = outcome.twin
            assert outcome.changed == {n for n in twin if twin[n] != before.get(n)}
            # the delta is published exactly when something still differs
            assert (outcome.delta is not None) == bool(delta(twin))
            assert (outcome.document is not None) == bool(outcome.changed)
            for name in step.twin:  # every property asked about is answered
                assert name in outcome.result.twin  # type: ignore[union-attr]
        else:
            twin, changed = apply_desired_from_cloud(twin, step, now)
            assert changed == {n for n in twin if twin[n] != before.get(n)}
            for name, want in step.items():  # the cloud wins for desired values
                prop = twin[name]
                assert not prop.deleted and prop.in_spec and not prop.optional
                assert (prop.expected.value if prop.expected else None) == want.value
            for name in set(twin) - set(step):
                assert not twin[name].in_spec
        _check_delta(twin)
        for name, prop in before.items():  # versions never go backwards, names never vanish
            assert name in twin
            old, new = _versions(prop), _versions(twin[name])
            assert all(n >= o for n, o in zip(new, old, strict=True))
            visible = (prop.expected, prop.actual, prop.value_type)
            if (twin[name].expected, twin[name].actual, twin[name].value_type) != visible:
                assert new != old  # every visible change moves a version


@settings(max_examples=200)
@given(steps, steps)
def test_pending_reports_are_exactly_the_properties_changed_since_the_last_ack(
    first: list[Any], second: list[Any]
) -> None:
    twin: dict[str, TwinProperty] = {}

    def run(sequence: list[Any]) -> None:
        nonlocal twin
        for step in sequence:
            if isinstance(step, TwinUpdateRequest):
                outcome = apply_edge_update(twin, step, T0)
                if outcome.error is None:
                    twin = outcome.twin
            else:
                twin = apply_desired_from_cloud(twin, step, T0).twin

    run(first)
    acked = {name: sent_marker(prop) for name, prop in twin.items()}
    snapshot = dict(twin)
    run(second)
    pending = pending_reports(twin, acked)
    for name, prop in twin.items():
        value_changed = name not in snapshot or (
            (prop.expected, prop.actual, prop.value_type)
            != (snapshot[name].expected, snapshot[name].actual, snapshot[name].value_type))
        if value_changed and _versions(prop) != (0, 0, 0, 0):
            assert name in pending, name
        if name in pending:
            assert pending[name] == prop  # the latest state, not a history


@given(cloud_specs, st.sampled_from(["0", "1", "2.5", "x"]))
def test_a_cloud_desired_value_differing_from_the_report_yields_a_delta(
    spec: dict[str, DesiredValue], report: str
) -> None:
    twin: dict[str, TwinProperty] = {}
    twin = apply_desired_from_cloud(twin, {n: DesiredValue() for n in spec}, T0).twin
    for name in spec:
        outcome = apply_edge_update(
            twin, TwinUpdateRequest(twin={name: {"actual": {"value": report}}}), T0)
        if outcome.error is None:
            twin = outcome.twin
    twin = apply_desired_from_cloud(twin, spec, T0 + 1).twin
    d = delta(twin)
    for name, want in spec.items():
        actual = twin[name].actual
        if want.value and (actual is None or not values_equal(
                want.value, actual.value, twin[name].value_type)):
            assert d[name] == want.value
        else:
            assert name not in d


@settings(max_examples=300)
@given(steps, st.text(max_size=12))
def test_payloads_are_byte_identical_to_the_models_json(sequence: list[Any],
                                                       event_id: str) -> None:
    # edgecore publishes the *_payload bytes (no pydantic models on the hot path); apps
    # must see exactly what the models would have written.
    twin: dict[str, TwinProperty] = {}
    now = T0
    for step in sequence:
        now += 1
        if not isinstance(step, TwinUpdateRequest):
            twin = apply_desired_from_cloud(twin, step, now).twin
            continue
        request = step.model_copy(update={"event_id": event_id.encode(
            "utf-8", "replace").decode("utf-8", "replace")})
        outcome = apply_edge_update(twin, request, now)
        assert outcome.result_payload() == outcome.result.to_json()
        document = outcome.document
        assert outcome.document_payload() == (None if document is None else document.to_json())
        delta_message = outcome.delta
        assert outcome.delta_payload() == (
            None if delta_message is None else delta_message.to_json())
        if outcome.error is None:
            twin = outcome.twin
