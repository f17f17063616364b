"""Kubernetes quantities: what users write in ``resources`` and Queue capabilities."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.quantity import (
    QuantityError,
    cpu_millis,
    format_cpu,
    format_memory,
    memory_bytes,
    parse_quantity,
)


@pytest.mark.parametrize(("text", "millis"), [
    ("500m", 500), ("2", 2000), ("0.5", 500), (".25", 250), ("1.", 1000), ("100m", 100),
    (2, 2000), (0.5, 500), (0.1, 100), ("1k", 1_000_000), ("1e-3", 1), ("2E0", 2000),
    ("250u", 1),  # rounded up to whole millicores, never down (Kubernetes MilliValue)
    ("0", 0), ("+3", 3000),
])
def test_cpu_becomes_millicores(text: str | int | float, millis: int) -> None:
    assert cpu_millis(text) == millis


@pytest.mark.parametrize(("text", "amount"), [
    ("256Mi", 256 * 2**20), ("1Gi", 2**30), ("16314440Ki", 16314440 * 1024),
    ("1G", 10**9), ("1M", 10**6), ("1m", 1),  # a thousandth of a byte rounds up to one
    ("1.5Gi", 3 * 2**29), ("1e3", 1000), ("1E", 10**18), ("2Ei", 2 * 2**60), (1024, 1024),
])
def test_memory_becomes_bytes(text: str | int, amount: int) -> None:
    assert memory_bytes(text) == amount


def test_parse_is_exact() -> None:
    assert parse_quantity("1.1") == Fraction(11, 10)
    assert parse_quantity("-1.5Ki") == -1536


@pytest.mark.parametrize(("text", "says"), [
    ("", "not a valid quantity"),
    ("abc", "not a valid quantity"),
    ("12x", "unknown suffix 'x'"),
    ("1KB", "unknown suffix 'KB'"),
    (" 1", "not a valid quantity"),
    ("1e", "unknown suffix 'e'"),
    ("1e999", "exponent out of range"),
    ("-1", "must not be negative"),
    ("1e30", "too large"),
    (True, "not a valid quantity"),
    (float("nan"), "must be finite"),
])
def test_bad_quantities_are_refused_with_the_reason(text: object, says: str) -> None:
    with pytest.raises(QuantityError, match=says):
        cpu_millis(text)  # type: ignore[arg-type]


def test_formatting_is_canonical() -> None:
    assert format_cpu(2000) == "2"
    assert format_cpu(1500) == "1500m"
    assert format_memory(2**30) == "1Gi"
    assert format_memory(1536 * 2**20) == "1536Mi"
    assert format_memory(1000) == "1000"
    assert format_memory(0) == "0"


@given(st.integers(min_value=0, max_value=2**50))
def test_formatted_amounts_parse_back(amount: int) -> None:
    assert cpu_millis(format_cpu(amount)) == amount
    assert memory_bytes(format_memory(amount)) == amount
