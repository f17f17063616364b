"""Registers ↔ values (pure).

A Modbus register is 16 bits.  A value of N registers is laid out big-endian by default
(Modbus' own byte order, and the first register holds the most significant word);
devices that differ are described with two switches, as in KubeEdge's visitor config:

- ``isSwap``: swap the two bytes inside every register;
- ``isRegisterSwap``: reverse the order of the registers of a multi-register value
  (applies to every multi-register type, strings and bytes included).

``scale`` maps the raw number to the reported one (reported = raw * scale) and back on
writes (raw = value / scale, rounded half away from zero for integer types and then
range-checked).  Arithmetic goes through ``Decimal`` so that 215 * 0.1 reports "21.5",
not "21.500000000000004".  An integer type reports an ``int`` when the scale is a whole
number and a ``float`` otherwise, so one property always reports the same kind of value.

Values arrive for writing as the twin's string form; ``to_twin`` gives the string form
of a decoded value.  Every problem is a ``CodecError`` that names it.
"""

from __future__ import annotations

import math
import struct
import sys
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, DecimalException, InvalidOperation
from enum import StrEnum

from protocol.errors import InvalidObject

Value = str | int | float | bool


class CodecError(InvalidObject):
    """A value cannot be decoded from, or encoded into, the registers of a property."""


class RegisterKind(StrEnum):
    """The four Modbus tables, spelt as KubeEdge's visitor ``register`` key spells them."""

    COIL = "CoilRegister"
    DISCRETE_INPUT = "DiscreteInputRegister"
    INPUT = "InputRegister"
    HOLDING = "HoldingRegister"

    @property
    def is_bits(self) -> bool:
        return self in (RegisterKind.COIL, RegisterKind.DISCRETE_INPUT)

    @property
    def is_writable(self) -> bool:
        return self in (RegisterKind.COIL, RegisterKind.HOLDING)


class DataType(StrEnum):
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    BOOLEAN = "boolean"
    STRING = "string"  # ASCII, two characters per register, first character in the high byte
    BYTES = "bytes"  # the raw register bytes as lowercase hex, e.g. "41ac0000"


_FIXED_REGISTERS: dict[DataType, int] = {
    DataType.INT16: 1,
    DataType.UINT16: 1,
    DataType.BOOLEAN: 1,
    DataType.INT32: 2,
    DataType.UINT32: 2,
    DataType.FLOAT32: 2,
    DataType.FLOAT64: 4,
}

# (minimum, maximum, signed) of the integer types.
_INT_RANGES: dict[DataType, tuple[int, int, bool]] = {
    DataType.INT16: (-(2**15), 2**15 - 1, True),
    DataType.UINT16: (0, 2**16 - 1, False),
    DataType.INT32: (-(2**31), 2**31 - 1, True),
    DataType.UINT32: (0, 2**32 - 1, False),
}

_FLOAT_FORMATS: dict[DataType, str] = {DataType.FLOAT32: ">f", DataType.FLOAT64: ">d"}
_FLOAT32_MAX: float = struct.unpack(">f", b"\x7f\x7f\xff\xff")[0]

_TRUE_WORDS = frozenset({"true", "1", "on", "yes"})
_FALSE_WORDS = frozenset({"false", "0", "off", "no"})


def registers_needed(data_type: DataType, limit: int = 1) -> int:
    """How many registers (or bits, for coils and discrete inputs) a value occupies.

    Numeric and boolean types have a fixed size; ``limit`` is the length of a string or
    bytes value in registers."""
    fixed = _FIXED_REGISTERS.get(data_type)
    if fixed is not None:
        return fixed
    if limit < 1:
        raise CodecError(f"{data_type} needs a limit of at least 1 register, got {limit}")
    return limit


@dataclass(frozen=True, slots=True)
class ValueSpec:
    """How one property's value sits in its registers."""

    data_type: DataType
    limit: int = 1
    scale: float = 1.0
    is_swap: bool = False
    is_register_swap: bool = False

    @property
    def count(self) -> int:
        return registers_needed(self.data_type, self.limit)


