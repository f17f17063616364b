"""Small helpers the store tests share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from cloudcore.store.base import WatchEvent


def rv_of(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


async def collect(stream: AsyncIterator[WatchEvent], count: int) -> list[WatchEvent]:
    """The next ``count`` events of ``stream``; fails after 10 s without them."""
    out: list[WatchEvent] = []
    async with asyncio.timeout(10):
        while len(out) < count:
            out.append(await anext(stream))
    return out
