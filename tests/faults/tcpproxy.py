"""A loopback TCP proxy that a fault test can cut: real sockets on 127.0.0.1, its own
event loop in a thread, so the blocking tests drive it with plain method calls.

    with TcpProxy(target_port) as proxy:   # listens on proxy.port, forwards to the target
        proxy.drop()    # a clean partition: every connection closed on both sides (FIN),
                        # new ones accepted and closed at once
        proxy.stall()   # a half-open link: every socket stays open, nothing is forwarded
                        # and nothing read, so neither side gets a FIN or an RST; new
                        # connections are accepted and held the same way
        proxy.heal()    # forward again; stalled connections resume where they stopped

Each call returns once the proxy is in the new mode: a test can inject a fault and then
look for its effect without a race against the proxy's own thread.
"""

from __future__ import annotations

import asyncio
import enum
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")


class Mode(enum.Enum):
    FORWARD = "forward"
    DROP = "drop"
    STALL = "stall"


class _Side(asyncio.Protocol):
    """One socket of a proxied connection: what it receives goes to the other side."""

    def __init__(self, pair: _Pair) -> None:
        self.pair = pair
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.pair.made(self)

    def data_received(self, data: bytes) -> None:
        self.pair.relay(self, data)

    def eof_received(self) -> bool | None:
        self.pair.close()  # no half-closed links: the websocket and MQTT never need them
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.pair.close()


class _Pair:
    """A client connection and the upstream connection made for it."""

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy
        self.down = _Side(self)
        self.up: _Side | None = None
        self.pending: list[bytes] = []  # from the client before the upstream is open
        self.closed = False
        self.paused = False

    def made(self, side: _Side) -> None:
        if side is self.down:
            self.proxy.pairs.add(self)
            if self.proxy.mode is Mode.DROP:
                self.close()
            elif self.proxy.mode is Mode.STALL:
                self.pause()  # held: connected upstream on heal
            else:
                self.connect_upstream()
        elif self.up is not None and self.up.transport is not None:
            if self.paused:
                self.up.transport.pause_reading()
            for chunk in self.pending:
                self.up.transport.write(chunk)
            self.pending.clear()
            if self.down.transport is not None and not self.paused:
                self.down.transport.resume_reading()

    def connect_upstream(self) -> None:
        if self.up is not None or self.closed:
            return
        assert self.down.transport is not None
        self.down.transport.pause_reading()  # until there is somewhere to send it
        self.up = _Side(self)
        side = self.up
        task = asyncio.get_running_loop().create_task(self._connect(side))
        self.proxy.tasks.add(task)
        task.add_done_callback(self.proxy.tasks.discard)

    async def _connect(self, side: _Side) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: side, self.proxy.target_host,
                                         self.proxy.target_port)
        except OSError:
            self.close()

    def relay(self, source: _Side, data: bytes) -> None:
        target = self.up if source is self.down else self.down
        if target is None or target.transport is None:
            self.pending.append(data)
        else:
            target.transport.write(data)

    def pause(self) -> None:
        self.paused = True
        for side in (self.down, self.up):
            if side is not None and side.transport is not None and not self.closed:
                side.transport.pause_reading()

    def resume(self) -> None:
        self.paused = False
        if self.closed:
            return
        if self.up is None:
            self.connect_upstream()
            return
        for side in (self.down, self.up):
            if side.transport is not None:
                side.transport.resume_reading()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.proxy.pairs.discard(self)
        for side in (self.down, self.up):
            if side is not None and side.transport is not None:
                side.transport.close()


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target_host:target_port`` until told otherwise."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1",
                 listen_port: int = 0) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = listen_port
        self.mode = Mode.FORWARD
        self.accepted = 0
        self.pairs: set[_Pair] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcpproxy",
                                        daemon=True)
        self._server: asyncio.Server | None = None

    # ---- control (from the test's thread) ------------------------------------------------

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def drop(self) -> None:
        self._call(self._set_mode(Mode.DROP))

    def stall(self) -> None:
        self._call(self._set_mode(Mode.STALL))

    def heal(self) -> None:
        self._call(self._set_mode(Mode.FORWARD))

    @property
    def open_connections(self) -> int:
        return self._call(self._count())

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ---- inside the proxy's loop ---------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def _accept(self) -> asyncio.Protocol:
        self.accepted += 1
        return _Pair(self).down

    async def _start(self) -> None:
        self._server = await self._loop.create_server(self._accept, "127.0.0.1", self.port)
        self.port = int(next(iter(self._server.sockets)).getsockname()[1])

    async def _set_mode(self, mode: Mode) -> None:
        self.mode = mode
        for pair in list(self.pairs):
            if mode is Mode.DROP:
                pair.close()
            elif mode is Mode.STALL:
                pair.pause()
            else:
                pair.resume()

    async def _count(self) -> int:
        return len(self.pairs)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for pair in list(self.pairs):
            pair.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
