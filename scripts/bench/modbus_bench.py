"""The Modbus poll benchmark (run it through ``scripts/bench/modbus``).

What runs, all on 127.0.0.1:

- **devices**: ``--devices`` simulated thermostats (``mappers.modbus.simulator``).  With
  ``--layout bus`` (the default) one simulator process serves unit ids 1..N on one TCP
  endpoint, as N devices behind one gateway or on one serial line do: the mapper then
  has one ``Bus`` and every request waits its turn in that bus's queue.  With
  ``--layout endpoints`` N unmodified simulator processes each serve one unit on its own
  port (N buses).
- **mapper**: a separate process running the real ``MapperRuntime`` collect loops over
  the real ``ModbusDriver``; each device has ``--registers`` properties on holding
  registers 1..R, all with one ``collectCycle`` (``--period-ms``), so the runtime calls
  ``read`` once per device per cycle with every name.  The runtime's edgecore client is
  replaced by a stub that accepts the state reports (nothing else is sent: no property
  reports to the cloud).
- **modes**: ``coalesced`` is the driver as shipped; ``per-property`` (the baseline) is
  the same driver issuing one request per property, concurrently, the way mappers that
  poll each property on its own timer do.

What is measured, over ``--seconds`` after a warm-up: requests on the wire (the bus's
``BusStats`` and, independently, each simulated unit's own "requests answered" counter),
polls completed per device per second, each poll's duration (a poll is on time when it
completes within its cycle), the spacing of consecutive polls, and the mapper process's
CPU time as a share of one core.  Every process started is stopped before exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
HOST = "127.0.0.1"
SERVED_REGISTER = 8  # simulator input register: requests answered (low 16 bits)
MODES = ("coalesced", "per-property")

# --- goals (from the issue) -----------------------------------------------------------------
GOAL_REQUEST_RATIO = 5.0
GOAL_CPU_SHARE = 0.25


# === the simulator role ======================================================================


async def serve_units(units: int) -> None:
    """Units 1..``units`` of the project's thermostat on one TCP endpoint."""
    from pymodbus.pdu import ModbusPDU
    from pymodbus.server import ModbusTcpServer

    from mappers.modbus.simulator import TICK_SECONDS, Thermostat

    thermostats = {u: Thermostat(unit=u, rng=random.Random(u)) for u in range(1, units + 1)}

    def trace(sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        # Each unit keeps its own counters; a request for an absent unit goes unanswered.
        unit = thermostats.get(pdu.dev_id)
        if unit is None:
            return pdu if sending else cast(ModbusPDU, None)
        return unit.trace_pdu(sending, pdu)

    server = ModbusTcpServer([t.device() for t in thermostats.values()], address=(HOST, 0),
                             trace_pdu=cast(Any, trace))
    await server.serve_forever(background=True)
    sockets = getattr(server.transport, "sockets", None) or []
    print(f"listening on {HOST}:{sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK_SECONDS)
            if not stop.is_set():
                for thermostat in thermostats.values():
                    await thermostat.tick(server)
    finally:
        await cast(Any, server).shutdown()


# === the mapper role =========================================================================


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    unit: int


def device_object(index: int, target: Target, registers: int, period_ms: int) -> dict[str, Any]:
    """A KubeEdge-format Device: ``registers`` uint16 properties on holding 1..R."""
    def prop(offset: int) -> dict[str, Any]:
        return {"name": f"r{offset:02d}", "collectCycle": period_ms, "reportToCloud": False,
                "visitors": {"protocolName": "modbus", "configData": {
                    "register": "HoldingRegister", "offset": offset, "dataType": "uint16"}}}

    return {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
            "metadata": {"name": f"thermostat-{index}", "namespace": "default"},
            "spec": {"protocol": {"protocolName": "modbus", "configData": {
                "communicateMode": "TCP", "ip": target.host, "port": target.port,
                "slaveID": target.unit, "timeout": 1000}},
                "properties": [prop(r) for r in range(1, registers + 1)]}}


@dataclass
class PollLog:
    """Each device's polls (start, end, ok) while recording is on."""

    recording: bool = False
    polls: dict[str, list[tuple[float, float, bool]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # the first few, to say what failed


def make_driver(mode: str, log: PollLog) -> Any:
    from mappers.modbus.driver import ModbusDriver, ModbusHandle
    from mappers.sdk.runtime import DeviceUnreachable

    class TimedDriver(ModbusDriver):
        """The shipped driver; each ``read`` (one poll) is timed."""

        async def read(self, handle: ModbusHandle,
                       properties: Sequence[str]) -> dict[str, str | Exception]:
            recording, start, ok = log.recording, time.monotonic(), False
            try:
                out = await self.read_poll(handle, properties)
                failed = [f"{k}: {v}" for k, v in out.items() if isinstance(v, Exception)]
                ok = not failed
                if recording and len(log.errors) < 5:
                    log.errors.extend(failed[:5 - len(log.errors)])
                return out
            except asyncio.CancelledError:
                recording = False  # stopped at the end of the run: not a poll outcome
                raise
            except Exception as exc:
                if recording and len(log.errors) < 5:
                    log.errors.append(repr(exc))
                raise
            finally:
                if recording:
                    key = f"{handle.config.protocol.slave_id}@{handle.bus.describe()}"
                    log.polls.setdefault(key, []).append((start, time.monotonic(), ok))

        async def read_poll(self, handle: ModbusHandle,
                            properties: Sequence[str]) -> dict[str, str | Exception]:
            return await super().read(handle, properties)

    class PerPropertyDriver(TimedDriver):
        """The baseline: one request per property, all sent at once (one timer each)."""

        async def read_poll(self, handle: ModbusHandle,
                            properties: Sequence[str]) -> dict[str, str | Exception]:
            parts = await asyncio.gather(
                *(ModbusDriver.read(self, handle, [name]) for name in properties),
                return_exceptions=True)
            out: dict[str, str | Exception] = {}
            for name, part in zip(properties, parts, strict=True):
                if isinstance(part, DeviceUnreachable):
                    raise part
                if isinstance(part, BaseException):
                    out[name] = Exception(repr(part))
                else:
                    out.update(part)
            return out

    return TimedDriver() if mode == "coalesced" else PerPropertyDriver()


class _EdgecoreStub:
    """Accepts what the runtime reports to edgecore; this benchmark measures the bus."""

    async def report_state(self, namespace: str, name: str, state: str) -> None:
        return None

    async def report_status(self, namespace: str, name: str,
                            twins: list[dict[str, Any]]) -> None:
        return None


async def served_counts(targets: Sequence[Target]) -> list[int]:
    """Each unit's own count of requests answered, read on a connection of our own (so it
    is not in the bus's statistics); the read itself is counted by the unit."""
    from pymodbus.client import AsyncModbusTcpClient

    clients: dict[tuple[str, int], AsyncModbusTcpClient] = {}
    counts: list[int] = []
    try:
        for t in targets:
            client = clients.get((t.host, t.port))
            if client is None:
                client = clients[(t.host, t.port)] = AsyncModbusTcpClient(
                    t.host, port=t.port, timeout=3, retries=1)
                if not await client.connect():
                    raise RuntimeError(f"cannot connect to {t.host}:{t.port}")
            reply = await client.read_input_registers(SERVED_REGISTER, count=1,
                                                      device_id=t.unit)
            if reply.isError():
                raise RuntimeError(f"unit {t.unit}: counter read failed: {reply}")
            counts.append(int(reply.registers[0]))
    finally:
        for client in clients.values():
            client.close()
    return counts


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def run_mapper(args: argparse.Namespace) -> dict[str, Any]:
    from mappers.sdk.runtime import MapperRuntime

    targets = [Target(h, int(p), int(u)) for h, p, u in
               (spec.split(":") for spec in args.targets.split(","))]
    log = PollLog()
    driver = make_driver(args.mode, log)
    runtime = MapperRuntime(driver, cast(Any, _EdgecoreStub()))
    for i, target in enumerate(targets):
        await runtime.on_register_device(device_object(i, target, args.registers,
                                                       args.period_ms))
    try:
        await asyncio.sleep(args.warmup)
        _stage('warm')
        buses = list(driver.pool.buses.values())
        sent_before = sum(b.stats.requests_sent for b in buses)
        served_before = await served_counts(targets)
        _stage('counted')
        cpu_before, wall_before = time.process_time(), time.monotonic()
        log.recording = True
        await asyncio.sleep(args.seconds)
        log.recording = False
        cpu_after, wall_after = time.process_time(), time.monotonic()
        sent_after = sum(b.stats.requests_sent for b in buses)
        served_after = await served_counts(targets)
        _stage('counted again')
        max_in_flight = max(b.stats.max_in_flight for b in buses)
        errors = sum(b.stats.device_errors + b.stats.exception_replies for b in buses)
        # Let the polls that started in the window finish before the loops are stopped.
        await asyncio.sleep(2 * args.period_ms / 1000 + 0.5)
    finally:
        _stage('stopping')
        await runtime.stop()
        _stage('stopped')
        await driver.pool.close()
        _stage('closed')
    wall = wall_after - wall_before
    # The second counter read counts itself: one request per unit that is not the mapper's.
    served = sum((a - b - 1) % 0x10000 for a, b in zip(served_after, served_before, strict=True))
    period = args.period_ms / 1000
    durations = [end - start for polls in log.polls.values() for start, end, _ in polls]
    gaps = [b[0] - a[0] for polls in log.polls.values() for a, b in itertools.pairwise(polls)]
    return {
        "mode": args.mode, "devices": len(targets), "registers": args.registers,
        "period_ms": args.period_ms, "seconds": wall, "buses": len(buses),
        "requests_bus": sent_after - sent_before, "requests_sim": served,
        "requests_per_s": (sent_after - sent_before) / wall,
        "requests_sim_per_s": served / wall,
        "polls": len(durations),
        "polls_failed": sum(1 for p in log.polls.values() for *_, ok in p if not ok),
        "polls_expected": round(len(targets) * wall / period),
        "poll_rate_per_device": len(durations) / wall / len(targets),
        "late": sum(1 for d in durations if d > period),
        "duration_ms": {"p50": percentile(durations, 0.5) * 1000,
                        "p99": percentile(durations, 0.99) * 1000,
                        "max": max(durations, default=float("nan")) * 1000},
        "lateness_ms": {"p50": max(0.0, percentile(durations, 0.5) - period) * 1000,
                        "p99": max(0.0, percentile(durations, 0.99) - period) * 1000},
        "interval_ms": {"p50": percentile(gaps, 0.5) * 1000,
                        "p99": percentile(gaps, 0.99) * 1000},
        "cpu_share": (cpu_after - cpu_before) / wall,
        "bus_errors": errors, "max_in_flight": max_in_flight, "error_sample": log.errors,
    }


# === the orchestrator ========================================================================


class Processes:
    """Every process this benchmark starts, stopped (by pid) on the way out."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, argv: list[str]) -> subprocess.Popen[str]:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=REPO)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_listening(proc: subprocess.Popen[str], deadline: float = 15.0) -> int:
    """The port from the simulator's ``listening on HOST:PORT`` line."""
    import selectors

    assert proc.stdout is not None
    end = time.monotonic() + deadline
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < end:
            if not sel.select(timeout=max(0.0, end - time.monotonic())):
                break
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("listening on "):
                return int(line.rsplit(":", 1)[1])
    raise RuntimeError(f"simulator {proc.args!r} did not start listening")


def start_devices(procs: Processes, layout: str, devices: int) -> list[Target]:
    python = sys.executable
    if layout == "bus":
        sim = procs.start([python, str(Path(__file__).resolve()), "sim",
                           "--units", str(devices)])
        port = wait_listening(sim)
        return [Target(HOST, port, u) for u in range(1, devices + 1)]
    started = [procs.start([python, "-m", "mappers.modbus.simulator", "--host", HOST,
                            "--port", "0", "--unit", str(u), "--seed", str(u)])
               for u in range(1, devices + 1)]
    return [Target(HOST, wait_listening(p), u) for u, p in enumerate(started, start=1)]


def run_phase(procs: Processes, args: argparse.Namespace, mode: str,
              targets: Sequence[Target]) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).resolve()), "mapper", "--mode", mode,
            "--targets", ",".join(f"{t.host}:{t.port}:{t.unit}" for t in targets),
            "--registers", str(args.registers), "--period-ms", str(args.period_ms),
            "--seconds", str(args.seconds), "--warmup", str(args.warmup)]
    proc = procs.start(argv)
    try:
        out, err = proc.communicate(timeout=args.seconds + args.warmup + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise RuntimeError(f"the {mode} mapper did not finish in time:\n{err[-3000:]}") from None
    if proc.returncode != 0:
        raise RuntimeError(f"the {mode} mapper failed ({proc.returncode}):\n{err[-3000:]}")
    return cast(dict[str, Any], json.loads(out.strip().splitlines()[-1]))


def report(results: Mapping[str, Mapping[str, Any]], args: argparse.Namespace) -> list[str]:
    c, b = results["coalesced"], results["per-property"]

    def row(label: str, key: Any, fmt: str, ratio: bool = False) -> str:
        cv, bv = key(c), key(b)
        r = f"{bv / cv:8.1f}x" if ratio and cv else ""
        return f"{label:<34}{format(cv, fmt):>14}{format(bv, fmt):>16}{r:>10}"

    lines = [
        f"Modbus poll benchmark: {c['devices']} devices x {c['registers']} registers every "
        f"{c['period_ms']} ms, layout {args.layout} ({c['buses']} bus(es)), "
        f"{c['seconds']:.1f} s per mode",
        f"{'':<34}{'coalesced':>14}{'per-property':>16}{'ratio':>10}",
        row("requests/s on the wire (BusStats)", lambda r: r["requests_per_s"], ".1f", True),
        row("requests/s (simulator counted)", lambda r: r["requests_sim_per_s"], ".1f", True),
        row("requests per poll", lambda r: r["requests_bus"] / max(1, r["polls"]), ".1f"),
        row("polls/s per device (target "
            f"{1000 / c['period_ms']:.0f})", lambda r: r["poll_rate_per_device"], ".2f"),
        row("polls completed / expected",
            lambda r: f"{r['polls']}/{r['polls_expected']}", ""),
        row("polls late (> one cycle)", lambda r: f"{r['late']}/{r['polls']}", ""),
        row("polls with errors", lambda r: r["polls_failed"], "d"),
        row("poll duration p50 ms", lambda r: r["duration_ms"]["p50"], ".2f"),
        row("poll duration p99 ms", lambda r: r["duration_ms"]["p99"], ".2f"),
        row("poll duration max ms", lambda r: r["duration_ms"]["max"], ".2f"),
        row("lateness p50 / p99 ms",
            lambda r: f"{r['lateness_ms']['p50']:.1f}/{r['lateness_ms']['p99']:.1f}", ""),
        row("poll spacing p50 / p99 ms",
            lambda r: f"{r['interval_ms']['p50']:.1f}/{r['interval_ms']['p99']:.1f}", ""),
        row("mapper CPU, % of one core", lambda r: r["cpu_share"] * 100, ".1f", True),
        row("max requests in flight per bus", lambda r: r["max_in_flight"], "d"),
    ]
    ratio = b["requests_per_s"] / c["requests_per_s"] if c["requests_per_s"] else 0.0
    goals = [
        (f">= {GOAL_REQUEST_RATIO:.0f}x fewer requests", ratio >= GOAL_REQUEST_RATIO,
         f"{ratio:.1f}x"),
        ("every poll on time", c["late"] == 0 and c["polls_failed"] == 0
         and c["polls"] >= 0.99 * c["polls_expected"],
         f"{c['late']} late, {c['polls_failed']} failed, {c['polls']}/{c['polls_expected']}"),
        (f"< {GOAL_CPU_SHARE:.0%} of one core", c["cpu_share"] < GOAL_CPU_SHARE,
         f"{c['cpu_share']:.1%}"),
    ]
    lines.append("goals (coalesced):")
    lines += [f"  {name:<28} {'met' if ok else 'NOT met':<8} ({how})" for name, ok, how in goals]
    return lines


def run(args: argparse.Namespace) -> int:
    procs = Processes()
    results: dict[str, dict[str, Any]] = {}
    try:
        targets = start_devices(procs, args.layout, args.devices)
        for mode in MODES:
            results[mode] = run_phase(procs, args, mode, targets)
    finally:
        procs.stop_all()
    machine = {"nproc": os.cpu_count(), "python": platform.python_version(),
               "platform": platform.platform()}
    for line in report(results, args):
        print(line)
    print(f"machine: nproc={machine['nproc']} python={machine['python']} "
          f"{machine['platform']}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": machine, "layout": args.layout,
             "pids": [p.pid for p in procs.procs], **results}, indent=2))
    return 0


