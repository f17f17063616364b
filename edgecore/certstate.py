"""The node's certificate on disk, and when to renew it.

``pki/node.json`` names the current certificate/key pair and its validity.  A renewal
writes the new pair under new file names first and then replaces node.json in one
atomic rename, so a kill -9 at any moment leaves a matching pair in use.
Reading this file needs no ``cryptography`` import (the edge loads that library only
at join and renewal).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from certs.keyfiles import write_private, write_public
from certs.rotation import renewal_deadline, renewal_fraction


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
    return CertState(**json.loads((pki / "node.json").read_text()))


def install_certificate(pki: Path, cert_pem: bytes, key_pem: bytes,
                        not_before: datetime, not_after: datetime,
                        rand: float | None = None) -> CertState:
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
        renewAt=renewal_deadline(not_before, not_after, fraction).astimezone(UTC).isoformat(),
    )
    old = load_state(pki) if (pki / "node.json").exists() else None
    write_public(pki / "node.json", json.dumps(asdict(state), indent=2).encode())
    if old is not None and old.cert != cert_name:
        for name in (old.cert, old.key):
            try:
                os.unlink(pki / name)
            except FileNotFoundError:
                pass
    return state
