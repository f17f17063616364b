from __future__ import annotations

import math
import struct

import pytest
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

SWAPS = [(False, False), (True, False), (False, True), (True, True)]
INT_BOUNDS = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
}


# --- known vectors -------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "text", "registers"), [
    (ValueSpec(DataType.FLOAT32), "21.5", [0x41AC, 0x0000]),
    (ValueSpec(DataType.FLOAT32, is_register_swap=True), "21.5", [0x0000, 0x41AC]),
    (ValueSpec(DataType.FLOAT32, is_swap=True), "21.5", [0xAC41, 0x0000]),
    (ValueSpec(DataType.FLOAT64), "1", [0x3FF0, 0, 0, 0]),
    (ValueSpec(DataType.INT16), "-1", [0xFFFF]),
    (ValueSpec(DataType.INT16, is_swap=True), "258", [0x0201]),
    (ValueSpec(DataType.UINT16), "65535", [0xFFFF]),
    (ValueSpec(DataType.INT32), "305419896", [0x1234, 0x5678]),
    (ValueSpec(DataType.INT32, is_register_swap=True), "305419896", [0x5678, 0x1234]),
    (ValueSpec(DataType.INT32, is_swap=True, is_register_swap=True), "305419896",
     [0x7856, 0x3412]),
    (ValueSpec(DataType.UINT32), "4294967295", [0xFFFF, 0xFFFF]),
    (ValueSpec(DataType.STRING, limit=2), "ABC", [0x4142, 0x4300]),
    (ValueSpec(DataType.STRING, limit=1, is_swap=True), "AB", [0x4241]),
    (ValueSpec(DataType.BYTES, limit=2), "41ac0000", [0x41AC, 0x0000]),
    (ValueSpec(DataType.BOOLEAN), "true", [1]),
    (ValueSpec(DataType.BOOLEAN), "OFF", [0]),
])
def test_known_vectors_encode(spec: ValueSpec, text: str, registers: list[int]) -> None:
    assert encode(text, spec) == registers


def test_known_vectors_decode() -> None:
    assert decode([0x41AC, 0x0000], ValueSpec(DataType.FLOAT32)) == 21.5
    assert decode([0x0000, 0x41AC], ValueSpec(DataType.FLOAT32, is_register_swap=True)) == 21.5
    assert decode([0xFFFE], ValueSpec(DataType.INT16)) == -2
    assert decode([0xFFFE], ValueSpec(DataType.UINT16)) == 65534
    assert decode([0x4546, 0x2D54, 0, 0], ValueSpec(DataType.STRING, limit=4)) == "EF-T"


def test_booleans_are_any_non_zero_register() -> None:
    spec = ValueSpec(DataType.BOOLEAN)
    assert decode([0], spec) is False
    assert decode([1], spec) is True
    assert decode([0x8000], spec) is True


def test_strings_stop_at_nul_and_drop_trailing_spaces() -> None:
    spec = ValueSpec(DataType.STRING, limit=4)
    assert decode([0x4142, 0x2020, 0x2020, 0x2020], spec) == "AB"
    assert decode([0x4142, 0x0043, 0x4444, 0x4444], spec) == "AB"  # garbage after the NUL
    assert decode([0x2041, 0, 0, 0], spec) == " A"  # leading spaces are content


def test_float32_reports_the_shortest_decimal_of_the_device_value() -> None:
    registers = encode("0.1", ValueSpec(DataType.FLOAT32))
    value = decode(registers, ValueSpec(DataType.FLOAT32))
    assert value == 0.1 and to_twin(value) == "0.1"


# --- round trips -----------------------------------------------------------------------------

swap_flags = st.sampled_from(SWAPS)


@given(st.sampled_from(list(INT_BOUNDS)), st.data(), swap_flags)
def test_integers_round_trip(data_type: DataType, data: st.DataObject,
                             swaps: tuple[bool, bool]) -> None:
    low, high = INT_BOUNDS[data_type]
    number = data.draw(st.integers(low, high))
    spec = ValueSpec(data_type, is_swap=swaps[0], is_register_swap=swaps[1])
    registers = encode(str(number), spec)
    assert len(registers) == registers_needed(data_type)
    assert all(0 <= r <= 0xFFFF for r in registers)
    assert decode(registers, spec) == number


@given(st.floats(width=32, allow_nan=False, allow_infinity=False), swap_flags)
def test_float32_round_trips(number: float, swaps: tuple[bool, bool]) -> None:
    spec = ValueSpec(DataType.FLOAT32, is_swap=swaps[0], is_register_swap=swaps[1])
    decoded = decode(encode(repr(number), spec), spec)
    assert isinstance(decoded, float)
    assert struct.pack(">f", decoded) == struct.pack(">f", number)


@given(st.floats(allow_nan=False, allow_infinity=False), swap_flags)
def test_float64_round_trips(number: float, swaps: tuple[bool, bool]) -> None:
    spec = ValueSpec(DataType.FLOAT64, is_swap=swaps[0], is_register_swap=swaps[1])
    assert decode(encode(repr(number), spec), spec) == number


@given(st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=20).map(
    lambda s: s.rstrip(" ")), swap_flags)
def test_strings_round_trip(text: str, swaps: tuple[bool, bool]) -> None:
    spec = ValueSpec(DataType.STRING, limit=10, is_swap=swaps[0], is_register_swap=swaps[1])
    assert decode(encode(text, spec), spec) == text