# --- decoding ----------------------------------------------------------------------------


def decode(registers: list[int], spec: ValueSpec) -> Value:
    """The value held in ``registers`` (bits are passed as 0/1)."""
    count = spec.count
    if len(registers) != count:
        raise CodecError(f"{spec.data_type} needs {count} register(s), got {len(registers)}")
    for reg in registers:
        if not 0 <= reg <= 0xFFFF:
            raise CodecError(f"register value {reg} is not a 16-bit unsigned number")
    if spec.data_type is DataType.BOOLEAN:
        return registers[0] != 0
    raw = _registers_to_bytes(registers, spec)
    if spec.data_type is DataType.STRING:
        # C-string semantics: anything after the first NUL is padding.  Bytes outside ASCII
        # become U+FFFD so a garbled name is still reported rather than hiding the device.
        text = raw.split(b"\x00", 1)[0].decode("ascii", errors="replace")
        return text.rstrip(" ")
    if spec.data_type is DataType.BYTES:
        return raw.hex()
    int_range = _INT_RANGES.get(spec.data_type)
    if int_range is not None:
        number = int.from_bytes(raw, "big", signed=int_range[2])
        return _scale_int(number, spec.scale)
    (number_f,) = struct.unpack(_FLOAT_FORMATS[spec.data_type], raw)
    if spec.data_type is DataType.FLOAT32:
        number_f = _shortest_float32(number_f)
    return _scale_float(number_f, spec.scale)


def _registers_to_bytes(registers: list[int], spec: ValueSpec) -> bytes:
    words = list(registers)
    if spec.is_register_swap:
        words.reverse()
    out = bytearray()
    for word in words:
        hi, lo = word >> 8, word & 0xFF
        out += bytes((lo, hi)) if spec.is_swap else bytes((hi, lo))
    return bytes(out)


def _scale_int(number: int, scale: float) -> int | float:
    if scale == 1:
        return number
    product = Decimal(number) * _decimal(scale)
    if float(scale).is_integer():
        return int(product)
    return float(product)


def _scale_float(number: float, scale: float) -> float:
    if scale == 1:
        return number
    if not math.isfinite(number):
        return number * scale
    return float(Decimal(repr(number)) * _decimal(scale))


def _shortest_float32(number: float) -> float:
    """The shortest decimal that is the same float32, so 0.1f reports 0.1 rather than
    0.10000000149011612 (the device cannot tell them apart)."""
    if not math.isfinite(number):
        return number
    packed = struct.pack(">f", number)
    for digits in range(1, 10):
        candidate = float(f"{number:.{digits}g}")
        if abs(candidate) <= _FLOAT32_MAX and struct.pack(">f", candidate) == packed:
            return candidate
    return number


def _decimal(scale: float) -> Decimal:
    if scale == 0 or not math.isfinite(scale):
        raise CodecError(f"scale must be a finite non-zero number, got {scale!r}")
    return Decimal(repr(float(scale)))


# --- encoding ----------------------------------------------------------------------------


def encode(value: str, spec: ValueSpec) -> list[int]:
    """The registers that hold ``value`` (the twin's string form).  A boolean encodes as
    ``[1]`` or ``[0]`` whether it goes to a coil or to a register."""
    text = value.strip()
    if spec.data_type is DataType.BOOLEAN:
        return [1 if _parse_bool(text) else 0]
    if spec.data_type is DataType.STRING:
        raw = _encode_string(value, spec)
    elif spec.data_type is DataType.BYTES:
        raw = _encode_bytes(text, spec)
    elif spec.data_type in _INT_RANGES:
        raw = _encode_int(text, spec)
    else:
        raw = _encode_float(text, spec)
    return _bytes_to_registers(raw, spec)


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE_WORDS:
        return True
    if lowered in _FALSE_WORDS:
        return False
    raise CodecError(f"{text!r} is not a boolean (use true/false, 1/0, on/off)")


