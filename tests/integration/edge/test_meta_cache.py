"""MetaCache on real sqlite files: ordering by resourceVersion, tombstones, durability
across reopen and SIGKILL, integrity checking and live events."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from edgecore.meta import ApplyResult, CacheCorruptError, MetaCache
from protocol.errors import InvalidObject
from protocol.events import EventType
from protocol.selectors import parse_selector

REPO = Path(__file__).resolve().parents[3]


def device(name: str, rv: int, ns: str = "default", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": str(rv),
                     "labels": labels},
        "spec": {"deviceModelRef": {"name": "thermometer"}, "protocol": {"protocolName": "x"}},
    }


def node(name: str, rv: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "resourceVersion": str(rv)}}


@pytest.fixture
def cache(tmp_path: Path) -> Any:
    c = MetaCache.open(tmp_path / "meta.db")
    yield c
    c.close()


def test_upsert_get_list_holdings(cache: MetaCache) -> None:
    assert cache.upsert(device("b", 3)) is ApplyResult.APPLIED
    assert cache.upsert(device("a", 4, ns="zone")) is ApplyResult.APPLIED
    assert cache.upsert(device("a", 5)) is ApplyResult.APPLIED
    assert cache.upsert(node("edge-1", 6)) is ApplyResult.APPLIED

    assert cache.get("Device", "default", "b") == device("b", 3)
    assert cache.get("Device", "default", "missing") is None
    assert cache.get("Node", None, "edge-1") == node("edge-1", 6)
    assert [(o["metadata"]["namespace"], o["metadata"]["name"])
            for o in cache.list("Device")] == [("default", "a"), ("default", "b"), ("zone", "a")]
    assert [o["metadata"]["name"] for o in cache.list("Device", "zone")] == ["a"]
    assert cache.holdings() == {
        "Device/default/a": 5, "Device/default/b": 3, "Device/zone/a": 4, "Node//edge-1": 6,
    }


def test_list_filters_by_label_selector(cache: MetaCache) -> None:
    cache.upsert(device("hot", 1, room="kitchen"))
    cache.upsert(device("cold", 2, room="cellar"))
    cache.upsert(device("bare", 3))
    names = [o["metadata"]["name"] for o in cache.list("Device", None, parse_selector("room"))]
    assert names == ["cold", "hot"]
    names = [o["metadata"]["name"]
             for o in cache.list("Device", "default", parse_selector("room!=kitchen"))]
    assert names == ["bare", "cold"]


def test_older_or_equal_version_is_ignored_and_never_overwrites(cache: MetaCache) -> None:
    newer = device("x", 12, state="new")
    assert cache.upsert(newer) is ApplyResult.APPLIED
    assert cache.upsert(device("x", 11, state="old")) is ApplyResult.STALE
    assert cache.upsert(device("x", 12, state="same-rv-other-body")) is ApplyResult.STALE
    assert cache.get("Device", "default", "x") == newer
    assert cache.holdings() == {"Device/default/x": 12}


def test_delete_leaves_a_tombstone_that_stops_older_upserts(cache: MetaCache) -> None:
    cache.upsert(device("x", 5))
    assert cache.delete("Device", "default", "x", 7) is ApplyResult.APPLIED
    assert cache.get("Device", "default", "x") is None
    assert cache.holdings() == {}
    # A resend of an older version after the delete must not bring the object back.
    assert cache.upsert(device("x", 6)) is ApplyResult.STALE
    assert cache.upsert(device("x", 7)) is ApplyResult.STALE
    assert cache.get("Device", "default", "x") is None
    # The same delete delivered twice is applied once.
    assert cache.delete("Device", "default", "x", 7) is ApplyResult.STALE
    # A genuinely newer version (re-created in the cloud) comes back.
    assert cache.upsert(device("x", 9)) is ApplyResult.APPLIED
    assert cache.holdings() == {"Device/default/x": 9}


def test_an_eviction_leaves_no_tombstone_so_the_object_can_come_back(cache: MetaCache) -> None:
    # The object left this node's scope (moved away) and came back unchanged.
    cache.upsert(device("d", 5))
    assert cache.delete("Device", "default", "d", 9, evict=True) is ApplyResult.APPLIED
    assert cache.get("Device", "default", "d") is None
    assert cache.tombstones() == {}
    assert cache.upsert(device("d", 5)) is ApplyResult.APPLIED
    assert cache.holdings() == {"Device/default/d": 5}


def test_delete_older_than_held_version_is_stale(cache: MetaCache) -> None:
    cache.upsert(device("x", 10))
    assert cache.delete("Device", "default", "x", 8) is ApplyResult.STALE
    assert cache.holdings() == {"Device/default/x": 10}


def test_delete_of_unknown_object_still_guards_against_late_upsert(cache: MetaCache) -> None:
    assert cache.delete("Device", "default", "never-seen", 4) is ApplyResult.APPLIED
    assert cache.upsert(device("never-seen", 3)) is ApplyResult.STALE
    assert cache.holdings() == {}


def test_prune_tombstones_forgets_deletes(cache: MetaCache) -> None:
    cache.upsert(device("x", 5))
    cache.delete("Device", "default", "x", 7)
    assert cache.tombstones() == {"Device/default/x": 7}
    cache.prune_tombstones()
    assert cache.tombstones() == {}
    # Without its tombstone, a (post-resync) upsert at any newer-than-nothing rv applies.
    assert cache.upsert(device("x", 6)) is ApplyResult.APPLIED


def test_upsert_without_resource_version_is_refused(cache: MetaCache) -> None:
    obj = device("x", 1)
    del obj["metadata"]["resourceVersion"]
    with pytest.raises(InvalidObject) as err:
        cache.upsert(obj)
    assert err.value.field == "metadata.resourceVersion"
    with pytest.raises(InvalidObject) as err:
        cache.upsert({"kind": "Device", "metadata": {"resourceVersion": "3"}})
    assert err.value.field == "metadata.name"
    assert cache.holdings() == {}


def test_reopen_keeps_objects_and_tombstones(tmp_path: Path) -> None:
    path = tmp_path / "meta.db"
    first = MetaCache.open(path)
    first.upsert(device("kept", 3, a="b"))
    first.upsert(node("edge-1", 4))
    first.upsert(device("gone", 5))
    first.delete("Device", "default", "gone", 6)
    first.close()

    assert path.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again = MetaCache.open(path)
    try:
        assert again.holdings() == {"Device/default/kept": 3, "Node//edge-1": 4}
        assert again.get("Device", "default", "kept") == device("kept", 3, a="b")
        assert again.upsert(device("gone", 5)) is ApplyResult.STALE
    finally:
        again.close()


def test_applied_and_stale_changes_are_logged_in_the_documented_format(
    cache: MetaCache, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="edgecore.meta"):
        cache.upsert(device("x", 12))
        cache.upsert(device("x", 11))
        cache.delete("Device", "default", "x", 13)
    messages = [r.getMessage() for r in caplog.records if r.name == "edgecore.meta"]
    assert messages[0] == "applied upsert Device/default/x rv=12"
    assert messages[1].startswith("ignored stale upsert Device/default/x rv=11")
    assert messages[2] == "applied delete Device/default/x rv=13"


def test_garbage_file_is_reported_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "meta.db"
    path.write_bytes(b"this is not an sqlite database at all" * 200)
    with pytest.raises(CacheCorruptError, match=r"meta\.db"):
        MetaCache.open(path)


def test_damaged_pages_fail_the_integrity_check(tmp_path: Path) -> None:
    path = tmp_path / "meta.db"
    cache = MetaCache.open(path)
    for i in range(300):
        cache.upsert(device(f"d{i:04}", i + 1, filler="x" * 60))
    cache.close()
    # Checkpointed into the main file on close; scribble over the middle of it (past
    # the header page, so the file still opens as a database).
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 6 * page
    data[2 * page : 5 * page] = b"\xa5" * (3 * page)
    path.write_bytes(bytes(data))
    with pytest.raises(CacheCorruptError, match=r"integrity|not a usable"):
        MetaCache.open(path)


_CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from edgecore.meta import MetaCache
    cache = MetaCache.open(Path(sys.argv[1]))
    rv = 0
    while True:
        rv += 1
        name = f"d{rv % 50}"
        if rv % 7 == 0:
            cache.delete("Device", "default", name, rv)
            print(f"delete Device/default/{name} {rv}", flush=True)
        else:
            cache.upsert({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
                          "metadata": {"name": name, "namespace": "default",
                                       "resourceVersion": str(rv)},
                          "spec": {"blob": "y" * 200}})
            print(f"upsert Device/default/{name} {rv}", flush=True)
""")


