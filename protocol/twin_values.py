"""What a twin key, a twin value and a twin type may be.

These are KubeEdge's rules for twin updates arriving over MQTT or DMI
(reference/kubeedge-protocol.md §1.4), so a mapper written for KubeEdge is accepted and
refused exactly where KubeEdge would accept or refuse it:

- a key is 1-128 characters from ``a-z A-Z 0-9 - _ . , : / @ #``;
- a non-empty value is 1-512 characters from the same set (no spaces, ``+``, quotes or
  JSON); the empty string is allowed and means "no value";
- a type is ``int``, ``integer``, ``float``, ``boolean``, ``string``, ``deleted`` or the
  empty string (read as ``string``), and a value must parse as its type.

Parsing follows Go's ``strconv`` where a twin value can reach it: integers are
base-10 ``int64`` with an optional sign; floats are decimal (or ``inf``/``nan``), without
the underscores Python would allow, and a finite spelling that overflows a float64 is
refused as Go refuses it.  Hexadecimal floats, which Go also reads, are refused here.
"""

from __future__ import annotations

import math
import re
from enum import StrEnum

_CHARSET = r"[a-zA-Z0-9\-_.,:/@#]"
KEY_PATTERN = re.compile(_CHARSET + r"{1,128}")
VALUE_PATTERN = re.compile(_CHARSET + r"{1,512}")
MAX_KEY_LENGTH = 128
MAX_VALUE_LENGTH = 512

_INT = re.compile(r"[+-]?[0-9]+")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FLOAT_SPECIALS = frozenset({"inf", "infinity", "nan"})


class TwinType(StrEnum):
    INT = "int"
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    STRING = "string"
    DELETED = "deleted"  # a tombstone: the property was removed, its versions live on


ALLOWED_TYPE_NAMES = ("int", "integer", "float", "boolean", "string", "deleted", "")


def parse_twin_type(name: str) -> TwinType | None:
    """The type a ``metadata.type`` names; ``""`` is ``string``; ``None`` if not allowed."""
    if name == "":
        return TwinType.STRING
    try:
        return TwinType(name)
    except ValueError:
        return None


def is_valid_key(key: str) -> bool:
    return KEY_PATTERN.fullmatch(key) is not None


def is_valid_value(value: str) -> bool:
    """The charset rule; the empty string passes (it means "no value")."""
    return value == "" or VALUE_PATTERN.fullmatch(value) is not None


def _parse_int(value: str) -> int | None:
    if _INT.fullmatch(value) is None:
        return None
    number = int(value)
    return number if _INT64_MIN <= number <= _INT64_MAX else None


def _parse_float(value: str) -> float | None:
    if "_" in value:  # Python reads "1_000"; Go's ParseFloat does not
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if math.isinf(number) and value.lstrip("+-").lower() not in _FLOAT_SPECIALS:
        return None  # "1e999": Go reports a range error instead of returning +Inf
    return number


def value_fits_type(value: str, twin_type: TwinType) -> bool:
    """Whether a non-empty ``value`` parses as ``twin_type``."""
    if twin_type in (TwinType.INT, TwinType.INTEGER):
        return _parse_int(value) is not None
    if twin_type is TwinType.FLOAT:
        return _parse_float(value) is not None
    if twin_type is TwinType.BOOLEAN:
        return value in ("true", "false")
    return True


def values_equal(a: str, b: str, twin_type: TwinType) -> bool:
    """Whether two values mean the same for the delta.

    KubeEdge compares the strings, so a mapper that reads ``30.0`` back after being asked
    for ``30`` sees the same delta forever.  Numbers are compared as numbers here; any
    other pair is compared as text.
    """
    if a == b:
        return True
    if twin_type in (TwinType.INT, TwinType.INTEGER):
        x, y = _parse_int(a), _parse_int(b)
        return x is not None and x == y
    if twin_type is TwinType.FLOAT:
        fx, fy = _parse_float(a), _parse_float(b)
        return fx is not None and fy is not None and fx == fy
    return False


_MODEL_TYPES: dict[str, TwinType] = {
    "INT": TwinType.INT,
    "FLOAT": TwinType.FLOAT,
    "DOUBLE": TwinType.FLOAT,  # KubeEdge's edge refuses "double"; float is what it means
    "BOOLEAN": TwinType.BOOLEAN,
    "STRING": TwinType.STRING,
    "BYTES": TwinType.STRING,
    "STREAM": TwinType.STRING,
}


def twin_type_for_model_type(model_type: str) -> TwinType | None:
    """The twin type for a DeviceModel ``properties[].type`` (``INT``, ``FLOAT``, ...)."""
    return _MODEL_TYPES.get(model_type.upper())
