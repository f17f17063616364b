"""A Modbus/TCP device that misbehaves on demand: real sockets on 127.0.0.1, just enough
of the protocol (MBAP framing; functions 3, 4, 6 and 16) to answer a mapper correctly,
with garbage or too late.  Its own event loop runs in a thread, so blocking tests switch
its mode with plain calls.

    with BadModbus(rng) as dev:        # listens on dev.port, answers well
        dev.mode = Mode.GARBAGE        # each reply is broken, one of GARBAGE_KINDS
        dev.mode = Mode.SLOW           # correct replies, ``slow_seconds`` late
        dev.mode = Mode.OK

Registers: every input register reads ``base + n`` where n counts the reads answered
(so a healthy device's value moves), holding registers keep what is written (0 first).
"""

from __future__ import annotations

import asyncio
import enum
import random
import struct
import threading
from collections import Counter
from collections.abc import Sequence
from types import TracebackType


class Mode(enum.Enum):
    OK = "ok"
    GARBAGE = "garbage"
    SLOW = "slow"


GARBAGE_KINDS = ("wrong function code", "short byte count", "long byte count",
                 "wrong transaction id", "random bytes", "truncated frame")

_READS = {3, 4}
_WRITE_ONE, _WRITE_MANY = 6, 16


class BadModbus:
    def __init__(self, rng: random.Random, *, base: int = 200, slow_seconds: float = 2.0,
                 kinds: Sequence[str] = GARBAGE_KINDS) -> None:
        self.rng = rng
        self.kinds = list(kinds)  # the garbage this device answers with, one drawn per reply
        self.base = base
        self.slow_seconds = slow_seconds
        self.mode = Mode.OK
        self.port = 0
        self.answered = 0
        self.garbage_sent: Counter[str] = Counter()
        self.holding: dict[int, int] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="badmodbus",
                                        daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> BadModbus:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> BadModbus:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ---- inside the loop ---------------------------------------------------------------

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(next(iter(self._server.sockets)).getsockname()[1])

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                header = await reader.readexactly(7)
                tid, proto, length, unit = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(length - 1)
                reply = self._reply(tid, proto, unit, pdu)
                if self.mode is Mode.SLOW:
                    # Late, and the request after it waits behind it, as on a real line.
                    await asyncio.sleep(self.slow_seconds)
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _reply(self, tid: int, proto: int, unit: int, pdu: bytes) -> bytes:
        function = pdu[0]
        if function in _READS:
            address, count = struct.unpack(">HH", pdu[1:5])
            values = [self.holding.get(address + i, 0) if function == 3
                      else (self.base + self.answered) & 0xFFFF for i in range(count)]
            body = bytes([function, 2 * count]) + struct.pack(f">{count}H", *values)
        elif function == _WRITE_ONE:
            address, value = struct.unpack(">HH", pdu[1:5])
            self.holding[address] = value
            body = pdu[:5]
        elif function == _WRITE_MANY:
            address, count = struct.unpack(">HH", pdu[1:5])
            for i in range(count):
                self.holding[address + i] = struct.unpack(">H", pdu[6 + 2 * i:8 + 2 * i])[0]
            body = pdu[:5]
        else:
            body = bytes([function | 0x80, 1])  # illegal function
        if self.mode is Mode.GARBAGE:
            return self._garbage(tid, proto, unit, body)
        self.answered += 1
        return struct.pack(">HHHB", tid, proto, len(body) + 1, unit) + body

    def _garbage(self, tid: int, proto: int, unit: int, body: bytes) -> bytes:
        kind = self.rng.choice(self.kinds)
        self.garbage_sent[kind] += 1
        if kind == "wrong function code":
            # Another function's code (3 for 4 too: pymodbus decodes either), or none.
            codes = [c for c in (1, 2, 3, 4, 5, 6, 16, 0x2B, 0x41) if c != body[0]]
            body = bytes([self.rng.choice(codes)]) + body[1:]
        elif kind == "short byte count" and body[0] in _READS:
            body = bytes([body[0], max(0, body[1] - 2)]) + body[2:]
        elif kind == "long byte count" and body[0] in _READS:
            body = bytes([body[0], body[1] + 2]) + body[2:]
        elif kind == "wrong transaction id":
            tid = (tid + self.rng.randint(1, 0xFFFE)) & 0xFFFF
        elif kind == "random bytes":
            return self.rng.randbytes(self.rng.randint(1, 24))
        elif kind == "truncated frame":
            frame = struct.pack(">HHHB", tid, proto, len(body) + 1, unit) + body
            return frame[:self.rng.randint(1, len(frame) - 1)]
        return struct.pack(">HHHB", tid, proto, len(body) + 1, unit) + body
