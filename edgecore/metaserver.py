"""A read-only, loopback-only HTTP API over the node's cached objects.

Local apps that would otherwise ask the cloud (and fail while it is away) read the same
objects from here, at the same paths as the cloud API::

    GET /api/v1/PLURAL[/NAME]                                  core, cluster-scoped or all ns
    GET /api/v1/namespaces/NS/PLURAL[/NAME]
    GET /apis/GROUP/VERSION/PLURAL[/NAME]
    GET /apis/GROUP/VERSION/namespaces/NS/PLURAL[/NAME]
        ?labelSelector=…   filter a list or watch
        ?watch=true        ADDED for what matches now, then live events, one JSON
                           object per line (chunked), until either side goes away
    GET /healthz

Everything else is refused with a Kubernetes ``Status`` body: 405 for other methods,
404 for unknown paths or objects, 400 for malformed requests or selectors.

The HTTP/1.1 server is written by hand on ``asyncio.start_server`` to keep edgecore's
memory small.  It is deliberately strict and simple: the request head must arrive
within a timeout and fit in :data:`MAX_HEAD` bytes, request bodies are refused, and the
connection closes after every response (watches close when they end).  Garbage input
gets a 400 and never reaches beyond the connection that sent it.

It refuses to listen anywhere but loopback unless ``allow_remote=True``: the objects
include everything the cloud sends this node, and there is no authentication here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

import protocol.kinds  # noqa: F401  (registers every kind, so their paths resolve)
from edgecore.meta import DEFAULT_WATCH_QUEUE, CacheEvent, MetaCache, labels_of
from protocol.errors import BadRequest, EdgefleetError, NotFound
from protocol.events import EventType
from protocol.resources import REGISTRY, KindInfo
from protocol.selectors import Selector, parse_selector

log = logging.getLogger(__name__)

MAX_HEAD = 8192
HEAD_TIMEOUT = 10.0
MAX_CONNECTIONS = 64
WRITE_TIMEOUT = 30.0
# After answering, how long we keep reading (and discarding) what the client still
# sends, so that closing with unread input does not reset the connection before the
# client has read our response.
LINGER_TIMEOUT = 1.0
LINGER_BYTES = 65536

_METHOD = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HEADER_NAME = _METHOD
_REASONS = {
    200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 503: "Service Unavailable",
}


class MethodNotAllowed(EdgefleetError):
    reason = "MethodNotAllowed"
    code = 405


class RequestTimeout(EdgefleetError):
    reason = "Timeout"
    code = 408


class HeadTooLarge(EdgefleetError):
    reason = "RequestHeaderFieldsTooLarge"
    code = 431


class Unavailable(EdgefleetError):
    reason = "ServiceUnavailable"
    code = 503


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    """What a path names: a kind, optionally one namespace, optionally one object."""

    info: KindInfo
    namespace: str | None
    name: str | None

    def covers(self, obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        if obj.get("kind") != self.info.kind:
            return False
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return self.name is None or meta.get("name") == self.name


class MetaServer:
    # Allowed in the Allow header of a 405.
    METHODS: ClassVar[str] = "GET"

    def __init__(self, cache: MetaCache, host: str, port: int, *,
                 allow_remote: bool = False, head_timeout: float = HEAD_TIMEOUT,
                 watch_queue: int = DEFAULT_WATCH_QUEUE) -> None:
        if not allow_remote and not is_loopback(host):
            raise ValueError(
                f"metaserver refuses to listen on {host!r}: it serves this node's objects "
                "without authentication, so it binds only to a loopback address such as "
                "127.0.0.1 (pass allow_remote=True to override)"
            )
        self._cache = cache
        self._host = host
        self._port = port
        self._head_timeout = head_timeout
        # Events one watch may have waiting while its client is slow to read; beyond
        # that the watch ends and the client re-lists (the cache never waits for it).
        self._watch_queue = watch_queue
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._on_connection, self._host, self._port, limit=MAX_HEAD,
        )
        log.info("metaserver listening on http://%s:%d", self._host, self.bound_port)

    @property
    def bound_port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("metaserver is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    # -- one connection -----------------------------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            if len(self._connections) > MAX_CONNECTIONS:
                await self._respond_error(writer, Unavailable("too many connections"))
            else:
                await self._serve(reader, writer)
            await _linger(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing to tell it
        except asyncio.CancelledError:
            pass  # the server is stopping
        except Exception:
            log.exception("metaserver connection failed")
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await self._read_request(reader)
        except EdgefleetError as exc:
            await self._respond_error(writer, exc)
            return
        if request is None:
            return  # connected and closed without a word
        try:
            await self._dispatch(request, reader, writer)
        except EdgefleetError as exc:
            await self._respond_error(writer, exc)

    async def _read_request(self, reader: asyncio.StreamReader) -> Request | None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._head_timeout)
        except TimeoutError:
            raise RequestTimeout(
                f"the request head did not arrive within {self._head_timeout:g}s") from None
        except asyncio.LimitOverrunError:
            raise HeadTooLarge(f"the request head is larger than {MAX_HEAD} bytes") from None
        except asyncio.IncompleteReadError as exc:
            if not exc.partial.strip():
                return None
            raise BadRequest("the request head ended before its blank line") from None
        return parse_head(head)

    async def _dispatch(self, request: Request, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        if request.method != "GET":
            raise MethodNotAllowed(f"the metaserver is read-only; {request.method} is not "
                                   "allowed (only GET)")
        if "transfer-encoding" in request.headers or request.headers.get(
                "content-length", "0").strip() not in ("", "0"):
            raise BadRequest("a GET request must not carry a body")
        parts = urlsplit(request.target)
        query = _parse_query(parts.query)
        path = parts.path
        if path in ("/healthz", "/readyz", "/livez"):
            await self._respond(writer, 200, b"ok", "text/plain; charset=utf-8")
            return
        route = resolve_path(path)
        selector = _selector(query)
        if query.get("fieldSelector"):
            raise BadRequest("fieldSelector is not supported by the metaserver")
        if query.get("watch", "").lower() in ("true", "1"):
            await self._watch(route, selector, request, reader, writer)
            return
        if route.name is not None:
            obj = self._cache.get(route.info.kind, route.namespace, route.name)
            if obj is None:
                raise NotFound(f'{route.info.plural} "{route.name}" not found')
            await self._respond_json(writer, 200, obj)
            return
        items = self._cache.list(route.info.kind, route.namespace, selector)
        await self._respond_json(writer, 200, {
            "apiVersion": route.info.api_version,
            "kind": f"{route.info.kind}List",
            "metadata": {},
            "items": items,
        })

    async def _watch(self, route: Route, selector: Selector | None, request: Request,
                     reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # subscribe() and list() are synchronous and applies happen on this same loop,
        # so no change can fall between the snapshot and the first live event.
        watch = self._cache.subscribe(kind=route.info.kind, maxsize=self._watch_queue)
        try:
            if route.name is not None:
                one = self._cache.get(route.info.kind, route.namespace, route.name)
                current = [one] if one is not None else []
                current = [o for o in current if _matches(selector, o)]
            else:
                current = self._cache.list(route.info.kind, route.namespace, selector)
            chunked = request.version == "HTTP/1.1"
            send = _chunk_sender(writer) if chunked else _raw_sender(writer)
            head = ["HTTP/1.1 200 OK", "Content-Type: application/json",
                    "Cache-Control: no-cache, private", "Connection: close"]
            if chunked:
                head.append("Transfer-Encoding: chunked")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("ascii"))
            for obj in current:
                await send(_event_line(EventType.ADDED, obj))
            # Stop when the client hangs up: it sends nothing more on a watch, so any
            # read completing (EOF or stray bytes) means it is done with us.
            hangup = asyncio.ensure_future(reader.read(1))

            def hung_up(task: asyncio.Future[bytes]) -> None:
                if not task.cancelled():
                    task.exception()  # a reset is just another way of leaving
                watch.close()

            hangup.add_done_callback(hung_up)
            try:
                async for event in watch:
                    translated = translate(event, route, selector)
                    if translated is not None:
                        await send(_event_line(*translated))
                client_gone = hangup.done()
            finally:
                hangup.cancel()
            # The watch ended on our side (the cache closed, or this watcher fell too
            # far behind): end the stream cleanly so the client knows to re-list.
            if chunked and not client_gone:
                writer.write(b"0\r\n\r\n")
                await _drain(writer)
        finally:
            watch.close()

    # -- responses ----------------------------------------------------------------------

    async def _respond_error(self, writer: asyncio.StreamWriter, exc: EdgefleetError) -> None:
        extra = {"Allow": self.METHODS} if isinstance(exc, MethodNotAllowed) else {}
        await self._respond_json(writer, exc.code, exc.to_status(), extra)

    async def _respond_json(self, writer: asyncio.StreamWriter, code: int, body: Any,
                            extra: dict[str, str] | None = None) -> None:
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        await self._respond(writer, code, data, "application/json", extra)

    async def _respond(self, writer: asyncio.StreamWriter, code: int, data: bytes,
                       content_type: str, extra: dict[str, str] | None = None) -> None:
        lines = [f"HTTP/1.1 {code} {_REASONS.get(code, 'Error')}",
                 f"Content-Type: {content_type}", f"Content-Length: {len(data)}",
                 "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + data)
        await _drain(writer)


# -- request parsing (pure) -------------------------------------------------------------

def parse_head(head: bytes) -> Request:
    """Parse a request line and headers (``head`` ends with the blank line)."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest("the request head must be ASCII") from None
    lines = text[:-4].split("\r\n")
    # RFC 9112 lets a server ignore empty lines before the request line.
    while lines and lines[0] == "":
        lines.pop(0)
    if not lines:
        raise BadRequest("empty request")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise BadRequest("malformed request line: expected METHOD TARGET HTTP/1.x")
    method, target, version = parts
    if not _METHOD.fullmatch(method):
        raise BadRequest("malformed request line: bad method")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(f"unsupported protocol version {version!r}")
    if not target.startswith("/") or any(c <= " " or c == "\x7f" for c in target):
        raise BadRequest("the request target must be an absolute path")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _HEADER_NAME.match(name):
            raise BadRequest("malformed header line")
        key = name.lower()
        value = value.strip(" \t")
        if key in headers:
            if key in ("content-length", "transfer-encoding", "host"):
                raise BadRequest(f"repeated {name} header")
            headers[key] += ", " + value
        else:
            headers[key] = value
    return Request(method, target, version, headers)


