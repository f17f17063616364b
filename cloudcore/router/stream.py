"""Messages from the edges, as a stream any API client can watch.

Every message an edge forwards (on a rule's topic or on ``$hw/events/upload/#``) is
offered to each open stream.  A stream is a bounded queue: a client that reads too
slowly loses the oldest messages (counted and said in the stream) instead of making
the cloud hold an unbounded backlog.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from protocol.topics import filter_matches


@dataclass(frozen=True)
class StreamFilter:
    node: str | None = None
    topic: str | None = None  # an MQTT topic filter
    rule: str | None = None   # namespace/name

    def accepts(self, message: dict[str, Any]) -> bool:
        if self.node is not None and message["node"] != self.node:
            return False
        if self.topic is not None and not filter_matches(self.topic, message["topic"]):
            return False
        return self.rule is None or self.rule in message["rules"]


class _Subscriber:
    def __init__(self, filt: StreamFilter, maxsize: int) -> None:
        self.filter = filt
        self.queue: deque[dict[str, Any]] = deque(maxlen=maxsize)
        self.dropped = 0
        self.wake = asyncio.Event()

    def offer(self, message: dict[str, Any]) -> None:
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1
        self.queue.append(message)
        self.wake.set()


class MessageStream:
    def __init__(self, per_client: int = 1000) -> None:
        self._per_client = per_client
        self._subscribers: set[_Subscriber] = set()
        self.published = 0

    def publish(self, message: dict[str, Any]) -> None:
        self.published += 1
        for sub in self._subscribers:
            if sub.filter.accepts(message):
                sub.offer(message)

    @property
    def watchers(self) -> int:
        return len(self._subscribers)

    async def lines(self, filt: StreamFilter) -> AsyncIterator[bytes]:
        """One JSON object per line: first ``{"type": "WATCHING"}`` once the
        subscription is in place (so a client knows nothing after it is missed), then
        ``MESSAGE`` for every accepted message and ``DROPPED`` when it read too slowly."""
        sub = _Subscriber(filt, self._per_client)
        self._subscribers.add(sub)
        reported = 0
        try:
            yield _line({"type": "WATCHING"})
            while True:
                await sub.wake.wait()
                sub.wake.clear()
                if sub.dropped > reported:
                    yield _line({"type": "DROPPED", "count": sub.dropped - reported})
                    reported = sub.dropped
                while sub.queue:
                    yield _line({"type": "MESSAGE", "message": sub.queue.popleft()})
        finally:
            self._subscribers.discard(sub)


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()
