"""Downstream dispatch: from store changes to per-node queues.

The dispatcher is the cloud's informer for every kind that is synced to edges: it
lists them once, then follows the store's watch, keeping an in-memory copy and a
:class:`~cloudcore.scope.NodeScope`.  Each change becomes upserts and deletes offered
to the queues of the nodes that are connected; a node that is not connected gets
nothing queued — when it returns, its resync computes exactly what it lacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

from cloudcore.scope import ADDRESSING_RULES, NOWHERE, NodeScope, Transition, addressing_of
from cloudcore.store.base import Store, WatchEvent
from cloudcore.store.follow import follow_store
from protocol.downstream import DownstreamQueue, resync_diff
from protocol.envelope import ObjectRef
from protocol.events import EventType
from protocol.resources import ObjectKey, key_of, resource_version, split_key

log = logging.getLogger(__name__)


def _only_status_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    if old.get("status") == new.get("status"):
        return False
    old_meta = {k: v for k, v in (old.get("metadata") or {}).items() if k != "resourceVersion"}
    new_meta = {k: v for k, v in (new.get("metadata") or {}).items() if k != "resourceVersion"}
    if old_meta != new_meta:
        return False
    rest = set(old) | set(new)
    return all(old.get(k) == new.get(k) for k in rest - {"status", "metadata"})


class NodeLink(Protocol):
    """What the dispatcher needs from a connected node's session."""

    node: str
    queue: DownstreamQueue

    def wake(self) -> None: ...


class Dispatcher:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: dict[ObjectKey, dict[str, Any]] = {}
        # Per key, the version nodes should hold: the newest one that changed more than
        # the status (see _apply_upsert).
        self._delivered_rv: dict[ObjectKey, int] = {}
        self._scope = NodeScope()
        self._links: dict[str, NodeLink] = {}
        self._rv = 0
        self._task: asyncio.Task[None] | None = None
        self._kinds = frozenset(ADDRESSING_RULES)
        self.ready = asyncio.Event()
        self.on_change: list[Callable[[WatchEvent], None]] = []

    @property
    def rv(self) -> int:
        return self._rv

    async def start(self) -> None:
        await self._relist()
        self._task = asyncio.create_task(self._follow(), name="dispatch-watch")
        self.ready.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # ---- following the store ---------------------------------------------------------

    async def _relist(self) -> None:
        rv = self._store.current_rv()
        fresh: dict[ObjectKey, dict[str, Any]] = {}
        for kind in sorted(self._kinds):
            items, _ = await self._store.list(kind)
            for obj in items:
                fresh[key_of(obj)] = obj
        gone = [k for k in self._cache if k not in fresh]
        self._rv = max(self._rv, rv)
        for key in gone:
            self._apply_delete(key, self._rv)
        for key, obj in fresh.items():
            self._apply_upsert(key, obj)

    async def _follow(self) -> None:
        await follow_store(self._store, self._kinds, rv=lambda: self._rv,
                           on_event=self._on_event, relist=self._relist, what="dispatch")

    def _on_event(self, event: WatchEvent) -> None:
        self._rv = max(self._rv, event.rv)
        key = key_of(event.object)
        if event.type is EventType.DELETED:
            held = self._cache.get(key)
            if held is not None and resource_version(held) > event.rv:
                return  # re-created since; the list already saw the newer object
            self._apply_delete(key, event.rv)
        else:
            self._apply_upsert(key, event.object)
        for hook in self.on_change:
            hook(event)

    def _apply_upsert(self, key: ObjectKey, obj: dict[str, Any]) -> None:
        held = self._cache.get(key)
        if held is not None and resource_version(held) >= resource_version(obj):
            return
        self._cache[key] = obj
        if held is not None and _only_status_changed(held, obj):
            # Status is the edge's own account (a Device's twins, a Rule's counters):
            # echoing each write back down would cost every node a frame, an fsync
            # and a cache event per report.  Nodes keep the version of the last change
            # to anything else, which is what desired_for() reports for resyncs.
            return
        self._delivered_rv[key] = resource_version(obj)
        transitions = self._scope.apply(key, addressing_of(obj))
        self._offer_transitions(transitions, skip=key)
        for node in self._scope.nodes_holding(key):
            self._offer_upsert(node, obj)

    def _apply_delete(self, key: ObjectKey, rv: int) -> None:
        self._cache.pop(key, None)
        self._delivered_rv.pop(key, None)
        holders = self._scope.nodes_holding(key)
        transitions = self._scope.apply(key, NOWHERE)
        self._offer_transitions(transitions, skip=key)
        for node in holders:
            self._offer_delete(node, key, rv)

    def _offer_transitions(self, transitions: list[Transition], *, skip: ObjectKey) -> None:
        for t in transitions:
            if t.present:
                obj = self._cache.get(t.key)
                if obj is not None and t.key != skip:
                    self._offer_upsert(t.node, obj)
            else:
                self._offer_evict(t.node, t.key)

    def _offer_upsert(self, node: str, obj: dict[str, Any]) -> None:
        link = self._links.get(node)
        if link is not None and link.queue.offer_upsert(obj):
            link.wake()

    def _offer_evict(self, node: str, key: ObjectKey) -> None:
        """``key`` left ``node``'s scope; if it still exists it may come back unchanged,
        so it is evicted rather than deleted."""
        if key not in self._cache:
            self._offer_delete(node, key, self._rv)
            return
        link = self._links.get(node)
        if link is None:
            return
        kind, namespace, name = split_key(key)
        if link.queue.offer_evict(ObjectRef(kind=kind, namespace=namespace, name=name), self._rv):
            link.wake()

    def _offer_delete(self, node: str, key: ObjectKey, rv: int) -> None:
        link = self._links.get(node)
        if link is None:
            return
        kind, namespace, name = split_key(key)
        if link.queue.offer_delete(ObjectRef(kind=kind, namespace=namespace, name=name), rv):
            link.wake()

    # ---- sessions ----------------------------------------------------------------------

    def objects_of(self, kinds: frozenset[str]) -> list[dict[str, Any]]:
        """The cached objects of ``kinds``: with :attr:`on_change` registered in the same
        step, a consumer sees every object exactly from here on."""
        return [obj for obj in self._cache.values() if obj.get("kind") in kinds]

    def desired_for(self, node: str) -> dict[str, int]:
        return {
            key: self._delivered_rv[key]
            for key in self._scope.keys_for(node)
            if key in self._delivered_rv
        }

    def attach(self, link: NodeLink, holdings: dict[str, int]) -> tuple[int, int]:
        """A node (re)connected and reported its holdings: queue exactly the
        difference.  Returns (upserts, deletes) queued."""
        self._links[link.node] = link
        link.queue.restart(holdings)
        upserts, deletes = resync_diff(holdings, self.desired_for(link.node))
        for key in upserts:
            link.queue.offer_upsert(self._cache[ObjectKey(key)])
        for key in deletes:
            kind, namespace, name = split_key(key)
            ref = ObjectRef(kind=kind, namespace=namespace, name=name)
            # The delete must outrank whatever version the edge holds.
            rv = max(self._rv, holdings.get(key, 0) + 1)
            if ObjectKey(key) in self._cache:
                link.queue.offer_evict(ref, rv)  # still exists, only left this node
            else:
                link.queue.offer_delete(ref, rv)
        link.wake()
        return len(upserts), len(deletes)

    def detach(self, link: NodeLink) -> None:
        if self._links.get(link.node) is link:
            del self._links[link.node]

    def connected(self) -> list[str]:
        return sorted(self._links)
