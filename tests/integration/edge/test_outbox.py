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

REF = ObjectRef(kind="Device", namespace="default", name="d")


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
