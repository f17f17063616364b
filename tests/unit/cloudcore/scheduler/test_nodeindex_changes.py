"""The session's node index keeps answering like the plain definition - the best-scoring
node that fits, ties by name - whatever sequence of changes it goes through: placements
(which it re-scores lazily under least-allocated), take-backs, evictions that release
and nominations that pipeline, across several selectors and request sizes at once."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudcore.scheduler import NodeView, Resources, Scoring, score_node
from cloudcore.scheduler.filtering import selector_matches
from cloudcore.scheduler.nodeindex import NodeIndex
from cloudcore.scheduler.scoring import SCORERS

GI = 2**30
SHAPES = [Resources(2_000, 4 * GI), Resources(4_000, 8 * GI), Resources(8_000, 16 * GI)]
REQUESTS = [Resources(500, GI // 2), Resources(1_000, GI), Resources(250, 3 * GI),
            Resources(2_000, 0)]
SELECTORS: list[dict[str, str]] = [{}, {"zone": "a"}, {"zone": "b", "arch": "arm"}]
CHANGE = st.tuples(
    st.sampled_from(["place", "take back", "release", "unrelease", "pipeline", "unpipeline"]),
    st.integers(0, 11), st.sampled_from(REQUESTS))


@st.composite
def clusters(draw: st.DrawFn) -> list[NodeView]:
    return [NodeView(f"n{i:02d}", draw(st.sampled_from(SHAPES)),
                     labels={"zone": draw(st.sampled_from("ab")),
                             "arch": draw(st.sampled_from(["arm", "x86"]))},
                     ready=draw(st.integers(0, 5)) != 0)
            for i in range(draw(st.integers(1, 12)))]


def plain_best(index: NodeIndex, nodes: list[NodeView], scoring: Scoring,
               selector: dict[str, str], request: Resources) -> str | None:
    best: tuple[float, str] | None = None
    for view in nodes:
        state = index.nodes[view.name]
        if not view.ready or not selector_matches(selector, view.labels):
            continue
        if not state.future_fits(request):
            continue
        key = (-score_node(scoring, view.allocatable, state.used, request), view.name)
        best = key if best is None or key < best else best
    return None if best is None else best[1]


@settings(max_examples=200, deadline=None)
@given(clusters(), st.sampled_from(list(Scoring)), st.lists(CHANGE, max_size=60), st.data())
def test_the_best_node_is_right_after_any_changes(nodes: list[NodeView], scoring: Scoring,
                                                  changes: list[tuple[str, int, Resources]],
                                                  data: st.DataObject) -> None:
    index = NodeIndex(nodes, SCORERS[scoring])
    held: dict[str, list[tuple[str, Resources]]] = {v.name: [] for v in nodes}
    for what, which, amount in changes:
        name = nodes[which % len(nodes)].name
        stack = held[name]
        # Undo only what was done (as a statement discard or an eviction would).
        if what == "place":
            index.change(name, used=amount)
            stack.append(("used", amount))
        elif what == "release" and ("used", amount) in stack:
            index.change(name, releasing=amount)
            stack.append(("releasing", amount))
        elif what == "pipeline":
            index.change(name, pipelined=amount)
            stack.append(("pipelined", amount))
        elif stack and what in ("take back", "unrelease", "unpipeline"):
            kind, last = stack.pop()
            index.change(name, **{kind: last * -1})
        # Ask after every change, for a drawn part of the selectors and sizes: the
        # heaps asked about hold entries of every age when later changes come.
        for selector in SELECTORS:
            for request in REQUESTS:
                if data.draw(st.integers(0, 3)) == 0:
                    continue
                assert index.best(selector, request) == plain_best(
                    index, nodes, scoring, selector, request), (what, name, amount)
