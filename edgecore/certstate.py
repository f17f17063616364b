"""The node's certificate on disk, and when to renew it.

``pki/node.json`` names the current certificate/key pair and its validity.  A renewal
writes the new pair under new file names first and then replaces node.json in one
atomic rename, so a kill -9 at any moment leaves a matching pair in use.
Reading this file needs no ``cryptography`` import (the edge loads that library only
at join and renewal).

Clock skew: the cloud's clock decides whether a certificate is valid, and this node's
clock may differ from it by up to the cloud's tolerance (``clockSkewSeconds``, learned
at join).  So renewal is due no later than ``tolerance`` before notAfter (a node running
behind still renews in time), and the node calls its certificate expired only
``tolerance`` after notAfter (a node running ahead does not give up early).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from certs.errors import CertError, format_utc
from certs.keyfiles import check_private_key_file, write_private, write_public
from certs.rotation import renewal_deadline, renewal_fraction

STATE_FILE = "node.json"


class NodeCertExpired(CertError):
    """The node certificate is past its notAfter (plus the tolerance) by this node's clock;
    only a new join gives the node a certificate again."""

    def __init__(self, not_after: datetime, now: datetime, rejoin: str) -> None:
        self.not_after = not_after
        super().__init__(
            f"node certificate expired at {format_utc(not_after)} (this node's clock says "
            f"{format_utc(now)}); the cloud will refuse it. Re-join with a new token from "
            f"`efctl token create`: {rejoin}"
        )


@dataclass(frozen=True)
class CertState:
    cert: str  # file name inside pki/
    key: str
    notBefore: str  # ISO 8601 UTC
    notAfter: str
    renewAt: str

    @property
    def not_after(self) -> datetime:
        return datetime.fromisoformat(self.notAfter)

    @property
    def renew_at(self) -> datetime:
        return datetime.fromisoformat(self.renewAt)


def load_state(pki: Path) -> CertState:
    try:
        raw = (pki / STATE_FILE).read_text()
    except FileNotFoundError:
        raise CertError(
            f"{pki / STATE_FILE} does not exist: this node has no certificate; "
            "run `edgecore join` first") from None
    try:
        return CertState(**json.loads(raw))
    except (ValueError, TypeError):
        raise CertError(f"{pki / STATE_FILE} is damaged; run `edgecore join` again") from None


def check_node_key(pki: Path) -> CertState:
    """The current certificate state, after checking that only the owner can read its key
    (InsecureKeyFile otherwise): edgecore refuses to start on an exposed key."""
    state = load_state(pki)
    check_private_key_file(pki / state.key)
    return state


def check_expiry(state: CertState, now: datetime, tolerance: timedelta, rejoin: str) -> None:
    """NodeCertExpired if ``state``'s certificate is expired by this node's clock, allowing
    for this node's clock being up to ``tolerance`` ahead of the cloud's."""
    if now > state.not_after + tolerance:
        raise NodeCertExpired(state.not_after, now, rejoin)


def rejoin_command(server: str, node: str, data_dir: Path) -> str:
    """The command that gives this node a new certificate and keeps its cached state."""
    return (f"edgecore join --server {server} --token <new token> --node-name {node} "
            f"--data-dir {data_dir}")


def renew_time(not_before: datetime, not_after: datetime, fraction: float,
               tolerance: timedelta = timedelta(0)) -> datetime:
    """When to renew: ``fraction`` of the way through the validity, but no later than
    ``tolerance`` before notAfter (and never before notBefore)."""
    planned = renewal_deadline(not_before, not_after, fraction)
    return max(not_before, min(planned, not_after - tolerance))


def install_certificate(pki: Path, cert_pem: bytes, key_pem: bytes,
                        not_before: datetime, not_after: datetime,
                        rand: float | None = None,
                        tolerance: timedelta = timedelta(0)) -> CertState:
    """Store a new certificate/key pair and make it the current one."""
    generation = int(datetime.now(UTC).timestamp() * 1000)
    cert_name, key_name = f"node-{generation}.crt", f"node-{generation}.key"
    write_private(pki / key_name, key_pem)
    write_public(pki / cert_name, cert_pem)
    fraction = renewal_fraction(random.random() if rand is None else rand)
    state = CertState(
        cert=cert_name, key=key_name,
        notBefore=not_before.astimezone(UTC).isoformat(),
        notAfter=not_after.astimezone(UTC).isoformat(),
        renewAt=renew_time(not_before, not_after, fraction, tolerance).astimezone(
            UTC).isoformat(),
    )
    try:
        old: CertState | None = load_state(pki)
    except CertError:
        old = None  # first join, or a damaged file that a join is here to replace
    write_public(pki / STATE_FILE, json.dumps(asdict(state), indent=2).encode())
    if old is not None and old.cert != cert_name:
        for name in (old.cert, old.key):
            try:
                os.unlink(pki / name)
            except FileNotFoundError:
                pass
    return state
