"""The Modbus register codec (mappers/modbus/codec.py) against whatever a device holds
and whatever a twin asks for.

tests/unit/mappers/test_modbus_codec.py round-trips values a user writes (value ->
registers -> value).  A mapper also runs the other way round every poll: it reads
registers, reports them as twin strings, and writes a desired value back from such a
string.  So here, for every data type, byte order, word order and scale the codec
supports: any registers decode; the reported string encodes back to the very same
registers (floats to the same bits); anything else a twin might send is either encoded
into registers of the right count and width or refused with a CodecError.
"""

from __future__ import annotations

import math
import struct

from hypothesis import given
from hypothesis import strategies as st

from mappers.modbus.codec import (
    CodecError,
    DataType,
    ValueSpec,
    decode,
    encode,
    registers_needed,
    to_twin,
)
from tests.fuzz.budget import Tally, fuzz

INTERFACE = "Modbus register codec (mappers.modbus.codec)"

INTEGERS = (DataType.INT16, DataType.UINT16, DataType.INT32, DataType.UINT32)
FLOATS = (DataType.FLOAT32, DataType.FLOAT64)
# Scales a device description uses: decimal fractions, whole factors, binary fractions.
SCALES = (1.0, 0.1, 0.01, 0.001, 0.5, 0.25, 2.0, 10.0, 100.0, 1000.0)

registers = st.integers(0, 0xFFFF)
swaps = st.tuples(st.booleans(), st.booleans())


@st.composite
def specs(draw: st.DrawFn, types: tuple[DataType, ...] = tuple(DataType)) -> ValueSpec:
    data_type = draw(st.sampled_from(types))
    is_swap, is_register_swap = draw(swaps)
    scale = draw(st.sampled_from(SCALES)) if data_type in INTEGERS + FLOATS else 1.0
    return ValueSpec(data_type, limit=draw(st.integers(1, 8)), scale=scale,
                     is_swap=is_swap, is_register_swap=is_register_swap)


@st.composite
def held(draw: st.DrawFn, types: tuple[DataType, ...] = tuple(DataType)
         ) -> tuple[ValueSpec, list[int]]:
    """A property and the registers a device holds for it."""
    spec = draw(specs(types))
    return spec, draw(st.lists(registers, min_size=spec.count, max_size=spec.count))


def _check_registers(spec: ValueSpec, out: list[int]) -> None:
    assert len(out) == registers_needed(spec.data_type, spec.limit)
    assert all(0 <= r <= 0xFFFF for r in out)


@fuzz()
@given(held((*INTEGERS, DataType.BYTES)))
def test_integers_and_bytes_read_and_written_back_are_the_same_registers(
        tally: Tally, device: tuple[ValueSpec, list[int]]) -> None:
    spec, regs = device
    with tally.example(INTERFACE):
        assert encode(to_twin(decode(regs, spec)), spec) == regs


@fuzz()
@given(held(FLOATS))
def test_floats_read_and_written_back_are_the_same_bits(
        tally: Tally, device: tuple[ValueSpec, list[int]]) -> None:
    spec, regs = device
    with tally.example(INTERFACE):
        value = decode(regs, spec)
        assert isinstance(value, float)
        if not math.isfinite(value):
            try:  # NaN and infinities are reported, but cannot be asked for
                encode(to_twin(value), spec)
            except CodecError:
                return
            raise AssertionError(f"{to_twin(value)} was encoded")
        written = encode(to_twin(value), spec)
        if spec.scale == 1:
            fmt = ">f" if spec.data_type is DataType.FLOAT32 else ">d"
            back = decode(written, spec)
            assert struct.pack(fmt, float(back)) == struct.pack(fmt, value)
            if value != 0:  # (the sign of a zero may go: -0.0 reports as "-0.0", fine)
                assert written == regs
        else:  # scaled: the reported value survives, within the float's precision
            assert math.isclose(float(decode(written, spec)), value, rel_tol=1e-6,
                                abs_tol=1e-300)


@fuzz()
@given(held((DataType.STRING, DataType.BOOLEAN)))
def test_strings_and_booleans_settle_after_one_write(
        tally: Tally, device: tuple[ValueSpec, list[int]]) -> None:
    # A device may hold bytes after the NUL, trailing blanks, non-ASCII or a 7 for
    # "true": those read as the canonical value, which then writes and reads unchanged.
    spec, regs = device
    with tally.example(INTERFACE):
        value = decode(regs, spec)
        try:
            written = encode(to_twin(value), spec)
        except CodecError:
            assert isinstance(value, str) and "\ufffd" in value  # garbled: not writable
            return
        _check_registers(spec, written)
        assert decode(written, spec) == value


twin_strings = (st.text(max_size=40)
                | st.sampled_from(["", " ", "1e400", "-0", "0x10", "nan", "inf", "-inf",
                                   "1_000", "٣", "²", "1e-400", "4294967296", "-32769",
                                   "99999999999999999999999999", "true", "on", "41ac0000",
                                   "0x41AC0000", " 12 ", "1.5e3"])
                | st.integers(-(2**70), 2**70).map(str)
                | st.floats().map(repr))


@fuzz()
@given(specs(), twin_strings)
def test_any_desired_value_encodes_or_is_refused_with_a_reason(
        tally: Tally, spec: ValueSpec, text: str) -> None:
    with tally.example(INTERFACE):
        try:
            out = encode(text, spec)
        except CodecError as exc:
            assert exc.message
            return
        _check_registers(spec, out)
        decode(out, spec)


@fuzz()
@given(specs(), st.lists(st.integers(-5, 0x1_0005), max_size=10),
       st.sampled_from([0.0, math.nan, math.inf, -1.0, 1e-300, 1e300]))
def test_bad_registers_and_bad_scales_are_codec_errors(
        tally: Tally, spec: ValueSpec, regs: list[int], scale: float) -> None:
    with tally.example(INTERFACE):
        for candidate in (spec, ValueSpec(spec.data_type, spec.limit, scale, spec.is_swap,
                                          spec.is_register_swap)):
            try:
                value = decode(regs, candidate)
            except CodecError:
                continue
            assert len(regs) == candidate.count
            assert all(0 <= r <= 0xFFFF for r in regs)
            try:
                encode(to_twin(value), candidate)
            except CodecError:
                pass
