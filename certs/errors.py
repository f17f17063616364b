"""Errors raised by the PKI code, each worded for the person who has to fix the problem.

    CertError                 root: anything wrong with keys, certificates or tokens
    ├── InsecureKeyFile       a private key file is readable by group or others
    ├── TokenError            a join token cannot be used
    │   ├── TokenExpired      its expiry (plus leeway) has passed
    │   ├── TokenWrongCA      it names a different certificate authority
    │   └── TokenInvalid      malformed, or the signature does not match
    └── CSRRejected           a node's certificate request was refused

Standard library only: edgecore imports this at run time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path


class CertError(Exception):
    """Root of every PKI error; ``str(err)`` is a complete, user-readable message."""


class InsecureKeyFile(CertError):
    """A private key file grants access to group or others (``mode & 0o077``)."""

    def __init__(self, path: Path, mode: int, what: str = "private key") -> None:
        self.path = path
        self.mode = mode & 0o7777
        super().__init__(
            f"{what} {path} has mode {self.mode:04o}, so other users can read it; "
            f"run `chmod 600 {path}` and start again"
        )


class TokenError(CertError):
    """A join token cannot be used."""


class TokenExpired(TokenError):
    def __init__(self, expires_at: datetime, now: datetime) -> None:
        self.expires_at = expires_at
        self.now = now
        super().__init__(
            f"join token expired at {format_utc(expires_at)} (now {format_utc(now)}); "
            "create a new one with `efctl token create`"
        )


class TokenWrongCA(TokenError):
    """The CA hash in the token is not the hash of the CA it is checked against."""

    def __init__(self, token_ca_hash: str, ca_hash: str, message: str | None = None) -> None:
        self.token_ca_hash = token_ca_hash
        self.ca_hash = ca_hash
        super().__init__(
            message
            or (
                f"join token was made for CA sha256:{token_ca_hash[:16]}…, but this cloud's CA "
                f"is sha256:{ca_hash[:16]}…; create a token on this cloud with "
                "`efctl token create`"
            )
        )


class TokenInvalid(TokenError):
    """The token is malformed or its signature does not verify."""


class CSRRejected(CertError):
    """A certificate signing request was refused; the message says why."""


def format_utc(moment: datetime) -> str:
    """``2026-11-25T10:00:00Z``: the form used in every message about a point in time."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
