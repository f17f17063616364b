"""Node scores: least-allocated (Kubernetes' default) spreads, binpack (Volcano) packs;
ties go to the smallest node name so sessions are repeatable."""

from __future__ import annotations

from cloudcore.scheduler import (
    JobView,
    NodeView,
    QueueView,
    Resources,
    SchedulerConfig,
    Scoring,
    schedule,
    score_node,
)

GI = 2**30
NODE = Resources(4000, 8 * GI)


def test_least_allocated_formula() -> None:
    # cpu: (4000 - 2000) * 100 // 4000 = 50; memory: (8 - 4) * 100 // 8 = 50.
    assert score_node(Scoring.LEAST_ALLOCATED, NODE, Resources(1000, 2 * GI),
                      Resources(1000, 2 * GI)) == 50
    # cpu 75, memory 87 (87.5 truncated as Kubernetes' integer maths does) → 162 // 2 = 81.
    assert score_node(Scoring.LEAST_ALLOCATED, NODE, Resources(), Resources(1000, GI)) == 81
    # A dimension that would overflow scores 0 for that dimension.
    assert score_node(Scoring.LEAST_ALLOCATED, NODE, Resources(3500, 0),
                      Resources(1000, 0)) == 50


def test_binpack_formula() -> None:
    # (2000/4000 + 4/8) / 2 * 100 = 50
    assert score_node(Scoring.BINPACK, NODE, Resources(1000, 2 * GI),
                      Resources(1000, 2 * GI)) == 50
    # (1000/4000 + 1/8) / 2 * 100 = 18.75
    assert score_node(Scoring.BINPACK, NODE, Resources(), Resources(1000, GI)) == 18.75
    # A resource that does not fit zeroes the node.
    assert score_node(Scoring.BINPACK, NODE, Resources(3500, 0), Resources(1000, 0)) == 0
    # A resource the node lacks and the replica does not ask for is not counted.
    assert score_node(Scoring.BINPACK, Resources(4000, 0), Resources(), Resources(2000, 0)) == 50


def _placements(scoring: Scoring) -> list[str]:
    nodes = [NodeView(name, NODE) for name in ("c", "a", "b")]
    job = JobView("ns/app", Resources(1000, GI), pending=(0, 1, 2, 3))
    result = schedule(nodes, [QueueView("default")], [job], SchedulerConfig(scoring=scoring))
    return [b.node for b in result.bindings]


def test_least_allocated_spreads_in_name_order() -> None:
    assert _placements(Scoring.LEAST_ALLOCATED) == ["a", "b", "c", "a"]


def test_binpack_fills_one_node_first() -> None:
    assert _placements(Scoring.BINPACK) == ["a", "a", "a", "a"]


def test_least_allocated_prefers_the_emptier_node() -> None:
    nodes = [NodeView("a", NODE), NodeView("b", Resources(8000, 8 * GI))]
    job = JobView("ns/app", Resources(1000, 0), pending=(0,))
    result = schedule(nodes, [QueueView("default")], [job])
    assert [b.node for b in result.bindings] == ["b"]  # cpu 87 vs 75, memory equal
