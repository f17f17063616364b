"""Join tokens (standard library only).

A join token is ``<ca_hash>.<payload>.<signature>``:

* ``ca_hash``: sha256 hex of the cloud CA certificate in DER. The edge has no CA yet when
  it joins; it fetches one over an unverified connection and trusts it only if its hash
  equals this part. That is what makes the unverified fetch safe.
* ``payload``: base64url (unpadded) of compact JSON ``{"exp": <unix seconds>, "nonce": <hex>}``.
* ``signature``: base64url of HMAC-SHA256 over ``"<ca_hash>.<payload>"`` keyed with the
  cloud's token secret (``pki/token.key``). Only cloudcore can make or verify it, and
  binding the CA hash into the MAC stops anyone from pairing a valid token with another CA.

Unlike KubeEdge, the HMAC key is a dedicated random secret, not the CA private key bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from datetime import UTC, datetime, timedelta

from certs.errors import TokenExpired, TokenInvalid, TokenWrongCA

_CA_HASH = re.compile(r"[0-9a-f]{64}")
_TTL = re.compile(r"(\d+)([smhd])")
_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_NONCE_BYTES = 8
_MAC_BYTES = 32  # sha256


def ca_hash_from_der(ca_der: bytes) -> str:
    """The token's CA identifier: lowercase sha256 hex of the CA certificate's DER bytes."""
    return hashlib.sha256(ca_der).hexdigest()


def make_join_token(ca_hash: str, secret: bytes, ttl: timedelta, now: datetime) -> str:
    """Create a token that lets one node join until ``now + ttl``."""
    _require_aware(now)
    if ttl <= timedelta(0):
        raise ValueError(f"token TTL must be positive, got {ttl}")
    if not _CA_HASH.fullmatch(ca_hash):
        raise ValueError(f"CA hash must be 64 lowercase hex digits, got {ca_hash!r}")
    claims = {"exp": int((now + ttl).timestamp()), "nonce": secrets.token_hex(_NONCE_BYTES)}
    payload = _b64encode(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    return f"{ca_hash}.{payload}.{_b64encode(_mac(secret, ca_hash, payload))}"


def token_ca_hash(token: str) -> str:
    """The CA hash a token names, after checking the token's shape (no secret needed).

    The edge calls this before it has any CA to verify against.
    """
    return _parse(token).ca_hash


def verify_join_token(
    token: str,
    *,
    ca_hash: str,
    secret: bytes,
    now: datetime,
    leeway: timedelta = timedelta(minutes=5),
) -> datetime:
    """Check a token presented to this cloud and return its expiry (UTC).

    Order of checks: shape, then CA (so a token from another cloud gets the helpful
    TokenWrongCA rather than a bare signature failure), then signature, then expiry.
    ``leeway`` forgives clock skew between the machine that made the token and this one.
    """
    _require_aware(now)
    parsed = _parse(token)
    if not hmac.compare_digest(parsed.ca_hash, ca_hash.lower()):
        raise TokenWrongCA(parsed.ca_hash, ca_hash.lower())
    expected = _mac(secret, parsed.ca_hash, parsed.payload_b64)
    if not hmac.compare_digest(expected, parsed.signature):
        raise TokenInvalid(
            "join token signature does not match: the token was altered or copied "
            "incompletely; create a new one with `efctl token create`"
        )
    if now > parsed.expires_at + leeway:
        raise TokenExpired(parsed.expires_at, now)
    return parsed.expires_at


def parse_ttl(text: str) -> timedelta:
    """Parse ``90s``, ``15m``, ``1h``, ``24h``, ``7d`` into a positive timedelta."""
    match = _TTL.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(
            f"invalid TTL {text!r}: use a positive whole number followed by "
            "s, m, h or d, for example 90s, 15m, 1h or 7d"
        )
    return timedelta(seconds=int(match.group(1)) * _TTL_UNITS[match.group(2)])


class _ParsedToken:
    __slots__ = ("ca_hash", "expires_at", "payload_b64", "signature")

    def __init__(
        self, ca_hash: str, payload_b64: str, signature: bytes, expires_at: datetime
    ) -> None:
        self.ca_hash = ca_hash
        self.payload_b64 = payload_b64
        self.signature = signature
        self.expires_at = expires_at


def _parse(token: str) -> _ParsedToken:
    # Users paste tokens from terminals; surrounding whitespace is never meaningful.
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise TokenInvalid(
            f"join token must have 3 dot-separated parts, this one has {len(parts)}; "
            "copy the whole output of `efctl token create`"
        )
    ca_hash, payload_b64, signature_b64 = parts
    if not _CA_HASH.fullmatch(ca_hash):
        raise TokenInvalid("join token's first part is not a sha256 CA hash (64 hex digits)")
    try:
        claims = json.loads(_b64decode(payload_b64))
        signature = _b64decode(signature_b64)
    except (ValueError, binascii.Error):
        raise TokenInvalid(
            "join token is damaged: its payload or signature is not valid base64url/JSON"
        ) from None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    # bool is an int subclass; a payload of {"exp": true} is not a time.
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise TokenInvalid("join token payload has no integer 'exp' claim")
    if len(signature) != _MAC_BYTES:
        raise TokenInvalid("join token signature has the wrong length")
    try:
        expires_at = datetime.fromtimestamp(exp, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise TokenInvalid("join token 'exp' claim is out of range") from None
    return _ParsedToken(ca_hash, payload_b64, signature, expires_at)


def _mac(secret: bytes, ca_hash: str, payload_b64: str) -> bytes:
    return hmac.new(secret, f"{ca_hash}.{payload_b64}".encode(), hashlib.sha256).digest()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    # Strict alphabet check: urlsafe_b64decode silently drops characters outside it.
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime (use datetime.now(UTC))")
