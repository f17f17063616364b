"""Kubernetes resource quantities: ``cpu: 500m``, ``cpu: "2"``, ``memory: 256Mi``.

Grammar (as Kubernetes' ``resource.Quantity``)::

    quantity := [sign] number [suffix]
    number   := digits ["." [digits]] | "." digits
    suffix   := binary (Ki Mi Gi Ti Pi Ei)          powers of 1024
              | decimal (n u m "" k M G T P E)      powers of 1000 (m is milli, M is mega)
              | exponent ("e" | "E") [sign] digits   a power of ten: 1e3 is 1000

Values are parsed exactly (as fractions), then CPU becomes whole **millicores** and memory
whole **bytes**, both rounded up as Kubernetes' ``MilliValue()`` and ``Value()`` do, so a
request is never silently made smaller.  YAML numbers (``cpu: 2``, ``cpu: 0.5``) are
accepted as well as strings.  Resource amounts may not be negative.

The pydantic types at the end (:data:`CpuQuantity`, :data:`MemoryQuantity`) only judge a
field; the object keeps the text the user wrote.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Annotated, Any

from pydantic import BeforeValidator, StrictFloat, StrictInt, StrictStr
from pydantic_core import PydanticCustomError

_QUANTITY = re.compile(r"^([+-]?)(\d+(?:\.\d*)?|\.\d+)(.*)$")
_EXPONENT = re.compile(r"^[eE]([+-]?\d+)$")

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}

# Kubernetes stores a quantity's milli-value in an int64; anything above is an error.
MAX_AMOUNT = 2**63 - 1

_EXAMPLES = "a number with an optional suffix, such as 500m, 2, 256Mi or 1Gi"


class QuantityError(ValueError):
    """A quantity that does not parse, is negative, or is too large."""


def parse_quantity(value: str | int | float) -> Fraction:
    """The exact value of a quantity (may be negative or fractional)."""
    if isinstance(value, bool):
        raise QuantityError(f"{value!r} is not a valid quantity: expected {_EXAMPLES}")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QuantityError(f"{value!r} is not a valid quantity: it must be finite")
        # repr gives the shortest text that round-trips, so 0.1 means one tenth.
        return Fraction(repr(value))
    if not isinstance(value, str):
        raise QuantityError(f"{value!r} is not a valid quantity: expected {_EXAMPLES}")
    match = _QUANTITY.match(value.strip()) if value.strip() == value else None
    if match is None:
        raise QuantityError(f"{value!r} is not a valid quantity: expected {_EXAMPLES}")
    sign, number, suffix = match.groups()
    amount = Fraction(number if not number.endswith(".") else number[:-1])
    if suffix in _BINARY:
        amount *= 1024 ** _BINARY[suffix]
    elif suffix in _DECIMAL:
        amount *= Fraction(10) ** _DECIMAL[suffix]
    elif (exp := _EXPONENT.match(suffix)) is not None:
        power = int(exp.group(1))
        if abs(power) > 64:
            raise QuantityError(f"{value!r} is not a valid quantity: exponent out of range")
        amount *= Fraction(10) ** power
    else:
        raise QuantityError(
            f"{value!r} is not a valid quantity: unknown suffix {suffix!r} "
            "(use m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or an exponent like e3)"
        )
    return -amount if sign == "-" else amount


def _whole(value: str | int | float, scale: int, what: str) -> int:
    amount = parse_quantity(value)
    if amount < 0:
        raise QuantityError(f"{value!r} is not a valid {what}: it must not be negative")
    whole = math.ceil(amount * scale)
    if whole > MAX_AMOUNT:
        raise QuantityError(f"{value!r} is not a valid {what}: it is too large")
    return whole


def cpu_millis(value: str | int | float) -> int:
    """CPU in millicores, rounded up: ``"500m"`` → 500, ``"2"`` → 2000, ``0.25`` → 250."""
    return _whole(value, 1000, "cpu quantity")


def memory_bytes(value: str | int | float) -> int:
    """Memory in bytes, rounded up: ``"256Mi"`` → 268435456, ``"1G"`` → 10**9."""
    return _whole(value, 1, "memory quantity")


def format_cpu(millis: int) -> str:
    """The canonical text for a CPU amount: whole cores as ``"2"``, else ``"1500m"``."""
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def format_memory(amount: int) -> str:
    """The canonical text for a memory amount: the largest binary suffix that divides it
    exactly (``"1Gi"``, ``"1536Mi"``), else plain bytes."""
    for suffix, power in sorted(_BINARY.items(), key=lambda item: -item[1]):
        unit = 1024**power
        if amount and amount % unit == 0:
            return f"{amount // unit}{suffix}"
    return str(amount)


# --- pydantic field types ----------------------------------------------------------------


def _judged(convert: Any) -> Any:
    # Runs before the union so that a wrong type is reported at the field itself rather
    # than at one of the union's members (``cpu.str``).
    def check(value: Any) -> Any:
        try:
            convert(value)
        except QuantityError as exc:
            # The message goes through the context so braces in user text stay literal.
            raise PydanticCustomError("quantity", "{reason}", {"reason": str(exc)}) from None
        return value

    return check


CpuQuantity = Annotated[StrictStr | StrictInt | StrictFloat, BeforeValidator(_judged(cpu_millis))]
"""A CPU amount field: kept as written, refused with a clear message if it does not parse."""

MemoryQuantity = Annotated[
    StrictStr | StrictInt | StrictFloat, BeforeValidator(_judged(memory_bytes))
]
"""A memory amount field: kept as written, refused with a clear message if it does not parse."""