@pytest.mark.slow
def test_everything_acknowledged_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "meta.db"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE, env=env, cwd=REPO,
    )
    assert child.stdout is not None
    acked: list[tuple[str, str, int]] = []
    deadline = time.monotonic() + 60
    try:
        while len(acked) < 400 and time.monotonic() < deadline:
            line = child.stdout.readline().decode()
            if not line:
                break
            op_text, key_text, rv_text = line.split()
            acked.append((op_text, key_text, int(rv_text)))
    finally:
        # Killed mid-stream: it is applying (or about to apply) the next change.
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    assert len(acked) >= 400, "the child did not apply enough changes"

    # The newest acknowledged change per key decides what must be there; the child may
    # have committed one more change it never got to print, which can only be newer.
    last: dict[str, tuple[str, int]] = {}
    for op, key, rv in acked:
        last[key] = (op, rv)
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    cache = MetaCache.open(path)
    try:
        held = cache.holdings()
        tombs = cache.tombstones()
        for key, (op, rv) in last.items():
            if op == "upsert":
                assert held.get(key, 0) >= rv or tombs.get(key, 0) > rv, key
            else:
                assert tombs.get(key, 0) >= rv or held.get(key, 0) > rv, key
        # The newest printed change is exactly what is held (at most one unprinted
        # change can follow it, and it is for a different key in this sequence).
        op, key, rv = acked[-1]
        assert (held.get(key) == rv) if op == "upsert" else (tombs.get(key) == rv)
    finally:
        cache.close()


