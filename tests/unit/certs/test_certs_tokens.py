from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, datetime, timedelta

import pytest

from certs.errors import TokenExpired, TokenInvalid, TokenWrongCA
from certs.tokens import (
    ca_hash_from_der,
    make_join_token,
    parse_ttl,
    token_ca_hash,
    verify_join_token,
)

CA_HASH = ca_hash_from_der(b"our CA certificate")
OTHER_CA_HASH = ca_hash_from_der(b"another cloud's CA certificate")
SECRET = secrets.token_bytes(32)
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def token(ttl: timedelta = timedelta(hours=1), *, ca_hash: str = CA_HASH) -> str:
    return make_join_token(ca_hash, SECRET, ttl, NOW)


def test_round_trip_returns_the_expiry() -> None:
    t = token(timedelta(hours=24))
    assert t.count(".") == 2
    assert token_ca_hash(t) == CA_HASH
    expires = verify_join_token(t, ca_hash=CA_HASH, secret=SECRET, now=NOW)
    assert expires == NOW + timedelta(hours=24)


def test_each_token_is_unique() -> None:
    assert token() != token()


def test_whitespace_around_a_pasted_token_is_ignored() -> None:
    t = f"  {token()}\n"
    assert token_ca_hash(t) == CA_HASH
    verify_join_token(t, ca_hash=CA_HASH, secret=SECRET, now=NOW)


def test_expired_token_names_the_expiry_and_the_fix() -> None:
    t = token(timedelta(hours=1))
    late = NOW + timedelta(hours=2)
    with pytest.raises(TokenExpired) as info:
        verify_join_token(t, ca_hash=CA_HASH, secret=SECRET, now=late)
    assert info.value.expires_at == NOW + timedelta(hours=1)
    message = str(info.value)
    assert "2026-11-25T11:00:00Z" in message
    assert "now 2026-11-25T12:00:00Z" in message
    assert "efctl token create" in message


def test_leeway_forgives_small_clock_skew() -> None:
    t = token(timedelta(hours=1))
    expiry = NOW + timedelta(hours=1)
    verify_join_token(t, ca_hash=CA_HASH, secret=SECRET, now=expiry + timedelta(minutes=4))
    with pytest.raises(TokenExpired):
        verify_join_token(t, ca_hash=CA_HASH, secret=SECRET, now=expiry + timedelta(minutes=6))
    verify_join_token(
        t,
        ca_hash=CA_HASH,
        secret=SECRET,
        now=expiry + timedelta(minutes=9),
        leeway=timedelta(minutes=10),
    )
    with pytest.raises(TokenExpired):
        verify_join_token(
            t,
            ca_hash=CA_HASH,
            secret=SECRET,
            now=expiry + timedelta(seconds=1),
            leeway=timedelta(0),
        )


def test_token_for_another_ca_is_wrong_ca() -> None:
    other_secret = secrets.token_bytes(32)
    t = make_join_token(OTHER_CA_HASH, other_secret, timedelta(hours=1), NOW)
    with pytest.raises(TokenWrongCA) as info:
        verify_join_token(t, ca_hash=CA_HASH, secret=SECRET, now=NOW)
    assert info.value.token_ca_hash == OTHER_CA_HASH
    assert "efctl token create" in str(info.value)


def test_swapping_the_ca_hash_breaks_the_signature() -> None:
    # Someone pairs a genuine token with their own CA: the MAC covers the hash.
    t = token()
    forged = OTHER_CA_HASH + t[len(CA_HASH) :]
    with pytest.raises(TokenInvalid, match="signature"):
        verify_join_token(forged, ca_hash=OTHER_CA_HASH, secret=SECRET, now=NOW)


def test_extended_expiry_is_detected() -> None:
    ca_hash, payload, signature = token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["exp"] += 365 * 86400
    longer = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenInvalid, match="signature"):
        verify_join_token(
            f"{ca_hash}.{longer}.{signature}", ca_hash=CA_HASH, secret=SECRET, now=NOW
        )


def test_altered_signature_is_invalid() -> None:
    ca_hash, payload, signature = token().split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    with pytest.raises(TokenInvalid):
        verify_join_token(f"{ca_hash}.{payload}.{flipped}", ca_hash=CA_HASH, secret=SECRET, now=NOW)


def test_token_signed_with_another_secret_is_invalid() -> None:
    t = make_join_token(CA_HASH, secrets.token_bytes(32), timedelta(hours=1), NOW)
    with pytest.raises(TokenInvalid):
        verify_join_token(t, ca_hash=CA_HASH, secret=SECRET, now=NOW)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "abc",
        f"{CA_HASH}.only-two",
        f"{CA_HASH[:-1]}.e30.AAAA",  # hash too short
        f"{CA_HASH.upper()}.e30.AAAA",  # hash in upper case
        f"{CA_HASH}.!!!!.AAAA",  # payload not base64url
        f"{CA_HASH}.bm90IGpzb24.AAAA",  # payload "not json"
        f"{CA_HASH}.e30.AAAA",  # payload {} (no exp), signature too short
        f"{CA_HASH}.eyJleHAiOnRydWV9.AAAA",  # {"exp":true}
        "a.b.c.d",  # KubeEdge's 4-part format
    ],
)
def test_malformed_tokens_are_invalid(bad: str) -> None:
    with pytest.raises(TokenInvalid):
        token_ca_hash(bad)
    with pytest.raises(TokenInvalid):
        verify_join_token(bad, ca_hash=CA_HASH, secret=SECRET, now=NOW)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_join_token(token(), ca_hash=CA_HASH, secret=SECRET, now=datetime(2026, 1, 1))


def test_non_positive_ttl_is_refused() -> None:
    with pytest.raises(ValueError):
        token(timedelta(0))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        (" 2h ", timedelta(hours=2)),
    ],
)
def test_parse_ttl_accepts_units(text: str, expected: timedelta) -> None:
    assert parse_ttl(text) == expected


@pytest.mark.parametrize("text", ["", "1", "h", "0h", "-1h", "1.5h", "1w", "1H", "1h30m", "1 h"])
def test_parse_ttl_rejects_others_with_a_helpful_message(text: str) -> None:
    with pytest.raises(ValueError, match=r"invalid TTL .*for example 90s, 15m, 1h or 7d"):
        parse_ttl(text)
