"""``?watch=true``: a change stream, one JSON event per line.

Without a resourceVersion the stream opens with an ADDED event for every object
that exists now (from one consistent list) and continues with every change after
that list; with ``resourceVersion=N`` it carries every change after N.  History the
store has compacted away ends the stream with one ERROR event holding a 410 Status,
which tells the client to list again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse

from cloudcore.store.base import Store
from protocol.errors import Gone
from protocol.resources import KindInfo
from protocol.selectors import Selector

log = logging.getLogger(__name__)

WATCH_MEDIA_TYPE = "application/x-ndjson"


def _line(event_type: str, obj: dict[str, Any]) -> bytes:
    return (json.dumps({"type": event_type, "object": obj}, separators=(",", ":")) + "\n").encode()


def _selected(
    obj: dict[str, Any], kind: KindInfo, namespace: str | None, selector: Selector | None,
) -> bool:
    if obj.get("kind") != kind.kind:
        return False
    meta = obj.get("metadata") or {}
    if namespace is not None and meta.get("namespace") != namespace:
        return False
    return selector is None or selector.matches(meta.get("labels") or {})


async def watch_events(
    store: Store, kind: KindInfo, namespace: str | None, selector: Selector | None,
    from_rv: int | None,
) -> AsyncIterator[bytes]:
    try:
        if from_rv is None:
            items, from_rv = await store.list(kind.kind, namespace, selector)
            for obj in items:
                yield _line("ADDED", obj)
        events = store.watch(from_rv, frozenset({kind.kind}))
        try:
            async for event in events:
                if _selected(event.object, kind, namespace, selector):
                    yield _line(event.type.value, event.object)
        finally:
            # Release the store's subscription now (client gone, or Gone), not at GC.
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
    except Gone as exc:
        yield _line("ERROR", exc.to_status())


def watch_response(
    store: Store, kind: KindInfo, namespace: str | None, selector: Selector | None,
    from_rv: int | None,
) -> StreamingResponse:
    return StreamingResponse(
        watch_events(store, kind, namespace, selector, from_rv),
        media_type=WATCH_MEDIA_TYPE,
        # Proxies must pass each event on as it comes rather than buffer the stream.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
