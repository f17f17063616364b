"""SqliteStore.write_many against real database files: many writes in one transaction,
each one checked and reported as its single call would be, one resourceVersion and one
watch event per change, and all or nothing when the transaction itself fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import protocol.kinds  # noqa: F401  (registers Node)
from cloudcore.store.base import Apply, Create, Delete, UpdateStatus
from cloudcore.store.sqlite import SqliteStore
from protocol.errors import AlreadyExists, Conflict, InvalidObject, NotFound, StoreFull
from protocol.events import EventType
from protocol.resources import validate_object
from tests.integration.store.storetools import collect, rv_of


def node(name: str, *, labels: dict[str, str] | None = None,
         spec: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels is not None:
        meta["labels"] = labels
    return validate_object({"apiVersion": "v1", "kind": "Node", "metadata": meta,
                            "spec": spec or {}})[1]


async def test_a_batch_commits_every_write_with_its_own_version_and_event(
        store: SqliteStore) -> None:
    await store.apply(node("old"))
    watch = store.watch(store.current_rv())
    results = await store.write_many([
        Create(node("a", labels={"site": "x"})),
        Create(node("b")),
        UpdateStatus("Node", None, "a", {"capacity": {"cpu": "2"}}),
        Apply(node("b", labels={"site": "y"})),
        Delete("Node", None, "old"),
    ])
    assert not [r for r in results if isinstance(r, Exception)]
    assert [rv_of(r) for r in results if isinstance(r, dict)] == [2, 3, 4, 5, 6]
    assert store.current_rv() == 6

    events = await collect(watch, 5)
    assert [(e.type, e.object["metadata"]["name"], e.rv) for e in events] == [
        (EventType.ADDED, "a", 2), (EventType.ADDED, "b", 3), (EventType.MODIFIED, "a", 4),
        (EventType.MODIFIED, "b", 5), (EventType.DELETED, "old", 6)]
    # Later writes of the batch saw the earlier ones.
    a = await store.get("Node", None, "a")
    assert a["status"] == {"capacity": {"cpu": "2"}}
    assert a["metadata"]["labels"] == {"site": "x"}
    assert (await store.get("Node", None, "b"))["metadata"]["labels"] == {"site": "y"}
    with pytest.raises(NotFound):
        await store.get("Node", None, "old")
    # The history replays the batch exactly as it happened, too.
    assert [(e.type, e.rv) for e in await collect(store.watch(1), 5)] == [
        (e.type, e.rv) for e in events]


async def test_a_refused_write_takes_its_place_in_the_results_and_the_rest_go_ahead(
        store: SqliteStore) -> None:
    existing, _ = await store.apply(node("taken"))
    results = await store.write_many([
        Create(node("taken")),
        Create(node("fresh")),
        UpdateStatus("Node", None, "missing", {"capacity": {}}),
        Delete("Node", None, "taken", expected_rv=rv_of(existing) + 100),
        Create({**node("odd"), "spec": {"when": float("nan")}}),
        UpdateStatus("Node", None, "fresh", {"capacity": {"cpu": "1"}}),
    ])
    assert isinstance(results[0], AlreadyExists)
    assert isinstance(results[2], NotFound)
    assert isinstance(results[3], Conflict)
    assert isinstance(results[4], InvalidObject)
    fresh, status = results[1], results[5]
    assert isinstance(fresh, dict) and isinstance(status, dict)
    assert (rv_of(fresh), rv_of(status)) == (2, 3)  # consecutive: refusals take no version
    assert store.current_rv() == 3
    assert await store.get("Node", None, "taken") == existing
    with pytest.raises(NotFound):
        await store.get("Node", None, "odd")


async def test_an_apply_that_changes_nothing_takes_no_version(store: SqliteStore) -> None:
    stored, _ = await store.apply(node("same", labels={"k": "v"}))
    [result] = await store.write_many([Apply(node("same", labels={"k": "v"}))])
    assert result == stored
    assert store.current_rv() == rv_of(stored)
    assert await store.write_many([]) == []


async def test_a_batch_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore.open(path)
    await store.write_many([Create(node(f"n{i}")) for i in range(50)])
    await store.close()

    reopened = SqliteStore.open(path)
    items, rv = await reopened.list("Node")
    assert [i["metadata"]["name"] for i in items] == sorted(f"n{i}" for i in range(50))
    assert rv == 50
    assert len(await collect(reopened.watch(0), 50)) == 50
    await reopened.close()


async def test_a_batch_that_would_overfill_the_store_writes_nothing(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "s.db", max_db_bytes=96 * 1024)
    watch = store.watch(0)
    padding = "x" * 3000

    def padded(name: str) -> dict[str, Any]:
        return validate_object({"apiVersion": "v1", "kind": "Node", "spec": {},
                                "metadata": {"name": name, "annotations": {"pad": padding}}})[1]

    with pytest.raises(StoreFull):
        await store.write_many([Create(padded(f"n{i}")) for i in range(100)])
    assert store.current_rv() == 0
    assert await store.list("Node") == ([], 0)
    # Nothing reached the watcher: the next event it sees is the next real write.
    await store.apply(node("after"))
    [event] = await collect(watch, 1)
    assert (event.rv, event.object["metadata"]["name"]) == (1, "after")
    await store.close()
