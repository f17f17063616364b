"""The thermostat simulator as a real subprocess (the socat pty pair for RTU is in
tests/conftest.py, shared with the system tests)."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

REPO = Path(__file__).resolve().parents[3]
T = TypeVar("T")


class Simulator:
    """``python -m mappers.modbus.simulator`` with its stdout read line by line."""

    def __init__(self, log: Path, *args: str) -> None:
        self.args = list(args)
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.where = ""

    @property
    def port(self) -> int:
        return int(self.where.rsplit(":", 1)[1])

    async def start(self, *extra: str) -> Simulator:
        with self.log.open("ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mappers.modbus.simulator", *self.args, *extra,
                cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=err)
        line = await self.wait_line("listening on ")
        self.where = line.removeprefix("listening on ")
        return self

    async def wait_line(self, prefix: str, within: float = 10.0) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        async with asyncio.timeout(within):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(f"simulator exited; see {self.log}")
                line = raw.decode().strip()
                if line.startswith(prefix):
                    return line

    async def toggle_mute(self, expect: str) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)
        await self.wait_line(expect)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(5):
                    await self.proc.wait()
            except TimeoutError:
                await self.kill()


@pytest.fixture
async def sim_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Simulator]]]:
    started: list[Simulator] = []

    async def start(*args: str) -> Simulator:
        sim = Simulator(tmp_path / f"sim{len(started)}.log", *args)
        started.append(sim)
        return await sim.start()

    yield start
    for sim in started:
        await sim.stop()


async def eventually(check: Callable[[], Awaitable[T]], within: float = 10.0,
                     what: str = "condition") -> T:
    """Retry ``check`` until it returns something truthy without raising."""
    deadline = time.monotonic() + within
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = await check()
            if value:
                return value
        except Exception as exc:
            last = exc
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}" + (f": {last!r}" if last else ""))