@given(st.binary(min_size=6, max_size=6), swap_flags)
def test_bytes_round_trip(raw: bytes, swaps: tuple[bool, bool]) -> None:
    spec = ValueSpec(DataType.BYTES, limit=3, is_swap=swaps[0], is_register_swap=swaps[1])
    assert decode(encode(raw.hex(), spec), spec) == raw.hex()


@given(st.booleans(), swap_flags)
def test_booleans_round_trip(value: bool, swaps: tuple[bool, bool]) -> None:
    spec = ValueSpec(DataType.BOOLEAN, is_swap=swaps[0], is_register_swap=swaps[1])
    assert decode(encode(to_twin(value), spec), spec) is value


@given(st.integers(-32768, 32767))
def test_scaled_int16_round_trips_through_the_twin_string(raw: int) -> None:
    spec = ValueSpec(DataType.INT16, scale=0.1)
    reported = decode([raw & 0xFFFF], spec)
    assert encode(to_twin(reported), spec) == [raw & 0xFFFF]


# --- scale -----------------------------------------------------------------------------------


def test_scale_multiplies_on_read_and_divides_on_write() -> None:
    tenths = ValueSpec(DataType.INT16, scale=0.1)
    assert decode([215], tenths) == 21.5
    assert to_twin(decode([3], tenths)) == "0.3"  # not 0.30000000000000004
    assert decode([0xFFFF], tenths) == -0.1
    assert encode("21.5", tenths) == [215]


def test_integer_writes_round_half_away_from_zero() -> None:
    tenths = ValueSpec(DataType.INT16, scale=0.1)
    assert encode("21.55", tenths) == [216]
    assert encode("21.54", tenths) == [215]
    assert encode("-21.55", tenths) == [(-216) & 0xFFFF]
    assert encode("2.5", ValueSpec(DataType.UINT16)) == [3]


def test_a_whole_scale_keeps_integers_integers() -> None:
    spec = ValueSpec(DataType.UINT16, scale=10)
    value = decode([7], spec)
    assert value == 70 and isinstance(value, int)
    assert encode("70", spec) == [7]
    assert isinstance(decode([7], ValueSpec(DataType.UINT16, scale=0.5)), float)


def test_scaled_floats() -> None:
    spec = ValueSpec(DataType.FLOAT32, scale=0.01)
    assert decode(encode("12.34", spec), spec) == 12.34


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "text", "words"), [
    (ValueSpec(DataType.INT16), "32768", "-32768..32767"),
    (ValueSpec(DataType.INT16), "-32769", "out of range for int16"),
    (ValueSpec(DataType.UINT16), "-1", "out of range for uint16"),
    (ValueSpec(DataType.UINT32), "4294967296", "out of range for uint32"),
    (ValueSpec(DataType.INT16, scale=0.1), "4000", "raw 40000 after scale 0.1"),
    (ValueSpec(DataType.FLOAT32), "1e39", "out of range for float32"),
    (ValueSpec(DataType.FLOAT64), "1e400", "out of range for float64"),
    (ValueSpec(DataType.INT32), "warm", "not a number"),
    (ValueSpec(DataType.FLOAT32), "nan", "not a finite number"),
    (ValueSpec(DataType.BOOLEAN), "maybe", "not a boolean"),
    (ValueSpec(DataType.STRING, limit=2), "ABCDE", "does not fit 2 register(s)"),
    (ValueSpec(DataType.STRING, limit=2), "café", "not ASCII"),
    (ValueSpec(DataType.BYTES, limit=2), "41ac", "exactly 4"),
    (ValueSpec(DataType.BYTES, limit=1), "zz", "not a hex string"),
])
def test_writes_that_do_not_fit_are_refused_with_the_reason(spec: ValueSpec, text: str,
                                                            words: str) -> None:
    with pytest.raises(CodecError) as err:
        encode(text, spec)
    assert words in str(err.value)


def test_decode_checks_the_register_count_and_width() -> None:
    with pytest.raises(CodecError, match="needs 2 register"):
        decode([1], ValueSpec(DataType.INT32))
    with pytest.raises(CodecError, match="16-bit"):
        decode([70000], ValueSpec(DataType.UINT16))


def test_registers_needed() -> None:
    assert registers_needed(DataType.INT16) == 1
    assert registers_needed(DataType.BOOLEAN) == 1
    assert registers_needed(DataType.UINT32) == 2
    assert registers_needed(DataType.FLOAT64) == 4
    assert registers_needed(DataType.STRING, 8) == 8
    with pytest.raises(CodecError):
        registers_needed(DataType.STRING, 0)


def test_twin_strings() -> None:
    assert to_twin(True) == "true" and to_twin(False) == "false"
    assert to_twin(21) == "21" and to_twin(21.5) == "21.5"
    assert to_twin(math.inf) == "inf"
    assert to_twin("EF") == "EF"


def test_the_largest_float32_values_decode() -> None:
    spec = ValueSpec(DataType.FLOAT32)
    assert decode([0x7F7F, 0xFFFF], spec) == struct.unpack(">f", b"\x7f\x7f\xff\xff")[0]
    near = 3.4025001647762064e38  # its 4-digit rounding would overflow float32
    assert struct.pack(">f", decode(encode(repr(near), spec), spec)) == struct.pack(">f", near)