async def test_subscribers_see_every_applied_change_in_order(cache: MetaCache) -> None:
    watch = cache.subscribe()
    cache.upsert(device("x", 1, v="1"))
    cache.upsert(device("x", 1, v="dup"))  # stale: no event
    cache.upsert(device("x", 2, v="2"))
    cache.upsert(node("edge-1", 3))
    cache.delete("Device", "default", "x", 4)
    cache.delete("Device", "default", "x", 4)  # stale: no event
    watch.close()

    events = [e async for e in watch]
    assert [(e.type, e.key, e.object["metadata"]["resourceVersion"]) for e in events] == [
        (EventType.ADDED, "Device/default/x", "1"),
        (EventType.MODIFIED, "Device/default/x", "2"),
        (EventType.ADDED, "Node//edge-1", "3"),
        (EventType.DELETED, "Device/default/x", "4"),
    ]
    assert events[1].previous == device("x", 1, v="1")
    # DELETED carries the last state held, stamped with the delete's version.
    assert events[3].object["metadata"]["labels"] == {"v": "2"}
    assert events[3].to_json()["type"] == "DELETED"


async def test_kind_filtered_subscription(cache: MetaCache) -> None:
    watch = cache.subscribe(kind="Node")
    cache.upsert(device("x", 1))
    cache.upsert(node("edge-1", 2))
    watch.close()
    assert [e.key async for e in watch] == ["Node//edge-1"]


async def test_live_watcher_is_woken_by_an_apply(cache: MetaCache) -> None:
    watch = cache.subscribe()
    waiter = asyncio.create_task(anext(watch))
    await asyncio.sleep(0)  # let it block on the empty queue
    assert not waiter.done()
    cache.upsert(device("x", 1))
    event = await asyncio.wait_for(waiter, 5)
    assert event.type is EventType.ADDED
    watch.close()


async def test_slow_watcher_is_dropped_without_blocking_applies(cache: MetaCache) -> None:
    slow = cache.subscribe(maxsize=3)
    keeping_up = cache.subscribe()
    for rv in range(1, 11):
        assert cache.upsert(device("x", rv)) is ApplyResult.APPLIED
    assert slow.dropped and slow.closed
    assert [e async for e in slow] == []
    assert cache.subscriber_count == 1
    keeping_up.close()
    assert len([e async for e in keeping_up]) == 10


async def test_closing_the_cache_ends_watches(tmp_path: Path) -> None:
    cache = MetaCache.open(tmp_path / "meta.db")
    watch = cache.subscribe()
    waiter = asyncio.create_task(anext(watch, None))
    await asyncio.sleep(0)
    cache.close()
    assert await asyncio.wait_for(waiter, 5) is None
    assert not watch.dropped
