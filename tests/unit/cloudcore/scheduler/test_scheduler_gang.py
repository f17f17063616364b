"""Gang scheduling: an App with minAvailable is placed all or nothing (reference §5.2,
§5.4 gang plugin)."""

from __future__ import annotations

from cloudcore.scheduler import (
    BoundReplica,
    JobView,
    NodeView,
    QueueView,
    Resources,
    schedule,
)

GI = 2**30
ONE = Resources(1_000, GI)
DEFAULT = [QueueView("default")]


def nodes(count: int, cpu: int) -> list[NodeView]:
    return [NodeView(f"n{i}", Resources(cpu * 1000, 64 * GI)) for i in range(count)]


def test_a_gang_that_does_not_fit_gets_nothing_and_says_why() -> None:
    gang = JobView("ns/train", ONE, min_available=5, pending=tuple(range(5)))
    result = schedule(nodes(1, 4), DEFAULT, [gang])
    assert result.bindings == () and result.nominations == ()
    assert result.unschedulable == {"ns/train": (
        "only 4 of the 5 replicas minAvailable asks for can be placed: "
        "0/1 nodes: 1 insufficient cpu")}


def test_a_rolled_back_gang_leaves_its_room_to_others() -> None:
    gang = JobView("ns/train", ONE, min_available=5, pending=tuple(range(5)),
                   created="2025-01-01T00:00:00Z")
    small = JobView("ns/web", ONE, pending=tuple(range(4)), created="2025-01-01T00:01:00Z")
    result = schedule(nodes(1, 4), DEFAULT, [gang, small])
    assert [(b.job, b.index) for b in result.bindings] == [("ns/web", i) for i in range(4)]
    assert "ns/train" in result.unschedulable and "ns/web" not in result.unschedulable


def test_a_gang_that_fits_is_placed_whole_across_nodes() -> None:
    gang = JobView("ns/train", ONE, min_available=6, pending=tuple(range(6)))
    result = schedule(nodes(3, 2), DEFAULT, [gang])
    assert sorted(b.index for b in result.bindings) == list(range(6))
    assert sorted(b.node for b in result.bindings) == ["n0", "n0", "n1", "n1", "n2", "n2"]
    assert result.unschedulable == {}


def test_replicas_beyond_the_minimum_are_placed_as_room_allows() -> None:
    gang = JobView("ns/train", ONE, min_available=3, pending=tuple(range(6)))
    result = schedule(nodes(1, 4), DEFAULT, [gang])
    assert [b.index for b in result.bindings] == [0, 1, 2, 3]
    assert result.unschedulable == {"ns/train": "0/1 nodes: 1 insufficient cpu"}


def test_running_replicas_count_towards_the_gang() -> None:
    bound = tuple(BoundReplica(i, "n0") for i in range(3))
    gang = JobView("ns/train", ONE, min_available=5, bound=bound, pending=(3, 4))
    # Room for one more only: the gang cannot be completed, nothing is added.
    assert schedule(nodes(1, 4), DEFAULT, [gang]).bindings == ()
    # Room for two: both are bound.
    result = schedule(nodes(1, 5), DEFAULT, [gang])
    assert [b.index for b in result.bindings] == [3, 4]


def test_after_reaching_their_minimum_gangs_take_turns() -> None:
    x = JobView("ns/x", ONE, min_available=2, pending=tuple(range(4)),
                created="2025-01-01T00:00:00Z")
    y = JobView("ns/y", ONE, min_available=2, pending=tuple(range(4)),
                created="2025-01-01T00:00:01Z")
    result = schedule(nodes(1, 8), DEFAULT, [x, y])
    # Whole gangs first (not-ready jobs go before ready ones), then one replica per turn.
    assert [b.job[-1] for b in result.bindings] == ["x", "x", "y", "y", "x", "y", "x", "y"]


def test_a_gang_is_all_or_nothing_against_its_queue_share_too() -> None:
    # §5.8(b) numbers: qa deserves ⟨9 CPU, 52 GiB⟩, so at most 6 of its ⟨1, 8 GiB⟩ tasks.
    cluster = [NodeView("group-1", Resources(18_000, 72 * GI))]
    qa = JobView("ns/a", Resources(1_000, 8 * GI), queue="qa", min_available=7,
                 pending=tuple(range(10)))
    qb = JobView("ns/b", Resources(3_000, GI), queue="qb", pending=tuple(range(20)))
    result = schedule(cluster, [QueueView("qa"), QueueView("qb")], [qa, qb])
    assert {b.job for b in result.bindings} == {"ns/b"}
    assert result.unschedulable["ns/a"].startswith(
        "only 6 of the 7 replicas minAvailable asks for can be placed: queue qa has no room "
        "within its deserved share")


def test_a_gang_larger_than_its_replicas_can_ever_be_is_reported() -> None:
    # Two of five replicas failed for good (restartPolicy Never): a gang of 4 is impossible.
    gang = JobView("ns/train", ONE, min_available=4, pending=(0, 1, 2))
    result = schedule(nodes(1, 8), DEFAULT, [gang])
    assert result.bindings == ()
    assert result.unschedulable == {"ns/train": "minAvailable is 4 but only 3 replicas can run"}


def test_a_gang_that_needs_stopping_replicas_waits_as_a_whole() -> None:
    # Half the node is free, half is held by replicas that were evicted and are stopping.
    stopping = JobView("ns/old", ONE, bound=(BoundReplica(0, "n0", releasing=True),
                                             BoundReplica(1, "n0", releasing=True)))
    gang = JobView("ns/train", ONE, min_available=4, pending=tuple(range(4)))
    result = schedule(nodes(1, 4), DEFAULT, [stopping, gang])
    # Two would fit now, but the gang only starts together: all four are nominated.
    assert result.bindings == ()
    assert [(n.job, n.index) for n in result.nominations] == [("ns/train", i) for i in range(4)]
