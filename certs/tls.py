"""TLS contexts for the cloud-edge link and the join endpoint (standard library ``ssl`` only).

Policy, the same on both ends: TLS 1.2 or newer; for TLS 1.2 only ECDHE key exchange with
AEAD ciphers (forward secrecy, no CBC padding oracles); TLS 1.3 suites are all AEAD
already. No compression (CRIME), no renegotiation.

A node's identity is the CN of its verified client certificate (``peer_common_name``).
OpenSSL checks the extended key usage for the role: a server verifying a client accepts
only certificates with clientAuth, so the cloud's own server certificate cannot be used
to pose as a node.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from certs.keyfiles import check_private_key_file

AEAD_ECDHE_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

_HARDENING_OPTIONS = ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION


def server_context(
    cert: Path, key: Path, ca: Path | None, *, require_client_cert: bool
) -> ssl.SSLContext:
    """Context for a TLS server (the hub on :10000, the join/API server on :10002).

    With ``require_client_cert`` every client must present a certificate issued by ``ca``
    (the hub). Without it, a client certificate is optional but, when ``ca`` is given and
    the client sends one, it must verify (the join server: new nodes come with a token,
    renewing nodes with their current certificate).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _apply_policy(ctx)
    check_private_key_file(key)
    ctx.load_cert_chain(certfile=cert, keyfile=key)
    if require_client_cert:
        if ca is None:
            raise ValueError("require_client_cert needs the CA that issues client certificates")
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=ca)
    elif ca is not None:
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(cafile=ca)
    return ctx


def client_context(
    ca: Path | bytes, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """Context for a client that verifies the server against ``ca`` and checks its name.

    ``ca`` is a file path or the CA certificate itself (PEM or DER bytes). ``cert`` and
    ``key`` are the node's client certificate and key (0600), when it has them.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
    _apply_policy(ctx)
    if isinstance(ca, bytes):
        if ca.lstrip().startswith(b"-----BEGIN"):
            ctx.load_verify_locations(cadata=ca.decode("ascii"))
        else:
            ctx.load_verify_locations(cadata=ca)
    else:
        ctx.load_verify_locations(cafile=ca)
    if cert is not None:
        if key is not None:
            check_private_key_file(key)
        ctx.load_cert_chain(certfile=cert, keyfile=key)
    elif key is not None:
        raise ValueError("a client key was given without its certificate")
    return ctx


def fetch_insecure_context() -> ssl.SSLContext:
    """Context that verifies nothing, for exactly one request: the edge fetching the CA.

    At join the edge has no CA to verify the cloud with, so it downloads the CA over an
    unverified connection. This is safe because the edge then hashes what it received
    and compares it with the CA hash in the join token, which the operator copied from
    the real cloud; a man in the middle cannot produce a certificate with that hash. The
    edge uses the downloaded CA only after that check, and every later connection
    (the CSR request, the hub link) uses ``client_context`` with full verification.
    Never use this context for anything else.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _apply_policy(ctx)
    ctx.check_hostname = False  # must be cleared before verify_mode can be CERT_NONE
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def peer_common_name(peercert: dict[str, Any] | None) -> str | None:
    """The subject CN from ``SSLSocket.getpeercert()`` / transport ``"peercert"``.

    Returns None when there is no verified certificate (an empty dict) or when the
    subject holds several different CNs: an identity that is ambiguous is no identity.
    """
    if not peercert:
        return None
    names: set[str] = {
        value
        for rdn in peercert.get("subject", ())
        for attr, value in rdn
        if attr == "commonName" and isinstance(value, str)
    }
    if len(names) != 1:
        return None
    return names.pop()


def _apply_policy(ctx: ssl.SSLContext) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(AEAD_ECDHE_CIPHERS)
    ctx.options |= _HARDENING_OPTIONS