def _parse_number(text: str, data_type: DataType) -> Decimal:
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise CodecError(f"{text!r} is not a number (property type {data_type})") from None
    if not number.is_finite():
        raise CodecError(f"{text!r} is not a finite number (property type {data_type})")
    return number


def _encode_int(text: str, spec: ValueSpec) -> bytes:
    low, high, signed = _INT_RANGES[spec.data_type]
    wanted = _parse_number(text, spec.data_type)
    unrounded = _divide(text, spec, wanted, low, high)
    # quantize() cannot round a number of 28 digits or more: it would raise
    # InvalidOperation for "1e28" (found by tests/fuzz).  No register holds 20 digits.
    if unrounded.adjusted() >= 20:
        raise CodecError(_range_message(text, spec, unrounded, low, high))
    raw = unrounded.quantize(Decimal(1), rounding=ROUND_HALF_UP)
    if not low <= raw <= high:
        raise CodecError(_range_message(text, spec, raw, low, high))
    return int(raw).to_bytes(registers_needed(spec.data_type) * 2, "big", signed=signed)


def _encode_float(text: str, spec: ValueSpec) -> bytes:
    wanted = _parse_number(text, spec.data_type)
    largest = _FLOAT32_MAX if spec.data_type is DataType.FLOAT32 else sys.float_info.max
    raw = float(_divide(text, spec, wanted, -largest, largest))
    if not -largest <= raw <= largest:  # also catches the inf of a Decimal beyond float64
        raise CodecError(_range_message(text, spec, raw, -largest, largest))
    return struct.pack(_FLOAT_FORMATS[spec.data_type], raw)


def _divide(text: str, spec: ValueSpec, wanted: Decimal, low: object, high: object) -> Decimal:
    """``wanted / scale``; a quotient beyond Decimal's exponent range ("1e999999999")
    is out of range, not a crash."""
    try:
        return wanted / _decimal(spec.scale)
    except DecimalException:
        raise CodecError(_range_message(text, spec, "beyond any register", low, high)) from None


def _range_message(text: str, spec: ValueSpec, raw: object, low: object, high: object) -> str:
    scaled = f" (raw {raw} after scale {spec.scale:g})" if spec.scale != 1 else ""
    return f"value {text} out of range for {spec.data_type}{scaled}: allowed raw {low}..{high}"


def _encode_string(value: str, spec: ValueSpec) -> bytes:
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        raise CodecError(f"{value!r} is not ASCII, which a string register holds") from None
    if b"\x00" in raw:
        raise CodecError("a string value cannot contain NUL characters")
    size = spec.count * 2
    if len(raw) > size:
        raise CodecError(
            f"string of {len(raw)} characters does not fit {spec.count} register(s) "
            f"({size} characters)"
        )
    return raw.ljust(size, b"\x00")


def _encode_bytes(text: str, spec: ValueSpec) -> bytes:
    digits = text.removeprefix("0x").removeprefix("0X").replace(" ", "")
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        raise CodecError(f"{text!r} is not a hex string") from None
    if len(raw) != spec.count * 2:
        raise CodecError(
            f"bytes value has {len(raw)} bytes, the property holds exactly {spec.count * 2}"
        )
    return raw


def _bytes_to_registers(raw: bytes, spec: ValueSpec) -> list[int]:
    words: list[int] = []
    for i in range(0, len(raw), 2):
        hi, lo = raw[i], raw[i + 1]
        words.append((lo << 8 | hi) if spec.is_swap else (hi << 8 | lo))
    if spec.is_register_swap:
        words.reverse()
    return words


# --- twin form ---------------------------------------------------------------------------


def to_twin(value: Value) -> str:
    """The string a twin reports for a decoded value ("true"/"false" for booleans, as
    KubeEdge's twins do; the shortest round-tripping form for floats)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)