def _parse_query(query: str) -> dict[str, str]:
    try:
        parsed = parse_qs(query, keep_blank_values=True, strict_parsing=False,
                          max_num_fields=32)
    except ValueError as exc:
        raise BadRequest(f"malformed query string: {exc}") from None
    return {k: v[-1] for k, v in parsed.items()}


def _selector(query: dict[str, str]) -> Selector | None:
    text = query.get("labelSelector")
    if not text:
        return None
    selector = parse_selector(text)
    return None if selector.empty else selector


def resolve_path(path: str) -> Route:
    """Map an API path onto a kind, namespace and name; :class:`NotFound` otherwise."""
    raw = path.strip("/").split("/")
    segments = [unquote(s) for s in raw]
    if any(not s or "/" in s for s in segments):
        raise NotFound(f"the server could not find the requested resource {path!r}")
    if segments[0] == "api" and len(segments) >= 3:
        group, version, rest = "", segments[1], segments[2:]
    elif segments[0] == "apis" and len(segments) >= 4:
        group, version, rest = segments[1], segments[2], segments[3:]
    else:
        raise NotFound(f"the server could not find the requested resource {path!r}")
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    if len(rest) > 2:
        raise NotFound(f"the server could not find the requested resource {path!r}")
    info = REGISTRY.by_path(group, version, rest[0])
    if namespace is not None and not info.namespaced:
        raise NotFound(f"{info.kind} is cluster-scoped; it has no namespaced path")
    name = rest[1] if len(rest) == 2 else None
    if name is not None and info.namespaced and namespace is None:
        raise NotFound(f"{info.kind} is namespaced; get it at "
                       f"{info.object_path('NAMESPACE', name)}")
    return Route(info, namespace, name)


