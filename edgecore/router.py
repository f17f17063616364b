"""The edge half of KubeEdge's router.

Upstream: edgecore subscribes on its MQTT broker to ``$hw/events/upload/#`` and to the
topic of every rule whose eventbus source names this node (the cloud sends those
Rules, with their RuleEndpoints, like any other object).  Each message is written to
the outbox as a ``message`` envelope, so a message published while the cloud is away
leaves when it returns.  The cloud decides which rules it feeds.

Downstream: a ``publish`` envelope from the cloud is published on the broker
(eventbus target) or sent to an HTTP service on 127.0.0.1 (servicebus target; off
unless enabled, as in KubeEdge), and answered with the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from edgecore.meta import CacheWatch, MetaCache
from protocol import envelope as wire
from protocol.errors import BadGateway, BadRequest, GatewayTimeout, TooLarge, Unavailable
from protocol.kinds.rules import RuleEndpointType
from protocol.routes import (
    UPLOAD_FILTER,
    InvalidRoute,
    decode_payload,
    encode_payload,
    normalize_path,
    resolve_route,
)
from protocol.topics import filter_matches

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], Awaitable[None]]
Subscribe = Callable[[str, Handler], Awaitable[None]]
Unsubscribe = Callable[[str], Awaitable[None]]
Publish = Callable[[str, bytes], Awaitable[None]]
SendMessage = Callable[[dict[str, Any]], None]

ROUTER_KINDS = frozenset({"Rule", "RuleEndpoint"})


class EdgeRouter:
    def __init__(self, node: str, cache: MetaCache, *, subscribe: Subscribe,
                 unsubscribe: Unsubscribe, publish: Publish, send_message: SendMessage,
                 max_payload_bytes: int, servicebus: bool = False,
                 servicebus_timeout: float = 60.0) -> None:
        self._node = node
        self._cache = cache
        self._subscribe = subscribe
        self._unsubscribe = unsubscribe
        self._publish = publish
        self._send_message = send_message
        self._max_payload = max_payload_bytes
        self._servicebus = servicebus
        self._servicebus_timeout = servicebus_timeout
        self._filters: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.forwarded = 0
        self.dropped_oversized = 0

    @property
    def filters(self) -> frozenset[str]:
        return frozenset(self._filters)

    async def start(self) -> None:
        watch = self._cache.subscribe()
        await self._refresh()
        self._task = asyncio.create_task(self._follow(watch), name="edge-router")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # ---- which topics go up ---------------------------------------------------------------

    async def _follow(self, watch: CacheWatch) -> None:
        while True:
            async for event in watch:
                if event.object.get("kind") in ROUTER_KINDS:
                    await self._refresh()
            # The watch fell behind (or the cache closed): look again from scratch.
            watch = self._cache.subscribe()
            await self._refresh()

    def _wanted_filters(self) -> set[str]:
        wanted = {UPLOAD_FILTER}
        endpoints: dict[str, dict[str, dict[str, Any]]] = {}
        for rule in self._cache.list("Rule"):
            ns = rule["metadata"]["namespace"]
            if ns not in endpoints:
                endpoints[ns] = {e["metadata"]["name"]: e
                                 for e in self._cache.list("RuleEndpoint", ns)}
            try:
                route = resolve_route(rule, endpoints[ns])
            except (InvalidRoute, KeyError, ValueError):
                continue  # the cloud says why in the rule's status
            if route.source is RuleEndpointType.EVENTBUS and route.source_node == self._node:
                wanted.add(route.source_topic)
        return wanted

    async def _refresh(self) -> None:
        wanted = self._wanted_filters()
        for topic_filter in sorted(wanted - self._filters):
            await self._subscribe(topic_filter, self._handler_for(topic_filter))
            self._filters.add(topic_filter)
            log.info("router: forwarding MQTT %s to the cloud", topic_filter)
        for topic_filter in sorted(self._filters - wanted):
            await self._unsubscribe(topic_filter)
            self._filters.discard(topic_filter)
            log.info("router: no longer forwarding MQTT %s", topic_filter)

    def _handler_for(self, topic_filter: str) -> Handler:
        async def handle(topic: str, payload: bytes) -> None:
            # Overlapping filters each see the message; only the first one forwards it.
            first = min((f for f in self._filters if filter_matches(f, topic)), default=None)
            if first == topic_filter:
                self.forward(topic, payload)

        return handle

    def forward(self, topic: str, payload: bytes) -> None:
        if len(payload) > self._max_payload:
            self.dropped_oversized += 1
            log.warning("router: a %d-byte message on %s exceeds the %d-byte limit of the "
                        "cloud link; not forwarded", len(payload), topic, self._max_payload)
            return
        text, encoding = encode_payload(payload)
        self._send_message(wire.MessageBody(
            topic=topic, payload=text, encoding=encoding, ts=int(time.time() * 1000),
        ).model_dump(mode="json"))
        self.forwarded += 1

    # ---- messages from the cloud ------------------------------------------------------------

    async def deliver(self, body: wire.PublishBody) -> dict[str, Any] | None:
        """Carry out a ``publish``; the result is the ack's body (None for eventbus)."""
        payload = decode_payload(body.payload, body.encoding)
        if body.target == "eventbus":
            if not body.topic:
                raise BadRequest("an eventbus publish needs a topic", field="body.topic")
            await self._publish(body.topic, payload)
            return None
        if not self._servicebus:
            raise Unavailable(f"the servicebus is disabled on node {self._node} (start edgecore "
                              "with --servicebus to deliver rule messages to local services)")
        if body.port is None or body.path is None:
            raise BadRequest("a servicebus publish needs port and path", field="body.port")
        return await self._call_service(body, payload)

    async def _call_service(self, body: wire.PublishBody, payload: bytes) -> dict[str, Any]:
        import httpx  # only a node with the servicebus enabled pays for it

        url = f"http://127.0.0.1:{body.port}{normalize_path(body.path or '/')}"
        headers = {"Content-Type": body.content_type} if body.content_type else {}
        try:
            async with httpx.AsyncClient(timeout=self._servicebus_timeout) as client:
                response = await client.request(body.method, url, content=payload,
                                                headers=headers)
        except httpx.TimeoutException:
            raise GatewayTimeout(f"{url} did not answer within "
                                 f"{self._servicebus_timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise BadGateway(f"{url}: {type(exc).__name__}: {exc}") from None
        if len(response.content) > self._max_payload:
            raise TooLarge(f"{url} answered with {len(response.content)} bytes, more than "
                           f"the {self._max_payload}-byte limit of the cloud link")
        text, encoding = encode_payload(response.content)
        return wire.DeliveryBody(
            status=response.status_code, content_type=response.headers.get("content-type"),
            payload=text, encoding=encoding,
        ).model_dump(exclude_none=True)