# === entry ===================================================================================


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench/modbus",
                                     description="Modbus poll benchmark (127.0.0.1 only)")
    sub = parser.add_subparsers(dest="role")
    sim = sub.add_parser("sim", help="(internal) serve units 1..N on one endpoint")
    sim.add_argument("--units", type=int, required=True)
    mapper = sub.add_parser("mapper", help="(internal) poll the devices, print JSON")
    mapper.add_argument("--mode", choices=MODES, required=True)
    mapper.add_argument("--targets", required=True, help="host:port:unit,...")
    for p in (parser, mapper):
        p.add_argument("--registers", type=int, default=20)
        p.add_argument("--period-ms", type=int, default=100)
        p.add_argument("--seconds", type=float, default=20.0)
        p.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--layout", choices=("bus", "endpoints"), default="bus",
                        help="bus: one endpoint, unit ids 1..N (default); "
                             "endpoints: one simulator process and port per device")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 2 devices, 3 s per mode, 0.5 s warm-up")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.role is None and args.quick:
        args.devices, args.seconds, args.warmup = 2, 3.0, 0.5
    return args


def _stage(what: str) -> None:
    print(f"{time.monotonic():.3f} {what}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "sim":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_units(args.units))
        return 0
    if args.role == "mapper":
        print(json.dumps(asyncio.run(run_mapper(args))), flush=True)
        return 0
    if not 1 <= args.devices <= 247 or not 1 <= args.registers <= 20:
        print("--devices must be 1..247 and --registers 1..20 (the simulator's spare "
              "holding registers)", file=sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
