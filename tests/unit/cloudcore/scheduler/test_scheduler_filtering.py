"""Node filtering: which nodes a replica fits on and the Kubernetes-style count of why
the others do not - the message an unschedulable App shows."""

from __future__ import annotations

from cloudcore.scheduler import (
    JobView,
    NodeView,
    QueueView,
    Resources,
    filter_nodes,
    schedule,
    unschedulable_message,
)

GI = 2**30


def test_fitting_nodes_and_reason_counts() -> None:
    nodes = [
        NodeView("a", Resources(4000, 8 * GI)),
        NodeView("b", Resources(1000, 8 * GI)),
        NodeView("c", Resources(1000, 1 * GI)),
        NodeView("d", Resources(4000, 8 * GI), ready=False),
        NodeView("e", Resources(4000, 8 * GI), unschedulable=True),
        NodeView("f", Resources(4000, 8 * GI), labels={"zone": "south"}),
    ]
    result = filter_nodes(nodes, Resources(2000, 2 * GI), {"zone": "north"},
                          used={"a": Resources(0, 0)})
    assert result.fitting == ()
    assert result.total == 6
    # a and b and c lack the label too: the selector is checked before resources.
    assert dict(result.reasons) == {"didn't match node selector": 4, "not ready": 1,
                                    "unschedulable": 1}
    result = filter_nodes(nodes, Resources(2000, 2 * GI), used={"a": Resources(1000, 0)})
    assert result.fitting == ("a", "f")
    # c is short of both cpu and memory and counts under both, as in Kubernetes.
    assert dict(result.reasons) == {"insufficient cpu": 2, "insufficient memory": 1,
                                    "not ready": 1, "unschedulable": 1}
    assert result.message() == ("2/6 nodes: 2 insufficient cpu, 1 insufficient memory, "
                                "1 not ready, 1 unschedulable")


def test_already_placed_replicas_use_up_allocatable() -> None:
    nodes = [NodeView("a", Resources(4000, 8 * GI))]
    assert filter_nodes(nodes, Resources(1000, GI), used={"a": Resources(3000, 7 * GI)}
                        ).fitting == ("a",)
    assert filter_nodes(nodes, Resources(1000, GI), used={"a": Resources(3001, 0)}
                        ).reasons == {"insufficient cpu": 1}


def test_message_in_the_issue_style() -> None:
    # The issue's example: "0/5 nodes: 3 insufficient cpu, 2 not ready".
    nodes = [NodeView(f"n{i}", Resources(500, GI)) for i in range(3)]
    nodes += [NodeView(f"down{i}", Resources(4000, GI), ready=False) for i in range(2)]
    result = filter_nodes(nodes, Resources(1000, 0))
    assert result.message() == "0/5 nodes: 3 insufficient cpu, 2 not ready"
    assert unschedulable_message(0, {}) == "0/0 nodes: there are no nodes"


def test_an_unschedulable_app_explains_itself_with_the_same_counts() -> None:
    nodes = [NodeView(f"n{i}", Resources(500, GI)) for i in range(3)]
    nodes += [NodeView(f"down{i}", Resources(4000, GI), ready=False) for i in range(2)]
    job = JobView("ns/app", Resources(1000, 0), pending=(0,))
    result = schedule(nodes, [QueueView("default")], [job])
    assert result.bindings == ()
    assert result.unschedulable == {"ns/app": "0/5 nodes: 3 insufficient cpu, 2 not ready"}


def test_node_selector_is_honoured_by_the_session() -> None:
    nodes = [NodeView("a", Resources(4000, GI), labels={"zone": "north"}),
             NodeView("b", Resources(4000, GI), labels={"zone": "south"})]
    job = JobView("ns/app", Resources(1000, 0), node_selector={"zone": "south"},
                  pending=(0, 1, 2, 3, 4))
    result = schedule(nodes, [QueueView("default")], [job])
    assert {b.node for b in result.bindings} == {"b"}
    assert len(result.bindings) == 4
    assert result.unschedulable == {
        "ns/app": "0/2 nodes: 1 didn't match node selector, 1 insufficient cpu"}
