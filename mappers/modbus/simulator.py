"""A Modbus thermostat to drive the mapper in demos and tests (pymodbus SimDevice).

    python -m mappers.modbus.simulator --port 5020 [--host 127.0.0.1] [--unit 1]
        [--latency-ms 0] [--mute-after SECONDS] [--seed N]
    python -m mappers.modbus.simulator --serial /dev/ttyX [--baudrate 19200] [--parity E]
        [--stopbits 1] [--unit 1] [--latency-ms 0] [--mute-after SECONDS] [--seed N]

Register map of unit 1 (addresses 0-based; anything else answers exception 2):

    input 0        temperature x 10 (int16), a slow random walk from 21.0 every 500 ms
    input 1        not implemented (a hole, as real devices have: reading it fails)
    input 2..3     the same temperature as float32 (big-endian words)
    input 8        requests answered (low 16 bits)            \\ diagnostics: lets a test
    input 9        most requests ever in progress at once      / see what the server saw
    input 20..27   model name "EF-THERMO-1" (ASCII, 2 per register, NUL padded)
    holding 0      setpoint in whole degrees C (default 21)
    holding 1..20  spare registers for benchmarks (initially 1..20)
    coil 0         relay: on while temperature < setpoint (recomputed every 500 ms)
    coils 1..7     free
    discrete 0     sensor ok (always on)

Requests for another unit id go unanswered, as on a serial line.  SIGUSR1 toggles
silence (requests are received and dropped, so clients time out); ``--mute-after`` goes
silent after that many seconds.  The process prints ``listening on HOST:PORT`` (or the
serial path) once serving, ``muted`` / ``unmuted`` when that changes, and
``setpoint N`` when a client changed the setpoint register (seen within one tick), so a
demo or test on a serial line, where nobody else can ask the device, sees writes land.
It binds 127.0.0.1 unless told otherwise; ``--port 0`` picks a free port and prints it.
RTU mode uses 8 data bits (a pty, as socat makes, cannot do parity: use --parity N).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import struct
import sys
from typing import Any, cast

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

TICK_SECONDS = 0.5
MODEL_NAME = "EF-THERMO-1"
INPUT_TEMPERATURE = 0
INPUT_TEMPERATURE_F32 = 2
INPUT_SERVED = 8
INPUT_MAX_CONCURRENT = 9
INPUT_MODEL = 20
HOLDING_SETPOINT = 0
DEFAULT_SETPOINT = 21
SPARE_HOLDING = 20
COIL_RELAY = 0
_FC_READ_INPUT = 4
_FC_WRITE_COILS = 5  # pymodbus maps internal coil updates through the write-coil code
_MIN_TENTHS, _MAX_TENTHS = 150, 300  # the walk stays within 15.0..30.0 degrees C


def _float32_words(value: float) -> list[int]:
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return [hi, lo]


def _ascii_words(text: str, registers: int) -> list[int]:
    raw = text.encode("ascii").ljust(registers * 2, b"\x00")
    return [raw[i] << 8 | raw[i + 1] for i in range(0, len(raw), 2)]


class Thermostat:
    """The simulated device: its register map, its physics and its fault switches."""

    def __init__(self, *, unit: int = 1, latency: float = 0.0,
                 rng: random.Random | None = None) -> None:
        self.unit = unit
        self.latency = latency
        self.rng = rng or random.Random()
        self.tenths = 210
        self.setpoint = DEFAULT_SETPOINT
        self.muted = False
        self.served = 0
        self.in_progress = 0
        self.max_in_progress = 0
        self._internal = False  # our own register updates skip latency and counting

    def device(self) -> SimDevice:
        inputs = [
            SimData(INPUT_TEMPERATURE, values=[self.tenths], datatype=DataType.REGISTERS),
            SimData(INPUT_TEMPERATURE_F32, values=_float32_words(self.tenths / 10),
                    datatype=DataType.REGISTERS),
            SimData(INPUT_SERVED, values=[0, 0], datatype=DataType.REGISTERS),
            SimData(INPUT_MODEL, values=_ascii_words(MODEL_NAME, 8), datatype=DataType.REGISTERS),
        ]
        holding = [SimData(HOLDING_SETPOINT,
                           values=[DEFAULT_SETPOINT, *range(1, SPARE_HOLDING + 1)],
                           datatype=DataType.REGISTERS)]
        coils = [SimData(0, count=8, values=False, datatype=DataType.BITS)]
        discrete = [SimData(0, values=[True] + [False] * 7, datatype=DataType.BITS)]
        return SimDevice(id=self.unit, simdata=(coils, discrete, holding, inputs),
                         action=self._action)

    # pymodbus hooks ---------------------------------------------------------------------

    def trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        """Every request in and reply out passes here: drop what a silent or absent
        device would not answer, and count what is in progress."""
        if sending:
            self.in_progress = max(0, self.in_progress - 1)
            return pdu
        if self.muted or pdu.dev_id != self.unit:
            return cast(ModbusPDU, None)  # pymodbus then handles nothing and answers nothing
        self.served += 1
        self.in_progress += 1
        self.max_in_progress = max(self.max_in_progress, self.in_progress)
        return pdu

    async def _action(self, function_code: int, start_address: int, address: int, count: int,
                      registers: list[int], values: list[int] | list[bool] | None
                      ) -> ExcCodes | None:
        if self._internal:
            return None
        if function_code == _FC_READ_INPUT:
            registers[INPUT_SERVED - start_address] = self.served & 0xFFFF
            registers[INPUT_MAX_CONCURRENT - start_address] = self.max_in_progress
        if self.latency:
            await asyncio.sleep(self.latency)
        return None

    # physics ----------------------------------------------------------------------------

    async def tick(self, server: ModbusTcpServer | ModbusSerialServer) -> None:
        """One step of the walk, then the relay follows the setpoint."""
        self.tenths = min(_MAX_TENTHS, max(_MIN_TENTHS, self.tenths + self.rng.choice((-1, 0, 1))))
        self._internal = True
        try:
            setpoint = (await server.async_getValues(self.unit, 3, HOLDING_SETPOINT, 1))[0]
            await server.async_setValues(self.unit, _FC_READ_INPUT, INPUT_TEMPERATURE,
                                         [self.tenths])
            await server.async_setValues(self.unit, _FC_READ_INPUT, INPUT_TEMPERATURE_F32,
                                         _float32_words(self.tenths / 10))
            await server.async_setValues(self.unit, _FC_WRITE_COILS, COIL_RELAY,
                                         [self.tenths < int(setpoint) * 10])
        finally:
            self._internal = False
        if int(setpoint) != self.setpoint:
            self.setpoint = int(setpoint)
            print(f"setpoint {self.setpoint}", flush=True)

    def set_muted(self, muted: bool) -> None:
        if muted != self.muted:
            self.muted = muted
            print("muted" if muted else "unmuted", flush=True)


async def serve(args: argparse.Namespace) -> None:
    thermostat = Thermostat(unit=args.unit, latency=args.latency_ms / 1000,
                            rng=random.Random(args.seed))
    trace = cast(Any, thermostat.trace_pdu)
    server: ModbusTcpServer | ModbusSerialServer
    if args.serial:
        server = ModbusSerialServer(thermostat.device(), framer=FramerType.RTU, port=args.serial,
                                    baudrate=args.baudrate, bytesize=8, parity=args.parity,
                                    stopbits=args.stopbits, trace_pdu=trace)
        where = args.serial
    else:
        server = ModbusTcpServer(thermostat.device(), address=(args.host, args.port),
                                 trace_pdu=trace)
    try:
        await server.serve_forever(background=True)
    except RuntimeError as exc:  # pymodbus' word for "cannot open the port or bind"
        raise SystemExit(f"simulator: cannot serve on "
                         f"{args.serial or f'{args.host}:{args.port}'}: {exc}") from None
    if not args.serial:
        sockets = getattr(server.transport, "sockets", None) or []
        port = sockets[0].getsockname()[1] if sockets else args.port
        where = f"{args.host}:{port}"
    print(f"listening on {where}", flush=True)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: thermostat.set_muted(not thermostat.muted))
    if args.mute_after is not None:
        loop.call_later(args.mute_after, thermostat.set_muted, True)
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK_SECONDS)
            if not stop.is_set():
                await thermostat.tick(server)
    finally:
        await cast(Any, server).shutdown()  # untyped in pymodbus


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mappers.modbus.simulator",
                                     description="Modbus thermostat simulator")
    parser.add_argument("--host", default="127.0.0.1", help="TCP address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5020, help="TCP port (0: pick a free one)")
    parser.add_argument("--serial", help="serve Modbus RTU on this serial port instead of TCP")
    parser.add_argument("--baudrate", "--baud", dest="baudrate", type=int, default=19200,
                        help="RTU line speed (default 19200)")
    parser.add_argument("--parity", choices=("N", "E", "O"), default="E",
                        help="RTU parity: None, Even (the default) or Odd")
    parser.add_argument("--stopbits", type=int, choices=(1, 2), default=1,
                        help="RTU stop bits (default 1)")
    parser.add_argument("--unit", type=int, default=1, help="unit (slave) id, default 1")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="delay every answer by this much")
    parser.add_argument("--mute-after", type=float, metavar="SECONDS",
                        help="stop answering after this many seconds (SIGUSR1 toggles)")
    parser.add_argument("--seed", type=int, help="seed of the temperature walk")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
