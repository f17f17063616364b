"""Laws of the device twin algebra (protocol/twin.py) over generated histories.

tests/unit/protocol/test_twin_properties.py checks that every step keeps the twin
consistent (versions never go backwards, rejected requests change nothing, the cloud's
value stands right after it is applied).  These are the laws a device app and the
cloud rely on across steps: a retried request is harmless, each side only ever moves its
own counter, a later cloud update wins over whatever the edge set meanwhile, requests on
different properties do not interfere, and a request that carries the versions it read
is never a conflict.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from protocol.twin import (
    DesiredValue,
    TwinProperty,
    apply_desired_from_cloud,
    apply_edge_update,
    delta,
    twin_from_json,
    twin_to_json,
)
from protocol.twin_messages import TwinErrorCode, TwinUpdateRequest
from protocol.twin_values import TwinType
from tests.fuzz.budget import Tally, fuzz

INTERFACE = "twin algebra (protocol.twin)"
T0 = 1_700_000_000_000

Twin = dict[str, TwinProperty]

names = st.sampled_from(["temperature", "mode", "led", "x"])
values = st.sampled_from(["", "0", "1", "-7", "2.5", "1e3", "true", "false", "on", "NaN",
                          "x", "ünïcode", "a" * 300]) | st.text(max_size=8)
kinds = st.sampled_from(["int", "integer", "float", "string", "boolean", "deleted"])
sides = st.fixed_dictionaries({"value": values})
properties = st.none() | st.fixed_dictionaries({}, optional={
    "expected": sides, "actual": sides, "optional": st.booleans(),
    "metadata": st.fixed_dictionaries({"type": kinds}),
})


def requests(names: st.SearchStrategy[str] = names) -> st.SearchStrategy[TwinUpdateRequest]:
    """Update requests without versions (the common case: KubeEdge's mappers send none)."""
    return st.dictionaries(names, properties, min_size=1, max_size=3).map(
        lambda twin: TwinUpdateRequest(event_id="e", twin=twin))


specs = st.dictionaries(names, st.builds(
    DesiredValue, value=st.none() | values,
    value_type=st.none() | st.sampled_from([TwinType.INT, TwinType.FLOAT, TwinType.STRING,
                                             TwinType.BOOLEAN])), max_size=3)
histories = st.lists(requests() | specs, max_size=8)


def replay(history: list[Any], now: int = T0) -> Twin:
    twin: Twin = {}
    for step in history:
        now += 1
        if isinstance(step, TwinUpdateRequest):
            outcome = apply_edge_update(twin, step, now)
            if outcome.error is None:
                twin = outcome.twin
        else:
            twin = apply_desired_from_cloud(twin, step, now).twin
    return twin


def counters(twin: Twin, side: str) -> dict[str, tuple[int, int]]:
    return {name: (getattr(p.expected_version, side), getattr(p.actual_version, side))
            for name, p in twin.items()}


@fuzz()
@given(histories, requests())
def test_a_retried_update_changes_nothing_the_second_time(
        tally: Tally, history: list[Any], request: TwinUpdateRequest) -> None:
    twin = replay(history)
    with tally.example(INTERFACE):
        first = apply_edge_update(twin, request, T0 + 100)
        if first.error is not None:
            return
        again = apply_edge_update(first.twin, request, T0 + 200)
        assert again.error is None
        assert again.changed == frozenset() and again.twin == first.twin
        assert again.document_payload() is None  # nothing to tell the apps either


@fuzz()
@given(histories, specs)
def test_a_repeated_cloud_update_changes_nothing_the_second_time(
        tally: Tally, history: list[Any], spec: dict[str, DesiredValue]) -> None:
    twin = replay(history)
    with tally.example(INTERFACE):
        first = apply_desired_from_cloud(twin, spec, T0 + 100)
        again = apply_desired_from_cloud(first.twin, spec, T0 + 200)
        assert again.changed == frozenset() and again.twin == first.twin


@fuzz()
@given(histories, requests() | specs)
def test_each_side_moves_only_its_own_counters(
        tally: Tally, history: list[Any], step: Any) -> None:
    twin = replay(history)
    with tally.example(INTERFACE):
        if isinstance(step, TwinUpdateRequest):
            after = apply_edge_update(twin, step, T0 + 100).twin
            untouched = "cloud"
        else:
            after = apply_desired_from_cloud(twin, step, T0 + 100).twin
            untouched = "edge"
        before_counts, after_counts = counters(twin, untouched), counters(after, untouched)
        for name, count in after_counts.items():
            assert count == before_counts.get(name, (0, 0)), (name, untouched)


@fuzz()
@given(histories, specs.filter(bool), st.data())
def test_the_next_cloud_update_wins_over_a_desired_value_set_on_the_edge(
        tally: Tally, history: list[Any], spec: dict[str, DesiredValue],
        data: st.DataObject) -> None:
    twin = apply_desired_from_cloud(replay(history), spec, T0 + 100).twin
    name = data.draw(st.sampled_from(sorted(spec)))
    local = data.draw(values)
    with tally.example(INTERFACE):
        edge = apply_edge_update(
            twin, TwinUpdateRequest(twin={name: {"expected": {"value": local}}}), T0 + 200)
        if edge.error is not None:
            return  # e.g. the value does not fit the property's type
        overridden = edge.twin[name]
        cloud = apply_desired_from_cloud(edge.twin, spec, T0 + 300).twin[name]
        want = spec[name].value
        assert (cloud.expected.value if cloud.expected else None) == want
        moved = (overridden.expected.value if overridden.expected else None) != want
        assert cloud.expected_version.cloud == overridden.expected_version.cloud + moved
        assert cloud.expected_version.edge == overridden.expected_version.edge
        d = delta(apply_desired_from_cloud(edge.twin, spec, T0 + 300).twin)
        if name in d:
            assert d[name] == want


@fuzz()
@given(histories, requests(st.sampled_from(["a1", "a2"])),
       requests(st.sampled_from(["b1", "b2"])))
def test_updates_of_different_properties_commute(
        tally: Tally, history: list[Any], first: TwinUpdateRequest,
        second: TwinUpdateRequest) -> None:
    twin = replay(history)
    now = T0 + 100

    def in_order(*steps: TwinUpdateRequest) -> tuple[Twin, list[bool]]:
        current, accepted = twin, []
        for step in steps:
            outcome = apply_edge_update(current, step, now)
            accepted.append(outcome.error is None)
            current = outcome.twin
        return current, accepted

    with tally.example(INTERFACE):
        ab, accepted_ab = in_order(first, second)
        ba, accepted_ba = in_order(second, first)
        assert accepted_ab == accepted_ba[::-1]
        assert ab == ba
        if all(accepted_ab):  # and one request holding both does the same
            both = TwinUpdateRequest(event_id="e", twin={**first.twin, **second.twin})
            together = apply_edge_update(twin, both, now)
            assert together.error is None and together.twin == ab


@fuzz()
@given(histories, names, st.sampled_from(["", "0", "1", "2.5", "true", "x"]), st.booleans())
def test_a_request_built_on_the_versions_it_read_is_never_a_conflict(
        tally: Tally, history: list[Any], name: str, value: str, stale: bool) -> None:
    # (values every type and the charset check accept: only the version can refuse it)
    twin = replay(history)
    stored = twin.get(name, TwinProperty())
    version = {"cloud": stored.actual_version.cloud, "edge": stored.actual_version.edge}
    behind = stale and (version["cloud"] > 0 or version["edge"] > 0)
    if behind:  # one change older than what is stored
        side = "cloud" if version["cloud"] > 0 else "edge"
        version[side] -= 1
    request = TwinUpdateRequest(
        twin={name: {"actual": {"value": value}, "actual_version": version}})
    with tally.example(INTERFACE):
        outcome = apply_edge_update(twin, request, T0 + 100)
        refused_as_conflict = (outcome.error is not None
                               and outcome.error.code == TwinErrorCode.CONFLICT)
        assert refused_as_conflict is behind


@fuzz()
@given(histories)
def test_every_reachable_twin_survives_storage(tally: Tally, history: list[Any]) -> None:
    twin = replay(history)
    with tally.example(INTERFACE):
        assert twin_from_json(twin_to_json(twin)) == twin
