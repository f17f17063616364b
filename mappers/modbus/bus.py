"""One request queue per physical Modbus bus (asyncio + pymodbus).

A Modbus line answers one request at a time: a serial master that sends while a slave is
still answering garbles both frames, and many TCP gateways in front of serial lines only
keep the last request (the classic "the device answers only the last request" bug of
gateways that poll and write independently).  So every device on one TCP endpoint or
one serial port shares one ``Bus``, and the bus sends strictly one request at a time:

- requests wait in two FIFO queues; a queued **write always goes before queued polls**,
  so a desired value reaches the device within one round trip, however busy the poll;
- on a serial line the bus leaves the RTU inter-frame gap (3.5 character times at the
  line's baud rate, at least 2 ms) between a reply and the next request;
- when the endpoint cannot be reached the bus fails requests fast and reconnects on
  demand with exponential backoff (``protocol.backoff``), so a dead device costs one
  connection attempt per backoff step rather than one per poll.

Errors (all ``BusError``):

    BusError                 root: the request did not succeed
    ├── ExceptionReply       the device answered with a Modbus exception (e.g. code 2,
    │                        illegal data address): only this request failed
    └── DeviceUnavailable    no valid answer from this unit (timeout, garbled reply,
        │                    gateway exception 0x0A/0x0B): the device is offline
        └── BusUnavailable   the endpoint cannot be reached or the bus is closed:
                             every device on the bus is offline

``BusPool`` hands out one ``Bus`` per ``config.bus_key`` and closes it with its last user.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.pdu import ModbusPDU

from mappers.modbus.codec import RegisterKind
from mappers.modbus.config import (
    BusKey,
    ConfigError,
    Endpoint,
    ProtocolConfig,
    SerialEndpoint,
    TcpEndpoint,
    bus_key,
)
from mappers.modbus.plan import max_per_read
from protocol.backoff import reconnect_delay
from protocol.errors import EdgefleetError

try:
    from termios import error as _TermiosError
except ImportError:  # not a POSIX system: pyserial raises its own errors there
    _TermiosError = OSError  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)

# What opening an endpoint can raise besides pymodbus' own errors: OSError (refused, no
# such device; pyserial's SerialException is one), ValueError (settings pyserial rejects)
# and termios.error (settings the port's driver rejects, e.g. parity on a pty or an odd
# speed on a USB adapter; it is not an OSError).
_CONNECT_ERRORS = (TimeoutError, OSError, ValueError, _TermiosError, ModbusException)

RTU_BITS_PER_CHAR = 11  # start + 8 data + parity (or a second stop bit) + stop
MIN_RTU_GAP = 0.002
_GATEWAY_NO_TARGET = frozenset({0x0A, 0x0B})  # gateway path unavailable / target silent
_EXCEPTION_NAMES = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
                    4: "device failure", 5: "acknowledge", 6: "device busy",
                    8: "memory parity error", 0x0A: "gateway path unavailable",
                    0x0B: "gateway target device failed to respond"}


class BusError(EdgefleetError):
    reason: ClassVar[str] = "ModbusError"
    code: ClassVar[int] = 502


class ExceptionReply(BusError):
    """The device refused this request with a Modbus exception code."""

    def __init__(self, message: str, *, exception_code: int, function_code: int) -> None:
        super().__init__(message)
        self.exception_code = exception_code
        self.function_code = function_code


class DeviceUnavailable(BusError):
    reason: ClassVar[str] = "DeviceUnavailable"
    code: ClassVar[int] = 504


class BusUnavailable(DeviceUnavailable):
    reason: ClassVar[str] = "BusUnavailable"
    code: ClassVar[int] = 503


def rtu_frame_gap(baudrate: int) -> float:
    """Seconds of silence that delimit RTU frames: 3.5 character times, at least 2 ms
    (the specification fixes 1.75 ms above 19200 baud; 2 ms leaves margin)."""
    return max(3.5 * RTU_BITS_PER_CHAR / baudrate, MIN_RTU_GAP)


@dataclass
class BusStats:
    """What the bus has done; ``requests`` counts sent requests by pymodbus function name
    (read_coils, read_discrete_inputs, read_input_registers, read_holding_registers,
    write_coil, write_register, write_registers)."""

    requests: Counter[str] = field(default_factory=Counter)
    exception_replies: int = 0
    device_errors: int = 0  # timeouts and garbled replies
    connects: int = 0
    connect_failures: int = 0
    in_flight: int = 0
    max_in_flight: int = 0  # stays 1: the serialisation invariant, observable

    @property
    def requests_sent(self) -> int:
        return sum(self.requests.values())


_READ_FUNCTIONS = {
    RegisterKind.COIL: "read_coils",
    RegisterKind.DISCRETE_INPUT: "read_discrete_inputs",
    RegisterKind.INPUT: "read_input_registers",
    RegisterKind.HOLDING: "read_holding_registers",
}
_FUNCTION_CODES = {"read_coils": 1, "read_discrete_inputs": 2, "read_holding_registers": 3,
                   "read_input_registers": 4, "write_coil": 5, "write_register": 6,
                   "write_registers": 16}
"""What a reply to each request must carry: pymodbus decodes whatever function code
comes back, so a unit answering 3 to a 4 would otherwise hand over the wrong table."""


@dataclass(eq=False)
class _Request:
    function: str
    device_id: int
    call: Callable[[Any], Awaitable[ModbusPDU]]
    future: asyncio.Future[ModbusPDU]


_Client = AsyncModbusTcpClient | AsyncModbusSerialClient


class Bus:
    """The single request queue of one TCP endpoint or one serial port."""

    def __init__(self, endpoint: Endpoint, *, reconnect_base: float = 0.5,
                 reconnect_cap: float = 30.0, frame_gap: float | None = None,
                 rand: Callable[[], float] = random.random) -> None:
        self.endpoint = endpoint
        self.stats = BusStats()
        self._reconnect_base = reconnect_base
        self._reconnect_cap = reconnect_cap
        self._rand = rand
        if frame_gap is None:
            frame_gap = (rtu_frame_gap(endpoint.baudrate)
                         if isinstance(endpoint, SerialEndpoint) else 0.0)
        self._frame_gap = frame_gap
        self._writes: deque[_Request] = deque()
        self._polls: deque[_Request] = deque()
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._client: _Client | None = None
        self._failed_connects = 0
        self._next_connect_at = 0.0
        self._last_reply_at = 0.0
        self._closed = False

    def __repr__(self) -> str:
        return f"Bus({self.describe()})"

    def describe(self) -> str:
        ep = self.endpoint
        return f"{ep.host}:{ep.port}" if isinstance(ep, TcpEndpoint) else ep.port

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    # --- public requests --------------------------------------------------------------

    async def read(self, device_id: int, kind: RegisterKind, offset: int,
                   count: int) -> list[int]:
        """``count`` registers (or bits, as 0/1) of ``kind`` from ``offset`` on a unit."""
        limit = max_per_read(kind)
        if not 1 <= count <= limit:
            raise ValueError(f"count must be 1..{limit} for {kind.value}, got {count}")
        function = _READ_FUNCTIONS[kind]

        def call(client: Any) -> Awaitable[ModbusPDU]:
            method: Callable[..., Awaitable[ModbusPDU]] = getattr(client, function)
            return method(offset, count=count, device_id=device_id)

        reply = await self._submit(function, device_id, call, write=False)
        values = ([1 if bit else 0 for bit in list(reply.bits)[:count]] if kind.is_bits
                  else list(reply.registers))
        if len(values) != count:
            # A garbled reply, as one with a wrong function code: nothing this unit says
            # can be trusted until it answers properly again.
            self.stats.device_errors += 1
            raise DeviceUnavailable(f"{function} on unit {device_id} at {self.describe()}: "
                                    f"garbled reply: asked for {count} values, it holds "
                                    f"{len(values)}")
        return values

    async def write_registers(self, device_id: int, offset: int,
                              values: Sequence[int]) -> None:
        """Write holding registers: function 6 for one register (which every device
        implements), function 16 for several."""
        values = list(values)
        if not 1 <= len(values) <= 123:
            raise ValueError("between 1 and 123 registers can be written at once")
        if any(not 0 <= v <= 0xFFFF for v in values):
            raise ValueError("register values are 16-bit unsigned numbers")
        if len(values) == 1:
            await self._submit("write_register", device_id,
                               lambda c: c.write_register(offset, values[0],
                                                          device_id=device_id), write=True)
        else:
            await self._submit("write_registers", device_id,
                               lambda c: c.write_registers(offset, values,
                                                           device_id=device_id), write=True)

    async def write_coil(self, device_id: int, offset: int, value: bool) -> None:
        await self._submit("write_coil", device_id,
                           lambda c: c.write_coil(offset, value, device_id=device_id),
                           write=True)

    async def close(self) -> None:
        """Fail whatever is queued, stop the worker and close the connection."""
        self._closed = True
        for queue in (self._writes, self._polls):
            while queue:
                _fail(queue.popleft(), BusUnavailable(f"bus {self.describe()} closed"))
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        self._disconnect()

    async def __aenter__(self) -> Bus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- queue ------------------------------------------------------------------------

    async def _submit(self, function: str, device_id: int,
                      call: Callable[[Any], Awaitable[ModbusPDU]], *, write: bool) -> ModbusPDU:
        if self._closed:
            raise BusUnavailable(f"bus {self.describe()} closed")
        future: asyncio.Future[ModbusPDU] = asyncio.get_running_loop().create_future()
        (self._writes if write else self._polls).append(
            _Request(function, device_id, call, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name=f"modbus-bus {self.describe()}")
        self._wakeup.set()
        # A caller that gives up leaves the future cancelled; the worker skips it, or, if
        # already sent, lets the reply go (the frame cannot be recalled).
        return await future

    async def _work(self) -> None:
        while True:
            if not self._writes and not self._polls:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            request = self._writes.popleft() if self._writes else self._polls.popleft()
            if request.future.done():
                continue
            try:
                reply = await self._execute(request)
            except asyncio.CancelledError:
                _fail(request, BusUnavailable(f"bus {self.describe()} closed"))
                raise
            except BusError as exc:
                _fail(request, exc)
            except Exception as exc:  # task boundary: one odd failure must not stop the bus
                log.exception("modbus %s: unexpected error on %s", self.describe(),
                              request.function)
                _fail(request, BusError(f"{request.function} failed: {exc!r}"))
            else:
                if not request.future.done():
                    request.future.set_result(reply)

    async def _execute(self, request: _Request) -> ModbusPDU:
        client = await self._connected_client()
        wait = self._last_reply_at + self._frame_gap - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        what = f"{request.function} on unit {request.device_id} at {self.describe()}"
        self.stats.requests[request.function] += 1
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        try:
            # pymodbus bounds the wait itself; the outer guard only catches a hang there.
            async with asyncio.timeout(self.endpoint.timeout * 2 + 1):
                reply = await request.call(client)
        except ConnectionException as exc:
            self._disconnect()
            raise BusUnavailable(f"{what}: connection lost ({exc})") from None
        except (ModbusException, TimeoutError) as exc:
            self.stats.device_errors += 1
            if not client.connected:  # pymodbus drops the link after repeated timeouts
                self._disconnect()
            raise DeviceUnavailable(f"{what}: no valid reply within {self.endpoint.timeout:g} s "
                                    f"({exc or 'timeout'})") from None
        finally:
            self.stats.in_flight -= 1
            self._last_reply_at = time.monotonic()
        if reply.isError():
            code = reply.exception_code
            name = _EXCEPTION_NAMES.get(code, "unknown exception")
            if code in _GATEWAY_NO_TARGET:
                self.stats.device_errors += 1
                raise DeviceUnavailable(f"{what}: {name} (exception {code})")
            self.stats.exception_replies += 1
            raise ExceptionReply(f"{what}: {name} (exception {code})", exception_code=code,
                                 function_code=reply.function_code & 0x7F)
        expected = _FUNCTION_CODES.get(request.function)
        if expected is not None and reply.function_code != expected:
            self.stats.device_errors += 1
            raise DeviceUnavailable(f"{what}: garbled reply: function code "
                                    f"{reply.function_code}, expected {expected}")
        return reply

    # --- connection -------------------------------------------------------------------

    async def _connected_client(self) -> _Client:
        if self._client is not None and self._client.connected:
            return self._client
        now = time.monotonic()
        if now < self._next_connect_at:
            raise BusUnavailable(f"{self.describe()} unreachable; next connection attempt "
                                 f"in {self._next_connect_at - now:.1f} s")
        self._disconnect()
        client = self._make_client()
        why = ""
        try:
            async with asyncio.timeout(self.endpoint.timeout + 1):
                ok = await client.connect()
        except _CONNECT_ERRORS as exc:
            ok, why = False, f": {exc!r}"
        if not ok:
            client.close()
            self.stats.connect_failures += 1
            delay = reconnect_delay(self._failed_connects, self._rand(),
                                    base=self._reconnect_base, cap=self._reconnect_cap)
            self._failed_connects += 1
            self._next_connect_at = time.monotonic() + delay
            if self._failed_connects == 1:
                log.warning("modbus %s unreachable%s; retrying with backoff",
                            self.describe(), why)
            raise BusUnavailable(f"cannot connect to {self.describe()}{why}")
        if self._failed_connects:
            log.info("modbus %s reachable again", self.describe())
        self._failed_connects = 0
        self._next_connect_at = 0.0
        self.stats.connects += 1
        self._client = client
        return client

    def _make_client(self) -> _Client:
        ep = self.endpoint
        # reconnect_delay=0: the bus owns reconnection (pymodbus' own would race it);
        # retries=0: a retry would hold the line for another full timeout.
        if isinstance(ep, TcpEndpoint):
            return AsyncModbusTcpClient(ep.host, port=ep.port, timeout=ep.timeout, retries=0,
                                        reconnect_delay=0)
        return AsyncModbusSerialClient(ep.port, framer=FramerType.RTU, baudrate=ep.baudrate,
                                       bytesize=ep.bytesize, parity=ep.parity.value,
                                       stopbits=ep.stopbits, timeout=ep.timeout, retries=0,
                                       reconnect_delay=0)

    def _disconnect(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _fail(request: _Request, exc: BaseException) -> None:
    if not request.future.done():
        request.future.set_exception(exc)


class BusPool:
    """One ``Bus`` per physical bus, shared by the devices on it and closed with the last."""

    def __init__(self, **bus_options: Any) -> None:
        self._options = bus_options
        self._buses: dict[BusKey, Bus] = {}
        self._users: Counter[BusKey] = Counter()

    def key(self, protocol: ProtocolConfig) -> BusKey:
        key = bus_key(protocol)
        if key[0] == "rtu":  # /dev/serial/by-id/... and /dev/ttyUSB0 can be one line
            return ("rtu", os.path.realpath(key[1]))
        return key

    def acquire(self, protocol: ProtocolConfig) -> Bus:
        """The bus ``protocol`` is on; a serial line must be opened with one set of line
        settings, so a device asking for others is a ``ConfigError``."""
        key = self.key(protocol)
        bus = self._buses.get(key)
        if bus is None:
            bus = self._buses[key] = Bus(protocol.endpoint, **self._options)
        elif isinstance(bus.endpoint, SerialEndpoint):
            ours, theirs = _line(bus.endpoint), _line(protocol.endpoint)
            if ours != theirs:
                raise ConfigError(f"serial port {bus.endpoint.port} is already in use with "
                                  f"{ours}; this device asks for {theirs}",
                                  field="spec.protocol.configData.baudRate")
        self._users[key] += 1
        return bus

    async def release(self, protocol: ProtocolConfig) -> None:
        key = self.key(protocol)
        if self._users[key] <= 0:
            return
        self._users[key] -= 1
        if self._users[key] == 0:
            del self._users[key]
            bus = self._buses.pop(key, None)
            if bus is not None:
                await bus.close()

    @property
    def buses(self) -> dict[BusKey, Bus]:
        return dict(self._buses)

    async def close(self) -> None:
        buses, self._buses = list(self._buses.values()), {}
        self._users.clear()
        for bus in buses:
            await bus.close()


def _line(endpoint: Endpoint) -> str:
    if not isinstance(endpoint, SerialEndpoint):
        return "TCP"
    return (f"{endpoint.baudrate} baud {endpoint.bytesize}{endpoint.parity.value}"
            f"{endpoint.stopbits}")
