"""The cloud half of KubeEdge's router.

* REST ingress: a request to ``/router/<node>/<namespace>/<path>`` is matched against
  the namespace's rest-sourced rules and delivered to ``<node>`` with a ``publish``
  envelope — on an MQTT topic (eventbus target) or to a loopback HTTP service
  (servicebus target).  The caller waits for the edge's answer: 200 once the edge
  published the message, the local service's own answer for servicebus, 503 when the
  node is not connected, 504 when it does not answer in time.
* Edge messages (``message`` envelopes, durable in the edge's outbox) go to every
  eventbus-sourced rule of that node whose topic filter matches — POSTed to the rule's
  REST target — and to the message stream.  The edge's outbox entry is acked once
  that is done, whatever the target answered (a failure is counted in the rule's
  status, not retried for ever): at-least-once towards the target, in order per node.

Every delivery counts in its rule's ``status.successMessages``/``failMessages``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from cloudcore.router.counters import RuleCounters
from cloudcore.router.index import RouteIndex
from cloudcore.router.stream import MessageStream
from cloudcore.store.base import WatchEvent
from protocol import envelope as wire
from protocol.envelope import Envelope, Op
from protocol.errors import (
    BadGateway,
    EdgefleetError,
    NotFound,
    RateLimited,
    TooLarge,
    error_from_status,
)
from protocol.events import EventType
from protocol.kinds.rules import RuleEndpointType
from protocol.routes import Encoding, Route, decode_payload, encode_payload

log = logging.getLogger(__name__)

EdgeRequest = Callable[[str, Envelope, float], Awaitable[Envelope]]


class EdgeSession(Protocol):
    """What the router needs of the hub's session for a node."""

    node: str

    async def send(self, env: Envelope) -> None: ...


@dataclass(frozen=True)
class RouterConfig:
    edge_timeout: float = 30.0     # waiting for an edge to answer a publish
    target_timeout: float = 10.0   # a rule's REST target answering
    max_payload_bytes: int = 512 * 1024
    per_node_queue: int = 256      # edge messages waiting for delivery, per node
    status_interval: float = 1.0


@dataclass(frozen=True)
class Reply:
    """What the REST caller gets back."""

    status: int
    body: bytes
    content_type: str


def now_ms() -> int:
    return int(time.time() * 1000)


