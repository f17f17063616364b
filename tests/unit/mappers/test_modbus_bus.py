"""The parts of the bus that need no device: frame timing and pool bookkeeping."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mappers.modbus.bus import BusPool, BusUnavailable, rtu_frame_gap
from mappers.modbus.codec import RegisterKind
from mappers.modbus.config import ConfigError, parse_protocol


def test_rtu_gap_is_three_and_a_half_characters_but_at_least_2_ms() -> None:
    assert rtu_frame_gap(9600) == pytest.approx(3.5 * 11 / 9600)  # about 4 ms
    assert rtu_frame_gap(1200) == pytest.approx(0.0321, abs=1e-4)
    assert rtu_frame_gap(115200) == 0.002


async def test_a_serial_line_is_opened_with_one_set_of_line_settings(tmp_path: Path) -> None:
    line = str(tmp_path / "ttyS9")
    pool = BusPool()
    try:
        a = pool.acquire(parse_protocol({"communicateMode": "RTU", "serialPort": line,
                                         "baudRate": 9600, "slaveID": 1}))
        b = pool.acquire(parse_protocol({"communicateMode": "RTU", "serialName": line,
                                         "baudRate": "9600", "slaveID": 2}))
        assert a is b
        with pytest.raises(ConfigError, match="9600 baud 8E1; this device asks for 19200"):
            pool.acquire(parse_protocol({"communicateMode": "RTU", "serialPort": line,
                                         "baudRate": 19200, "slaveID": 3}))
    finally:
        await pool.close()


async def test_symlinked_serial_paths_are_one_bus(tmp_path: Path) -> None:
    real = tmp_path / "ttyUSB0"
    real.touch()
    alias = tmp_path / "by-id-usb-FTDI"
    os.symlink(real, alias)
    pool = BusPool()
    try:
        a = pool.acquire(parse_protocol({"communicateMode": "RTU", "serialPort": str(real)}))
        b = pool.acquire(parse_protocol({"communicateMode": "RTU", "serialPort": str(alias)}))
        assert a is b
    finally:
        await pool.close()


async def test_a_closed_bus_refuses_requests_and_bad_counts_are_caught_early() -> None:
    pool = BusPool()
    bus = pool.acquire(parse_protocol({"ip": "127.0.0.1", "port": 1}))
    with pytest.raises(ValueError, match=r"1\.\.125"):
        await bus.read(1, RegisterKind.HOLDING, 0, 126)
    with pytest.raises(ValueError, match="16-bit"):
        await bus.write_registers(1, 0, [70000])
    await pool.close()
    with pytest.raises(BusUnavailable, match="closed"):
        await bus.read(1, RegisterKind.HOLDING, 0, 1)
