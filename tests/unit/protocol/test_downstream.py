"""The per-node downstream queue: coalescing, acks, resends, resync — no sockets, no clock."""

from __future__ import annotations

from typing import Any

from protocol.downstream import DownstreamQueue, resync_diff
from protocol.envelope import ObjectRef, Op


def device(name: str, rv: int, value: str = "x") -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": str(rv)},
        "spec": {"nodeName": "edge-a", "properties": [{"name": "p", "desired": {"value": value}}]},
    }


def test_only_the_newest_version_of_an_object_is_sent() -> None:
    q = DownstreamQueue()
    for rv in range(1, 201):
        q.offer_upsert(device("d", rv))
    sent = q.due(now=0.0, ts=0)
    assert [e.rv for e in sent] == [200]
    assert sent[0].op is Op.UPSERT


def test_an_older_version_offered_after_a_newer_one_is_dropped() -> None:
    q = DownstreamQueue()
    assert q.offer_upsert(device("d", 5))
    assert not q.offer_upsert(device("d", 4))
    assert not q.offer_upsert(device("d", 5))
    assert [e.rv for e in q.due(0.0, 0)] == [5]


def test_a_newer_version_replaces_one_in_flight_and_the_stale_ack_does_not_clear_it() -> None:
    q = DownstreamQueue()
    q.offer_upsert(device("d", 1))
    (first,) = q.due(0.0, 0)
    q.offer_upsert(device("d", 2))
    (second,) = q.due(0.1, 0)
    assert second.rv == 2
    assert q.ack(first.id) is None  # superseded: nothing to clear
    assert len(q) == 1
    assert q.ack(second.id) is not None
    assert len(q) == 0


def test_a_delete_is_kept_and_outranks_queued_upserts() -> None:
    q = DownstreamQueue()
    q.offer_upsert(device("d", 3))
    ref = ObjectRef(kind="Device", namespace="default", name="d")
    assert q.offer_delete(ref, 4)
    (env,) = q.due(0.0, 0)
    assert env.op is Op.DELETE and env.rv == 4
    assert not q.offer_upsert(device("d", 3))


def test_unacked_envelopes_are_resent_after_the_ack_timeout_only() -> None:
    q = DownstreamQueue(ack_timeout=5.0)
    q.offer_upsert(device("d", 1))
    (env,) = q.due(0.0, 0)
    assert q.due(4.9, 0) == []
    assert q.next_deadline() == 5.0
    (again,) = q.due(5.0, 0)
    assert again.id == env.id and again.rv == 1  # same id: a late ack for either clears it
    assert q.resends == 1
    q.ack(env.id)
    assert q.due(100.0, 0) == [] and q.next_deadline() is None


def test_acked_versions_are_not_sent_again() -> None:
    q = DownstreamQueue()
    q.offer_upsert(device("d", 7))
    (env,) = q.due(0.0, 0)
    q.ack(env.id)
    assert not q.offer_upsert(device("d", 7))
    assert q.offer_upsert(device("d", 8))


def test_the_in_flight_window_bounds_unacked_sends() -> None:
    q = DownstreamQueue(window=3)
    for i in range(10):
        q.offer_upsert(device(f"d{i}", i + 1))
    first = q.due(0.0, 0)
    assert len(first) == 3
    assert q.due(0.1, 0) == []
    q.ack(first[0].id)
    assert [e.ref.name for e in q.due(0.2, 0) if e.ref] == ["d3"]


def test_sends_follow_the_order_of_offers() -> None:
    q = DownstreamQueue()
    q.offer_upsert(device("model-first", 1))
    q.offer_upsert(device("then-device", 2))
    assert [e.ref.name for e in q.due(0.0, 0) if e.ref] == ["model-first", "then-device"]


def test_restart_forgets_in_flight_and_takes_the_holdings_as_baseline() -> None:
    q = DownstreamQueue()
    q.offer_upsert(device("d", 3))
    q.due(0.0, 0)
    q.restart({"Device/default/d": 3})
    assert len(q) == 0
    assert not q.offer_upsert(device("d", 3))  # the edge said it holds rv 3
    assert q.offer_upsert(device("d", 4))


def test_resync_diff_is_exactly_the_difference() -> None:
    held = {"A/ns/a": 5, "A/ns/b": 3, "A/ns/gone": 2}
    desired = {"A/ns/a": 5, "A/ns/b": 4, "A/ns/new": 9}
    ups, dels = resync_diff(held, desired)
    assert ups == ["A/ns/b", "A/ns/new"]
    assert dels == ["A/ns/gone"]
    assert resync_diff(desired, desired) == ([], [])


def test_a_large_resync_drains_completely_within_the_window() -> None:
    q = DownstreamQueue(window=64)
    for i in range(5_000):
        q.offer_upsert(device(f"d{i}", i + 1))
    sent = q.due(0.0, 0)
    delivered: list[str] = []
    while sent:
        assert len(sent) <= 64
        for env in sent:
            q.ack(env.id)
            delivered.append(env.ref.name if env.ref else "")
        sent = q.due(0.0, 0)
    assert delivered == [f"d{i}" for i in range(5_000)] and len(q) == 0


def test_an_evicted_object_can_come_back_at_the_same_version() -> None:
    # A Device moved to another node and back, unchanged: the edge must get it again.
    q = DownstreamQueue()
    ref = ObjectRef(kind="Device", namespace="default", name="d")
    q.offer_upsert(device("d", 5))
    (up,) = q.due(0.0, 0)
    q.ack(up.id)
    assert q.offer_evict(ref, 9)
    (gone,) = q.due(0.0, 0)
    assert gone.op is Op.DELETE and gone.body == {"evict": True}
    q.ack(gone.id)
    assert q.offer_upsert(device("d", 5))
    assert [(e.op, e.rv) for e in q.due(0.0, 0)] == [(Op.UPSERT, 5)]


def test_coming_back_before_the_eviction_was_acked_replaces_it() -> None:
    q = DownstreamQueue()
    ref = ObjectRef(kind="Device", namespace="default", name="d")
    q.offer_upsert(device("d", 5))
    q.ack(q.due(0.0, 0)[0].id)
    q.offer_evict(ref, 9)
    (gone,) = q.due(0.0, 0)  # in flight, not yet acked
    assert q.offer_upsert(device("d", 5))
    (back,) = q.due(0.0, 0)
    assert (back.op, back.rv) == (Op.UPSERT, 5)
    q.ack(gone.id)  # the stale eviction's ack does not cancel the upsert
    assert len(q) == 1


def test_a_real_delete_still_blocks_the_old_version() -> None:
    q = DownstreamQueue()
    ref = ObjectRef(kind="Device", namespace="default", name="d")
    q.offer_upsert(device("d", 5))
    q.ack(q.due(0.0, 0)[0].id)
    q.offer_delete(ref, 9)
    q.ack(q.due(0.0, 0)[0].id)
    assert not q.offer_upsert(device("d", 5))