# -- watch helpers ----------------------------------------------------------------------

def _matches(selector: Selector | None, obj: dict[str, Any]) -> bool:
    return selector is None or selector.matches(labels_of(obj))


def translate(event: CacheEvent, route: Route,
              selector: Selector | None) -> tuple[EventType, dict[str, Any]] | None:
    """What a client watching ``route`` with ``selector`` should see for ``event``.

    As in Kubernetes, an object that starts matching a label-filtered watch arrives as
    ADDED and one that stops matching leaves as DELETED."""
    if not route.covers(event.object):
        return None
    now = _matches(selector, event.object)
    if event.type is not EventType.MODIFIED or event.previous is None:
        return (event.type, event.object) if now else None
    before = _matches(selector, event.previous)
    if now and before:
        return EventType.MODIFIED, event.object
    if now:
        return EventType.ADDED, event.object
    if before:
        return EventType.DELETED, event.object
    return None


def _event_line(kind: EventType, obj: dict[str, Any]) -> bytes:
    line = json.dumps({"type": kind.value, "object": obj}, separators=(",", ":"),
                      ensure_ascii=False)
    return line.encode("utf-8") + b"\n"


def _chunk_sender(writer: asyncio.StreamWriter) -> Callable[[bytes], Awaitable[None]]:
    async def send(data: bytes) -> None:
        writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await _drain(writer)
    return send


def _raw_sender(writer: asyncio.StreamWriter) -> Callable[[bytes], Awaitable[None]]:
    async def send(data: bytes) -> None:
        writer.write(data)
        await _drain(writer)
    return send


async def _drain(writer: asyncio.StreamWriter) -> None:
    """Wait for the client to take what we wrote; one that stops reading for
    :data:`WRITE_TIMEOUT` is cut off rather than holding the connection forever."""
    try:
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
    except TimeoutError:
        raise ConnectionError("the client stopped reading") from None


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close, then read and drop what the client still sends (briefly), so the
    response is not lost to a reset caused by unread input."""
    if writer.is_closing():
        return
    with contextlib.suppress(OSError, RuntimeError):
        if writer.can_write_eof():
            writer.write_eof()
    remaining = LINGER_BYTES
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LINGER_TIMEOUT
    with contextlib.suppress(TimeoutError, ConnectionError, asyncio.LimitOverrunError):
        while remaining > 0:
            left = deadline - loop.time()
            if left <= 0:
                return
            data = await asyncio.wait_for(reader.read(min(remaining, 4096)), left)
            if not data:
                return
            remaining -= len(data)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
