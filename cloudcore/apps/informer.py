"""An in-memory copy of the objects of a few kinds, kept current by list + watch.

The controller reads its snapshot from here rather than from the store, so a reconcile
costs no store reads.  The copy follows the store's watch from the resourceVersion of
its list; when the watch has fallen behind the store's history (Gone) it lists again.
``on_change`` runs after every change that reached the copy (and after each re-list).

A controller that writes and then reconciles again must see its own writes first:
:meth:`Informer.wait_for` waits until the copy has caught up with a resourceVersion.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from cloudcore.store.base import Store, WatchEvent
from cloudcore.store.follow import follow_store
from protocol.events import EventType
from protocol.resources import ObjectKey, key_of, resource_version

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
"""How long to wait before re-listing after an unexpected watch failure."""


class Informer:
    def __init__(self, store: Store, kinds: Iterable[str],
                 on_change: Callable[[], None] | None = None) -> None:
        self._store = store
        self._kinds = frozenset(kinds)
        self._on_change = on_change
        self._cache: dict[str, dict[ObjectKey, dict[str, Any]]] = {k: {} for k in self._kinds}
        self._rv = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def rv(self) -> int:
        """The store resourceVersion the copy is current with."""
        return self._rv

    async def start(self) -> None:
        await self._relist()
        self._task = asyncio.create_task(self._follow(), name="apps-informer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for _, waiter in self._waiters:
            waiter.cancel()
        self._waiters.clear()

    def objects(self, kind: str) -> list[dict[str, Any]]:
        """The cached objects of ``kind``, sorted by key.  Do not modify them."""
        held = self._cache[kind]
        return [held[k] for k in sorted(held)]

    async def wait_for(self, rv: int) -> None:
        """Return once the copy is current with ``rv`` (bound it with a timeout)."""
        if self._rv >= rv:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (rv, waiter)
        self._waiters.append(entry)
        try:
            await waiter
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    # ---- following the store ---------------------------------------------------------

    async def _relist(self) -> None:
        rv = self._store.current_rv()
        for kind in sorted(self._kinds):
            items, _ = await self._store.list(kind)
            self._cache[kind] = {key_of(obj): obj for obj in items}
        self._advance(rv)
        self._changed()

    async def _follow(self) -> None:
        await follow_store(self._store, self._kinds, rv=lambda: self._rv,
                           on_event=self._on_event, relist=self._relist,
                           what="apps informer", retry_seconds=RETRY_SECONDS)

    def _on_event(self, event: WatchEvent) -> None:
        kind = str(event.object.get("kind"))
        held = self._cache.get(kind)
        if held is not None:
            key = key_of(event.object)
            old = held.get(key)
            if event.type is EventType.DELETED:
                if old is None or resource_version(old) <= event.rv:
                    held.pop(key, None)
            elif old is None or resource_version(old) < resource_version(event.object):
                held[key] = event.object
        self._advance(event.rv)
        self._changed()

    def _advance(self, rv: int) -> None:
        self._rv = max(self._rv, rv)
        for at, waiter in self._waiters:
            if at <= self._rv and not waiter.done():
                waiter.set_result(None)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()