class Router:
    def __init__(self, request: EdgeRequest, counters: RuleCounters,
                 cfg: RouterConfig | None = None) -> None:
        self._request = request
        self._counters = counters
        self.cfg = cfg or RouterConfig()
        self.index = RouteIndex()
        self.stream = MessageStream()
        self._queues: dict[str, asyncio.Queue[tuple[EdgeSession, Envelope]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._http: httpx.AsyncClient | None = None

    # ---- lifecycle and rules ------------------------------------------------------------

    def load(self, objects: list[dict[str, Any]]) -> None:
        for obj in objects:
            self._note(self.index.upsert(obj))

    def on_store_change(self, event: WatchEvent) -> None:
        """Dispatcher hook: every change of a synced kind (Rules and RuleEndpoints among them)."""
        if event.object.get("kind") not in ("Rule", "RuleEndpoint"):
            return
        if event.type is EventType.DELETED:
            self._note(self.index.delete(event.object))
        else:
            self._note(self.index.upsert(event.object))

    def _note(self, changed: list[tuple[str, str]]) -> None:
        for name in changed:
            error = self.index.error_of(name)
            if error:
                log.warning("rule %s/%s cannot route: %s", *name, error)
            self._counters.route_error(name, error)

    async def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=self.cfg.target_timeout, follow_redirects=False)
        await self._counters.start()

    async def stop(self) -> None:
        for task in self._workers.values():
            task.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
        self._workers.clear()
        await self._counters.stop()
        if self._http is not None:
            await self._http.aclose()

    # ---- REST → edge ----------------------------------------------------------------------

    async def rest_ingress(self, node: str, namespace: str, path: str, method: str,
                           payload: bytes, content_type: str | None) -> Reply:
        routes = self.index.rest_routes(namespace, path)
        if not routes:
            raise NotFound(f"no usable Rule in namespace {namespace!r} has a rest source with "
                           f"path {path!r} (see efctl get rules -n {namespace} -o wide)",
                           field="path")
        if len(payload) > self.cfg.max_payload_bytes:
            raise TooLarge(f"a routed message of {len(payload)} bytes exceeds the limit of "
                           f"{self.cfg.max_payload_bytes}")
        results = await asyncio.gather(
            *(self._deliver_to_edge(route, node, method, payload, content_type)
              for route in routes),
            return_exceptions=True,
        )
        if len(routes) == 1:
            result = results[0]
            if isinstance(result, BaseException):
                raise result
            return result
        summary = []
        for route, result in zip(routes, results, strict=True):
            if isinstance(result, EdgefleetError):
                summary.append({"rule": route.rule, "delivered": False, "code": result.code,
                                "message": result.message})
            elif isinstance(result, BaseException):
                raise result
            else:
                summary.append({"rule": route.rule, "delivered": True, "status": result.status})
        ok = all(item["delivered"] for item in summary)
        return Reply(200 if ok else 502, json.dumps({"deliveries": summary}).encode(),
                     "application/json")

    async def _deliver_to_edge(self, route: Route, node: str, method: str, payload: bytes,
                               content_type: str | None) -> Reply:
        text, encoding = encode_payload(payload)
        if route.target is RuleEndpointType.EVENTBUS:
            body = wire.PublishBody(rule=route.ref, target="eventbus", topic=route.target_topic,
                                    payload=text, encoding=encoding)
        else:
            body = wire.PublishBody(
                rule=route.ref, target="servicebus", port=route.service_port,
                path=route.target_path, method=_method(method), content_type=content_type,
                payload=text, encoding=encoding)
        env = wire.make(Op.PUBLISH, ts=now_ms(), body=body.model_dump(exclude_none=True))
        name = (route.namespace, route.rule)
        try:
            answer = await self._request(node, env, self.cfg.edge_timeout)
            if answer.op is Op.ERROR:
                raise _edge_error(answer)
        except EdgefleetError as exc:
            self._counters.failure(name, f"to node {node}: {exc.message}")
            raise
        self._counters.success(name)
        if route.target is RuleEndpointType.EVENTBUS:
            return Reply(200, json.dumps({
                "rule": route.rule, "node": node, "topic": route.target_topic,
                "delivered": True}).encode(), "application/json")
        delivery = wire.decode_body(answer, wire.DeliveryBody)
        return Reply(delivery.status, decode_payload(delivery.payload, delivery.encoding),
                     delivery.content_type or "application/octet-stream")

    # ---- edge → targets --------------------------------------------------------------------

    async def on_edge_message(self, session: EdgeSession, env: Envelope) -> None:
        """Hub hook for a ``message`` envelope: queue it for this node's worker."""
        wire.decode_body(env, wire.MessageBody)  # refuse a malformed one now, not later
        queue = self._queues.get(session.node)
        if queue is None:
            queue = self._queues[session.node] = asyncio.Queue(self.cfg.per_node_queue)
        worker = self._workers.get(session.node)
        if worker is None or worker.done():
            self._workers[session.node] = asyncio.create_task(
                self._work(queue), name=f"router-{session.node}")
        try:
            queue.put_nowait((session, env))
        except asyncio.QueueFull:
            # The edge keeps it in its outbox and sends it again later.
            raise RateLimited(f"router queue for node {session.node} is full") from None

    async def _work(self, queue: asyncio.Queue[tuple[EdgeSession, Envelope]]) -> None:
        while True:
            session, env = await queue.get()
            try:
                await self._route_message(session.node, wire.decode_body(env, wire.MessageBody))
            except Exception:
                log.exception("routing a message from node %s failed", session.node)
            with contextlib.suppress(Exception):  # a closed link: the edge will resend
                await session.send(wire.make(Op.ACK, ts=now_ms(), parent_id=env.id))

    async def _route_message(self, node: str, msg: wire.MessageBody) -> None:
        routes = self.index.eventbus_routes(node, msg.topic)
        self.stream.publish({
            "node": node, "topic": msg.topic, "rules": [r.ref for r in routes],
            "payload": msg.payload, "encoding": msg.encoding.value, "ts": msg.ts,
        })
        if not routes:
            return
        payload = decode_payload(msg.payload, msg.encoding)
        for route in routes:
            name = (route.namespace, route.rule)
            try:
                await self._post_to_target(route, node, msg.topic, payload, msg.encoding)
                self._counters.success(name)
            except EdgefleetError as exc:
                log.warning("rule %s: delivering a message from node %s failed: %s",
                            route.ref, node, exc.message)
                self._counters.failure(name, exc.message)

    async def _post_to_target(self, route: Route, node: str, topic: str, payload: bytes,
                              encoding: Encoding) -> None:
        assert self._http is not None, "router not started"
        headers = {
            "Content-Type": _content_type(payload, encoding),
            "X-Edgefleet-Node": node,
            "X-Edgefleet-Topic": topic,
            "X-Edgefleet-Rule": route.ref,
        }
        try:
            response = await self._http.post(route.target_url, content=payload, headers=headers)
        except httpx.TimeoutException:
            raise BadGateway(f"{route.target_url} did not answer within "
                             f"{self.cfg.target_timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise BadGateway(f"{route.target_url}: {type(exc).__name__}: {exc}") from None
        if not 200 <= response.status_code < 300:
            raise BadGateway(f"{route.target_url} answered {response.status_code}")


def _edge_error(answer: Envelope) -> EdgefleetError:
    error = wire.decode_body(answer, wire.ErrorBody)
    return error_from_status({"reason": error.reason, "message": error.message,
                              "details": {"field": error.field}})


def _content_type(payload: bytes, encoding: Encoding) -> str:
    if encoding is Encoding.BASE64:
        return "application/octet-stream"
    try:
        json.loads(payload)
        return "application/json"
    except ValueError:
        return "text/plain; charset=utf-8"


def _method(method: str) -> Any:
    # PublishBody validates it; GET/POST/PUT/PATCH/DELETE reach a servicebus target.
    return method.upper()
