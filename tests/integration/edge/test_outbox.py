"""The edge outbox: durable, ordered, coalescing, bounded with drop-oldest."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgecore.outbox import FLUSH_DELAY, Outbox
from protocol.envelope import ObjectRef, Op
from protocol.errors import StoreFull

REF = ObjectRef(kind="Device", namespace="default", name="d")
OTHER = ObjectRef(kind="Device", namespace="default", name="e")
NODE = ObjectRef(kind="Node", name="edge-a")


def test_entries_leave_in_order_and_only_when_removed(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path / "o.db")
    ids = [box.put(Op.STATUS, REF, {"n": i}) for i in range(5)]
    entries = box.peek(0, 10)
    assert [e.envelope_id for e in entries] == ids
    assert [e.body["n"] for e in entries] == [0, 1, 2, 3, 4]
    assert box.peek(entries[1].seq, 2)[0].body == {"n": 2}
    assert box.count_upto(entries[2].seq) == 3
    assert box.remove(ids[0]) and not box.remove(ids[0])
    assert len(box) == 4


def test_a_coalescing_key_keeps_only_the_latest(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path / "o.db")
    box.put(Op.STATUS, REF, {"v": 1}, coalesce_key="status/d")
    box.put(Op.STATUS, REF, {"v": 0}, coalesce_key="status/other")
    box.put(Op.STATUS, REF, {"v": 2}, coalesce_key="status/d")
    assert [e.body for e in box.peek(0, 10)] == [{"v": 0}, {"v": 2}]


def test_a_full_outbox_drops_the_oldest_counts_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    box = Outbox.open(tmp_path / "o.db", limit=3)
    with caplog.at_level(logging.WARNING):
        for i in range(5):
            box.put(Op.STATUS, REF, {"n": i})
    assert [e.body["n"] for e in box.peek(0, 10)] == [2, 3, 4]
    assert box.dropped == 2
    assert "outbox full (limit 3)" in caplog.text


def test_entries_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    child = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys\n"
            "from edgecore.outbox import Outbox\n"
            "from protocol.envelope import ObjectRef, Op\n"
            f"box = Outbox.open({str(path)!r})\n"
            "ref = ObjectRef(kind='Device', namespace='default', name='d')\n"
            "i = 0\n"
            "while True:\n"
            "    print(box.put(Op.STATUS, ref, {'n': i}), flush=True)\n"
            "    i += 1\n"
        )],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[3],
    )
    assert child.stdout is not None
    acknowledged = [child.stdout.readline().strip() for _ in range(300)]
    child.send_signal(signal.SIGKILL)
    child.wait()
    box = Outbox.open(path)
    kept = {e.envelope_id for e in box.peek(0, 100_000)}
    assert set(acknowledged) <= kept
    assert box._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _rows_on_disk(path: Path) -> set[str]:
    """What another reader of the file (a restarted edgecore) would find."""
    other = Outbox.open(path)
    try:
        return {e.envelope_id for e in other.peek(0, 100_000)}
    finally:
        other.close()


async def test_an_acked_entry_leaves_at_once_and_its_row_soon_after(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox.open(path)
    first, second = box.put(Op.STATUS, REF, {"n": 1}), box.put(Op.STATUS, REF, {"n": 2})
    assert box.remove(first) and not box.remove(first)
    # Gone from what the drain sees at once...
    assert [e.envelope_id for e in box.peek(0, 10)] == [second]
    assert len(box) == 1 and box.count_upto(10**9) == 1
    # ...and from the file within FLUSH_DELAY, though nothing else was written.
    deadline = time.monotonic() + 10 * FLUSH_DELAY + 5
    while first in _rows_on_disk(path):
        assert time.monotonic() < deadline, "the acked row was never deleted"
        await asyncio.sleep(0.02)
    assert _rows_on_disk(path) == {second}
    box.close()


async def test_acks_are_deleted_with_the_next_put_even_one_of_the_same_object(
        tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox.open(path)
    acked = [box.put(Op.STATUS, REF, {"v": 1}, coalesce_key="status/d"),
             box.put(Op.MESSAGE, None, {"m": 1})]
    for envelope_id in acked:
        assert box.remove(envelope_id)
    # The acked status still holds its coalescing key on disk until its delete commits.
    latest = box.put(Op.STATUS, REF, {"v": 2}, coalesce_key="status/d")
    assert _rows_on_disk(path) == {latest}  # committed with this put, no timer needed
    assert [e.body for e in box.peek(0, 10)] == [{"v": 2}]
    box.close()
    assert _rows_on_disk(path) == {latest}


async def test_closing_deletes_the_acked_rows(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox.open(path)
    ids = [box.put(Op.MESSAGE, None, {"i": i}) for i in range(3)]
    assert box.remove(ids[0]) and box.remove(ids[2])
    box.close()
    assert _rows_on_disk(path) == {ids[1]}


# ---- put_many: several messages in one transaction ------------------------------------


def _queued(box: Outbox) -> list[tuple[str, Op, ObjectRef | None, object]]:
    return [(e.envelope_id, e.op, e.ref, e.body) for e in box.peek(0, 100_000)]


def test_a_batch_is_queued_in_order_and_its_ids_returned_in_order(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path / "o.db")
    first = box.put(Op.MESSAGE, None, {"m": 0})
    ids = box.put_many([
        (Op.STATUS, REF, {"status": {"v": 1}}, "status/d"),
        (Op.MESSAGE, None, {"m": 1}, None),
        (Op.STATUS, NODE, {"status": {"phase": "Ready"}}, None),
    ])
    assert len(ids) == len(set(ids)) == 3 and first not in ids
    assert _queued(box) == [
        (first, Op.MESSAGE, None, {"m": 0}),
        (ids[0], Op.STATUS, REF, {"status": {"v": 1}}),
        (ids[1], Op.MESSAGE, None, {"m": 1}),
        (ids[2], Op.STATUS, NODE, {"status": {"phase": "Ready"}}),
    ]
    entries = box.peek(0, 10)
    assert [e.seq for e in entries] == sorted(e.seq for e in entries)
    assert box.peek(entries[1].seq, 10)[0].envelope_id == ids[1]
    assert len(box) == 4 and box.count_upto(entries[2].seq) == 3
    assert box.put_many([]) == [] and len(box) == 4


def test_a_later_message_of_a_batch_replaces_an_earlier_one_with_its_key(
        tmp_path: Path) -> None:
    box = Outbox.open(tmp_path / "o.db")
    ids = box.put_many([
        (Op.STATUS, REF, {"status": {"v": 1}}, "status/d"),
        (Op.STATUS, OTHER, {"status": {"v": 1}}, "status/e"),
        (Op.STATUS, REF, {"status": {"v": 2}}, "status/d"),
        (Op.STATUS, REF, {"status": {"v": 3}}, "status/d"),
    ])
    # Only the latest of "d" stays, where the latest was put: after "e".
    assert _queued(box) == [(ids[1], Op.STATUS, OTHER, {"status": {"v": 1}}),
                            (ids[3], Op.STATUS, REF, {"status": {"v": 3}})]
    assert len(box) == 2
    assert not box.remove(ids[0]) and not box.remove(ids[2])  # replaced: not in the outbox
    # The index knows which entry holds the key now: a plain put replaces it again.
    latest = box.put(Op.STATUS, REF, {"status": {"v": 4}}, coalesce_key="status/d")
    assert _queued(box) == [(ids[1], Op.STATUS, OTHER, {"status": {"v": 1}}),
                            (latest, Op.STATUS, REF, {"status": {"v": 4}})]


def test_a_batch_replaces_an_already_queued_entry_with_its_key(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox.open(path)
    old = box.put(Op.STATUS, REF, {"status": {"v": 0}}, coalesce_key="status/d")
    message = box.put(Op.MESSAGE, None, {"m": 0})
    kept = box.put(Op.STATUS, OTHER, {"status": {"v": 0}}, coalesce_key="status/e")
    ids = box.put_many([
        (Op.STATUS, NODE, {"status": {"phase": "Ready"}}, "status/node"),
        (Op.STATUS, REF, {"status": {"v": 1}}, "status/d"),
    ])
    assert _queued(box) == [
        (message, Op.MESSAGE, None, {"m": 0}),
        (kept, Op.STATUS, OTHER, {"status": {"v": 0}}),
        (ids[0], Op.STATUS, NODE, {"status": {"phase": "Ready"}}),
        (ids[1], Op.STATUS, REF, {"status": {"v": 1}}),
    ]
    assert not box.remove(old) and len(box) == 4
    assert _rows_on_disk(path) == {message, kept, *ids}
    box.close()


def test_a_batch_replaces_an_acked_entry_whose_row_is_not_deleted_yet(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox.open(path)
    acked = box.put(Op.STATUS, REF, {"status": {"v": 1}}, coalesce_key="status/d")
    assert box.remove(acked)  # its row (holding the key) waits for the delayed delete
    ids = box.put_many([(Op.STATUS, REF, {"status": {"v": 2}}, "status/d"),
                        (Op.STATUS, OTHER, {"status": {"v": 2}}, "status/e")])
    assert [e.envelope_id for e in box.peek(0, 10)] == ids
    assert _rows_on_disk(path) == set(ids)
    box.close()


def test_a_batch_that_does_not_fit_queues_nothing_and_keeps_what_was_there(
        tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    cap = 32 * 1024
    box = Outbox.open(path, max_bytes=cap)
    earlier = [box.put(Op.STATUS, REF, {"status": {"v": 1}}, coalesce_key="status/d"),
               box.put(Op.MESSAGE, None, {"m": 0})]
    before = box.peek(0, 100_000)
    # Small messages first, then one replacing "d", then more than the cap holds.
    batch: list[tuple[Op, ObjectRef | None, object, str | None]] = [
        (Op.MESSAGE, None, {"m": 1}, None),
        (Op.STATUS, REF, {"status": {"v": 2}}, "status/d"),
        *[(Op.MESSAGE, None, {"i": i, "pad": "z" * 1000}, None) for i in range(40)],
    ]
    with pytest.raises(StoreFull) as caught:
        box.put_many(batch)
    assert f"store is full (cap {cap} bytes)" in caught.value.message
    assert "42 messages" in caught.value.message
    assert box.peek(0, 100_000) == before  # "d" still holds its older status
    assert len(box) == 2 and box.count_upto(10**9) == 2
    # Still usable, and its index still right: "d" is replaced by the next batch that fits.
    ids = box.put_many([(Op.STATUS, REF, {"status": {"v": 3}}, "status/d")])
    assert [e.envelope_id for e in box.peek(0, 10)] == [earlier[1], ids[0]]
    box.close()
    assert _rows_on_disk(path) == {earlier[1], ids[0]}


def test_the_limit_drops_the_oldest_after_the_whole_batch(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    box = Outbox.open(tmp_path / "o.db", limit=3)
    old = [box.put(Op.MESSAGE, None, {"n": i}) for i in range(2)]
    with caplog.at_level(logging.WARNING):
        ids = box.put_many([(Op.MESSAGE, None, {"n": i}, None) for i in range(2, 5)])
    assert [e.envelope_id for e in box.peek(0, 10)] == ids
    assert [e.body["n"] for e in box.peek(0, 10)] == [2, 3, 4]
    assert box.dropped == 2 and len(box) == 3
    assert not box.remove(old[0]) and not box.remove(old[1])
    assert "outbox full (limit 3): dropped 2 oldest" in caplog.text


def test_a_batch_longer_than_the_limit_keeps_its_newest(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path / "o.db", limit=3)
    box.put(Op.STATUS, REF, {"status": {"v": 0}}, coalesce_key="status/d")
    ids = box.put_many([(Op.MESSAGE, None, {"n": i}, None) for i in range(5)])
    assert [e.envelope_id for e in box.peek(0, 10)] == ids[2:]
    assert box.dropped == 3 and len(box) == 3
    # The dropped status's key is free again: a new status is queued, not "replacing".
    latest = box.put(Op.STATUS, REF, {"status": {"v": 1}}, coalesce_key="status/d")
    assert [e.envelope_id for e in box.peek(0, 10)] == [*ids[3:], latest]
    assert box.dropped == 4


def test_a_coalesced_batch_counts_against_the_limit_only_once(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path / "o.db", limit=3)
    queued = [box.put(Op.MESSAGE, None, {"n": 0}),
              box.put(Op.STATUS, REF, {"status": {"v": 0}}, coalesce_key="status/d")]
    ids = box.put_many([(Op.STATUS, REF, {"status": {"v": i}}, "status/d") for i in range(1, 4)]
                       + [(Op.STATUS, OTHER, {"status": {"v": 1}}, "status/e")])
    # 1 message + latest "d" + "e": at the limit, nothing dropped.
    assert [e.envelope_id for e in box.peek(0, 10)] == [queued[0], ids[2], ids[3]]
    assert box.dropped == 0 and len(box) == 3


def test_a_batch_survives_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox.open(path)
    ids = box.put_many([
        (Op.STATUS, REF, {"status": {"v": 1, "text": "état ✓"}}, "status/d"),
        (Op.MESSAGE, None, {"m": 1}, None),
        (Op.STATUS, NODE, {"status": {"phase": "Ready"}}, "status/node"),
        (Op.STATUS, REF, {"status": {"v": 2, "text": "état ✓"}}, "status/d"),
    ])
    expected = [(ids[1], Op.MESSAGE, None, {"m": 1}),
                (ids[2], Op.STATUS, NODE, {"status": {"phase": "Ready"}}),
                (ids[3], Op.STATUS, REF, {"status": {"v": 2, "text": "état ✓"}})]
    assert _rows_on_disk(path) == set(ids[1:])  # committed when put_many returned
    box.close()
    again = Outbox.open(path)
    assert _queued(again) == expected
    # The reopened index knows the keys the batch left.
    latest = again.put(Op.STATUS, REF, {"status": {"v": 3}}, coalesce_key="status/d")
    assert [e.envelope_id for e in again.peek(0, 10)] == [ids[1], ids[2], latest]
    again.close()
