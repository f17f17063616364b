"""The sqlite store against real database files in tmp_path."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

import protocol.kinds  # noqa: F401  (registers Node)
from cloudcore.store import sqlite as sqlite_module
from cloudcore.store.base import Store
from cloudcore.store.sqlite import SqliteStore, StoreClosed, StoreCorrupt, StoreLocked
from protocol.errors import AlreadyExists, Conflict, Gone, NotFound, StoreFull
from protocol.events import EventType
from protocol.resources import REGISTRY, KindInfo, register, validate_object
from protocol.selectors import parse_selector
from tests.integration.store.storetools import collect, rv_of

REPO_ROOT = Path(__file__).resolve().parents[3]

# A namespaced kind of our own, so these tests do not depend on which kinds exist.
PROBE = "SqliteStoreProbe"
if PROBE not in {info.kind for info in REGISTRY.all()}:
    register(KindInfo(kind=PROBE, group="test.edgefleet.io", version="v1",
                      plural="sqlitestoreprobes", namespaced=True))


def node(name: str, *, labels: dict[str, str] | None = None, spec: dict[str, Any] | None = None,
         **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels is not None:
        meta["labels"] = labels
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Node", "metadata": meta,
                           "spec": spec or {}, **extra}
    return validate_object(obj)[1]


def probe(name: str, namespace: str | None = None, *, labels: dict[str, str] | None = None,
          spec: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    if labels is not None:
        meta["labels"] = labels
    obj = {"apiVersion": "test.edgefleet.io/v1", "kind": PROBE, "metadata": meta,
           "spec": spec or {}}
    return validate_object(obj)[1]


async def test_sqlite_store_satisfies_the_store_interface(tmp_path: Path) -> None:
    # The annotation is checked by mypy when the tests are type-checked; at run time
    # this at least proves every method of the protocol exists.
    s: Store = SqliteStore.open(tmp_path / "s.db")
    for method in ("apply", "create", "update_status", "get", "list", "delete", "watch",
                   "current_rv", "close", "write_many"):
        assert callable(getattr(s, method))
    await s.close()


# ---------------------------------------------------------------- basics


async def test_create_get_list_delete(store: SqliteStore) -> None:
    stored, created = await store.apply(node("edge-1", labels={"site": "a"}))
    assert created is True
    meta = stored["metadata"]
    assert meta["generation"] == 1
    assert meta["resourceVersion"] == "1"
    assert len(meta["uid"]) == 36
    assert meta["creationTimestamp"].endswith("Z")

    assert await store.get("Node", None, "edge-1") == stored
    items, current = await store.list("Node")
    assert items == [stored]
    assert current == 1 == store.current_rv()

    deleted = await store.delete("Node", None, "edge-1")
    assert rv_of(deleted) == 2
    assert deleted["metadata"]["uid"] == meta["uid"]
    with pytest.raises(NotFound):
        await store.get("Node", None, "edge-1")
    with pytest.raises(NotFound):
        await store.delete("Node", None, "edge-1")
    with pytest.raises(NotFound):
        await store.update_status("Node", None, "edge-1", {"capacity": {}})
    assert await store.list("Node") == ([], 2)


async def test_returned_objects_are_private_copies(store: SqliteStore) -> None:
    stored, _ = await store.apply(node("edge-1", labels={"site": "a"}))
    stored["metadata"]["labels"]["site"] = "changed by caller"
    assert (await store.get("Node", None, "edge-1"))["metadata"]["labels"] == {"site": "a"}


async def test_resource_version_strictly_increases_across_kinds(store: SqliteStore) -> None:
    seen = []
    for i in range(3):
        seen.append(rv_of((await store.apply(node(f"n{i}")))[0]))
        seen.append(rv_of((await store.apply(probe(f"p{i}")))[0]))
    seen.append(rv_of(await store.update_status("Node", None, "n0", {"capacity": {"cpu": "2"}})))
    seen.append(rv_of(await store.delete(PROBE, "default", "p1")))
    assert seen == list(range(1, 9))
    assert store.current_rv() == 8


async def test_identity_is_stable_and_generation_follows_spec(store: SqliteStore) -> None:
    first, _ = await store.apply(node("edge-1", spec={"unschedulable": False}))

    relabelled, created = await store.apply(node("edge-1", labels={"tier": "gold"},
                                                 spec={"unschedulable": False}))
    assert created is False
    assert relabelled["metadata"]["labels"] == {"tier": "gold"}
    assert relabelled["metadata"]["generation"] == 1  # labels are not spec
    assert rv_of(relabelled) == 2

    respecced, _ = await store.apply(node("edge-1", labels={"tier": "gold"},
                                          spec={"unschedulable": True}))
    assert respecced["metadata"]["generation"] == 2
    for field in ("uid", "creationTimestamp"):
        assert respecced["metadata"][field] == first["metadata"][field]

    # Re-applying what is stored (even with forged system fields) changes nothing.
    forged = node("edge-1", labels={"tier": "gold"}, spec={"unschedulable": True})
    forged["metadata"].update(uid="forged", generation=99, creationTimestamp="2000-01-01T00:00:00Z")
    again, _ = await store.apply(forged)
    assert again == respecced
    assert store.current_rv() == 3


async def test_status_is_system_written(store: SqliteStore) -> None:
    created, _ = await store.apply(node("edge-1", status={"capacity": {"cpu": "64"}}))
    assert "status" not in created  # the user's status was dropped

    status = {"capacity": {"cpu": "2"}, "allocatable": {"cpu": "2"}}
    with_status = await store.update_status("Node", None, "edge-1", status)
    assert with_status["status"] == status
    assert with_status["metadata"]["generation"] == 1
    assert rv_of(with_status) == 2

    # Equal status: no write, no new resourceVersion.
    same = await store.update_status("Node", None, "edge-1", status, expected_rv=2)
    assert same == with_status
    assert store.current_rv() == 2

    # A user apply with a different status keeps the system's status.
    applied, _ = await store.apply(node("edge-1", spec={"unschedulable": True},
                                        status={"capacity": {"cpu": "64"}}))
    assert applied["status"] == status
    assert applied["metadata"]["generation"] == 2


async def test_stale_resource_version_is_refused_and_changes_nothing(store: SqliteStore) -> None:
    v1, _ = await store.apply(node("edge-1", spec={"unschedulable": False}))
    v2, _ = await store.apply(node("edge-1", spec={"unschedulable": True}))
    stale = node("edge-1", labels={"x": "y"})
    stale["metadata"]["resourceVersion"] = v1["metadata"]["resourceVersion"]

    with pytest.raises(Conflict) as caught:
        await store.apply(stale)
    assert caught.value.field == "metadata.resourceVersion"
    assert "stored resourceVersion 2, yours 1" in caught.value.message
    with pytest.raises(Conflict):
        await store.update_status("Node", None, "edge-1", {"capacity": {}}, expected_rv=1)
    with pytest.raises(Conflict):
        await store.delete("Node", None, "edge-1", expected_rv=1)

    assert store.current_rv() == 2
    assert await store.get("Node", None, "edge-1") == v2

    # The current resourceVersion is accepted.
    fresh = node("edge-1", labels={"x": "y"}, spec={"unschedulable": True})
    fresh["metadata"]["resourceVersion"] = "2"
    updated, _ = await store.apply(fresh)
    assert updated["metadata"]["labels"] == {"x": "y"}
    deleted = await store.delete("Node", None, "edge-1", expected_rv=rv_of(updated))
    assert rv_of(deleted) == 4


async def test_resource_version_precondition_on_missing_object(store: SqliteStore) -> None:
    obj = node("ghost")
    obj["metadata"]["resourceVersion"] = "7"
    with pytest.raises(Conflict):
        await store.apply(obj)
    assert store.current_rv() == 0


async def test_create_refuses_an_existing_key(store: SqliteStore) -> None:
    created = await store.create(probe("p", "ns1", spec={"a": 1}))
    with pytest.raises(AlreadyExists):
        await store.create(probe("p", "ns1", spec={"a": 2}))
    assert await store.get(PROBE, "ns1", "p") == created
    # The same name in another namespace is another object.
    await store.create(probe("p", "ns2"))
    assert store.current_rv() == 2


async def test_list_by_namespace_and_label_selector(store: SqliteStore) -> None:
    await store.apply(probe("b", "ns2", labels={"app": "meter", "site": "north"}))
    await store.apply(probe("a", "ns2", labels={"app": "plc"}))
    await store.apply(probe("z", "ns1", labels={"app": "meter", "site": "south"}))
    await store.apply(probe("default-one"))
    await store.apply(node("n1", labels={"app": "meter"}))

    def names(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in items]

    everything, rv = await store.list(PROBE)
    assert names(everything) == [("default", "default-one"), ("ns1", "z"), ("ns2", "a"),
                                 ("ns2", "b")]
    assert rv == 5
    assert names((await store.list(PROBE, "ns2"))[0]) == [("ns2", "a"), ("ns2", "b")]
    assert (await store.list(PROBE, "nowhere"))[0] == []

    meters, _ = await store.list(PROBE, selector=parse_selector("app=meter"))
    assert names(meters) == [("ns1", "z"), ("ns2", "b")]
    north, _ = await store.list(PROBE, "ns2", parse_selector("app=meter,site in (north)"))
    assert names(north) == [("ns2", "b")]
    unlabelled, _ = await store.list(PROBE, selector=parse_selector("!app"))
    assert names(unlabelled) == [("default", "default-one")]


# ---------------------------------------------------------------- watch


async def test_watch_from_zero_replays_history_then_goes_live(store: SqliteStore) -> None:
    await store.apply(node("n1"))
    await store.update_status("Node", None, "n1", {"capacity": {"cpu": "1"}})
    await store.delete("Node", None, "n1")
    stream = store.watch(0)
    history = await collect(stream, 3)
    assert [(e.type, e.rv) for e in history] == [
        (EventType.ADDED, 1), (EventType.MODIFIED, 2), (EventType.DELETED, 3)]
    assert history[2].object["metadata"]["resourceVersion"] == "3"
    assert history[1].object["status"] == {"capacity": {"cpu": "1"}}
    assert history[0].to_json()["type"] == "ADDED"

    stored, _ = await store.apply(node("n2"))
    [live] = await collect(stream, 1)
    assert (live.type, live.rv, live.object) == (EventType.ADDED, 4, stored)
    await stream.aclose()


async def test_watch_from_a_middle_version_and_by_kind(store: SqliteStore) -> None:
    for i in range(4):
        await store.apply(node(f"n{i}"))
        await store.apply(probe(f"p{i}"))
    everything = await collect(store.watch(5), 3)
    assert [e.rv for e in everything] == [6, 7, 8]
    probes = store.watch(3, kinds=frozenset({PROBE}))
    assert [e.rv for e in await collect(probes, 3)] == [4, 6, 8]
    await store.apply(node("n-live"))
    await store.apply(probe("p-live"))
    [live] = await collect(probes, 1)
    assert (live.rv, live.object["metadata"]["name"]) == (10, "p-live")


async def test_watch_gets_every_event_once_while_writes_race_the_replay(
    store: SqliteStore,
) -> None:
    # More history than one replay page, and a write after every event read, so live
    # events arrive while the history is still being read.
    for i in range(1200):
        await store.apply(node(f"n{i}"))
    stream = store.watch(100)
    seen: list[int] = []
    extra = 0
    async with asyncio.timeout(30):
        while not seen or seen[-1] < 1200 + extra:
            event = await anext(stream)
            seen.append(event.rv)
            if extra < 1500:
                await store.apply(probe(f"p{extra}"))
                extra += 1
    assert seen == list(range(101, 1200 + extra + 1))


async def test_watch_of_compacted_history_is_gone(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "s.db", history_limit=5)
    for i in range(12):
        await store.apply(node(f"n{i}"))
    with pytest.raises(Gone) as caught:
        await anext(store.watch(6))
    assert caught.value.message == (
        "resourceVersion 6 is too old; the oldest available is 7; list again")
    assert [e.rv for e in await collect(store.watch(7), 5)] == [8, 9, 10, 11, 12]
    await store.close()


async def test_compaction_during_replay_ends_the_watch_with_gone(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "s.db", history_limit=700)
    for i in range(700):
        await store.apply(node(f"n{i}"))
    stream = store.watch(0)
    first = await anext(stream)  # the first replay page is now read
    for i in range(700):  # ... and these writes trim history the reader has not reached
        await store.apply(probe(f"p{i}"))
    delivered = [first.rv]
    with pytest.raises(Gone):
        async with asyncio.timeout(10):
            async for event in stream:
                delivered.append(event.rv)
    assert delivered == list(range(1, len(delivered) + 1))  # no gap before the end
    assert store.watch_count() == 0
    await store.close()


async def test_a_watcher_that_falls_behind_is_ended_with_gone(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sqlite_module, "WATCH_QUEUE_LIMIT", 5)
    await store.apply(node("n0"))
    stream = store.watch(0)
    assert (await anext(stream)).rv == 1  # from history; now registered for live events
    for i in range(1, 10):  # writers are never held up by the slow reader
        await store.apply(node(f"n{i}"))
    with pytest.raises(Gone):
        await collect(stream, 9)
    assert store.watch_count() == 0
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_closing_a_watch_unregisters_it(store: SqliteStore) -> None:
    await store.apply(node("n1"))
    stream = store.watch(0)
    await anext(stream)
    assert store.watch_count() == 1
    await stream.aclose()
    assert store.watch_count() == 0
    with pytest.raises(StopAsyncIteration):
        await anext(stream)

    async def first_event() -> int:
        async for event in store.watch(0):
            return event.rv  # leaves the loop without aclose()
        raise AssertionError("no event")

    assert await first_event() == 1
    assert store.watch_count() == 0


async def test_store_close_ends_watches(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "s.db")
    await store.apply(node("n1"))
    stream = store.watch(0)
    await anext(stream)
    waiting = asyncio.ensure_future(anext(stream))  # will wait for a live event
    await store.close()
    with pytest.raises(StopAsyncIteration):
        async with asyncio.timeout(5):
            await waiting
    with pytest.raises(StoreClosed):
        await store.get("Node", None, "n1")
    await store.close()  # twice is fine


# ---------------------------------------------------------------- the file


async def test_reopen_keeps_objects_history_and_counter(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore.open(path)
    created, _ = await store.apply(node("n1", labels={"a": "b"}))
    await store.update_status("Node", None, "n1", {"capacity": {"cpu": "4"}})
    await store.apply(probe("p1", "ns1"))
    await store.close()

    store = SqliteStore.open(path)
    assert store.current_rv() == 3
    again = await store.get("Node", None, "n1")
    assert again["metadata"]["uid"] == created["metadata"]["uid"]
    assert again["status"] == {"capacity": {"cpu": "4"}}
    assert [e.rv for e in await collect(store.watch(1), 2)] == [2, 3]
    assert rv_of((await store.apply(node("n2")))[0]) == 4
    await store.close()


async def test_second_open_of_the_same_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore.open(path)
    with pytest.raises(StoreLocked) as caught:
        SqliteStore.open(path)
    assert str(path) in caught.value.message
    await store.close()
    await SqliteStore.open(path).close()  # the lock is free again


async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not an sqlite database, " * 200)
    with pytest.raises(StoreCorrupt) as caught:
        SqliteStore.open(path)
    assert str(path) in caught.value.message
    # The failed open released the lock and left the file alone.
    assert path.read_bytes().startswith(b"this is not")
    with pytest.raises(StoreCorrupt):
        SqliteStore.open(path)


WRITER = """
import asyncio, sys
from pathlib import Path
from cloudcore.store.sqlite import SqliteStore

