"""Following the store: watch from a resourceVersion, re-list when the watch falls
behind the store's history (Gone) or fails, and go on.  Shared by every in-memory copy
the cloud keeps (the dispatcher, the apps informer)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from cloudcore.store.base import Store, WatchEvent
from protocol.errors import Gone

log = logging.getLogger(__name__)


async def follow_store(
    store: Store, kinds: frozenset[str], *, rv: Callable[[], int],
    on_event: Callable[[WatchEvent], None], relist: Callable[[], Awaitable[None]],
    what: str, retry_seconds: float = 1.0,
) -> None:
    """Run until cancelled; ``rv()`` is where each new watch starts."""
    while True:
        try:
            async for event in store.watch(rv(), kinds):
                on_event(event)
        except Gone:
            log.warning("%s fell behind the store's history; re-listing", what)
            await relist()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s watch failed; re-listing in %.0f s", what, retry_seconds)
            await asyncio.sleep(retry_seconds)
            await relist()
