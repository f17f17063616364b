from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certs.errors import CertError
from certs.rotation import read_cert_validity, renewal_deadline, renewal_fraction

NOT_BEFORE = datetime(2026, 1, 1, tzinfo=UTC)
NOT_AFTER = NOT_BEFORE + timedelta(days=365)


def test_fraction_bounds() -> None:
    assert renewal_fraction(0.0) == pytest.approx(0.7)
    assert renewal_fraction(0.5) == pytest.approx(0.8)
    assert renewal_fraction(0.999999) < 0.9


@pytest.mark.parametrize("rand", [-0.1, 1.0, 1.5])
def test_fraction_rejects_out_of_range(rand: float) -> None:
    with pytest.raises(ValueError):
        renewal_fraction(rand)


@given(st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_deadline_falls_between_70_and_90_percent(rand: float) -> None:
    deadline = renewal_deadline(NOT_BEFORE, NOT_AFTER, renewal_fraction(rand))
    lifetime = NOT_AFTER - NOT_BEFORE
    assert (
        NOT_BEFORE + lifetime * 0.7
        <= deadline
        < NOT_BEFORE + lifetime * 0.9 + timedelta(microseconds=1)
    )


def test_deadline_examples() -> None:
    assert renewal_deadline(NOT_BEFORE, NOT_AFTER, 0.8) == NOT_BEFORE + timedelta(days=292)


def test_empty_validity_is_refused() -> None:
    with pytest.raises(ValueError):
        renewal_deadline(NOT_AFTER, NOT_BEFORE, 0.8)


@pytest.mark.parametrize("blob", [b"", b"\x30\x03\x02\x01", b"-----BEGIN CERTIFICATE-----\n!!\n"])
def test_unreadable_certificate_is_a_cert_error(blob: bytes) -> None:
    with pytest.raises(CertError):
        read_cert_validity(blob)