async def main() -> None:
    store = SqliteStore.open(Path(sys.argv[1]))
    i = 0
    while True:
        obj = {"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": f"n{i}", "labels": {"i": str(i)}}, "spec": {}}
        stored, _ = await store.apply(obj)
        print(stored["metadata"]["name"], stored["metadata"]["resourceVersion"], flush=True)
        i += 1

asyncio.run(main())
"""


async def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, str(path), cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    acknowledged: dict[str, int] = {}

    def record(line: str) -> None:
        name, rv = line.split()
        acknowledged[name] = int(rv)

    try:
        async with asyncio.timeout(30):
            while len(acknowledged) < 300:
                line = await proc.stdout.readline()
                if not line:
                    _, err = await proc.communicate()
                    raise AssertionError(f"the writer exited early: {err.decode()}")
                record(line.decode())
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: it is still writing
        rest, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    for printed in rest.decode().splitlines():  # printed before the kill landed
        record(printed)

    store = SqliteStore.open(path)
    items, current = await store.list("Node")
    stored = {o["metadata"]["name"]: rv_of(o) for o in items}
    assert current >= max(acknowledged.values())
    for name, acked_rv in acknowledged.items():
        assert stored.get(name) == acked_rv, name
    await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()


async def test_a_full_store_refuses_writes_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore.open(path, history_limit=3, max_db_bytes=96 * 1024)
    padding = "x" * 3000
    written = 0
    with pytest.raises(StoreFull) as caught:
        for i in range(100):
            await store.apply(probe(f"p{i}", spec={"padding": padding}))
            written += 1
    assert caught.value.message.startswith("store is full (cap 98304 bytes): ")
    assert 5 < written < 100
    before_rv = store.current_rv()
    before_items, _ = await store.list(PROBE)
    assert len(before_items) == written
    with pytest.raises(NotFound):
        await store.get(PROBE, "default", f"p{written}")
    with pytest.raises(StoreFull):
        await store.update_status(PROBE, "default", "p0", {"padding": padding * 4})
    assert store.current_rv() == before_rv
    assert (await store.list(PROBE))[0] == before_items

    # Deletes are always allowed, so a full store can be emptied and written again.
    for i in range(3):
        await store.delete(PROBE, "default", f"p{i}")
    await store.apply(probe("after-delete", spec={"padding": padding}))
    await store.close()

    reopened = SqliteStore.open(path)
    assert reopened.current_rv() == before_rv + 4
    await reopened.close()


async def test_store_close_during_replay_ends_the_watch(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "s.db")
    for i in range(3):
        await store.apply(node(f"n{i}"))
    stream = store.watch(0)
    assert (await anext(stream)).rv == 1
    await store.close()
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    with pytest.raises(StoreClosed):
        await anext(store.watch(0))
