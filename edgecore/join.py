"""``edgecore join``: from a join token to a node certificate.

1. The token starts with the sha256 of the cloud CA's DER encoding.  Fetch
   ``/ca.crt`` without verification (we cannot verify yet) and accept it only if its
   hash matches — a wrong server or a man in the middle is caught here.
2. Make a P-256 key and a CSR with CN = node name; POST it with the token to
   ``/join``, now verifying the server against that CA.
3. Store the CA, the certificate and the key (0600) and write DIR/edgecore.yaml —
   without the token, which is never stored on the node.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from certs.errors import TokenError
from certs.keyfiles import write_public
from certs.tls import client_context, fetch_insecure_context
from certs.tokens import token_ca_hash
from edgecore.certstate import install_certificate
from edgecore.config import EdgeConfig, EdgePaths, save_config
from protocol.resources import check_dns_subdomain, check_label_key, check_label_value


class JoinError(Exception):
    pass


def parse_labels(text: str | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise JoinError(f"--labels: {item!r} is not key=value")
        key, value = key.strip(), value.strip()
        check_label_key(key, f"labels.{key}")
        check_label_value(value, f"labels.{key}")
        labels[key] = value
    return labels


def _request(url: str, ctx: ssl.SSLContext, *, data: bytes | None = None,
             headers: dict[str, str] | None = None, timeout: float = 15.0) -> bytes:
    req = urllib.request.Request(url, data=data, headers=headers or {},
                                 method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
            body: bytes = resp.read(1_048_576)
            return body
    except urllib.error.HTTPError as exc:
        detail = exc.read(65536).decode(errors="replace")
        try:
            detail = json.loads(detail).get("message", detail)
        except ValueError:
            pass
        raise JoinError(f"the cloud refused the join ({exc.code}): {detail}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise JoinError(
                f"the cloud's certificate does not cover {urlsplit(url).hostname}: "
                f"{reason.verify_message}; start cloudcore with --advertise-address "
                f"{urlsplit(url).hostname}") from None
        raise JoinError(f"cannot reach {url}: {reason}") from None
    except OSError as exc:
        raise JoinError(f"cannot reach {url}: {exc}") from None


def join(server: str, token: str, node_name: str, data_dir: Path,
         labels: dict[str, str] | None = None) -> EdgeConfig:
    parts = urlsplit(server)
    if parts.scheme != "https" or not parts.hostname:
        raise JoinError(f"--server must be https://HOST:PORT, not {server!r}")
    try:
        check_dns_subdomain(node_name, "node-name")
    except Exception as exc:
        raise JoinError(f"--node-name: {exc}") from None
    try:
        expected = token_ca_hash(token)
    except TokenError as exc:
        raise JoinError(f"--token: {exc}") from None
    base = server.rstrip("/")

    ca_pem = _request(f"{base}/ca.crt", fetch_insecure_context())
    try:
        ca_der = ssl.PEM_cert_to_DER_cert(ca_pem.decode())
    except (ValueError, UnicodeDecodeError):
        raise JoinError(f"{base}/ca.crt did not return a PEM certificate") from None
    actual = hashlib.sha256(ca_der).hexdigest()
    if actual != expected:
        raise JoinError(
            f"the CA served by {base} (sha256 {actual[:16]}…) is not the one this token was "
            f"made for (sha256 {expected[:16]}…): wrong server, or someone in between")

    from certs.csr import cert_validity, new_node_key_and_csr  # only needed here

    key_pem, csr_pem = new_node_key_and_csr(node_name)
    payload = json.dumps({"nodeName": node_name, "csr": csr_pem.decode(),
                          "labels": labels or {}}).encode()
    reply_raw = _request(f"{base}/join", client_context(ca_pem), data=payload, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        reply: dict[str, Any] = json.loads(reply_raw)
        cert_pem = str(reply["certificate"]).encode()
        hub_port = int(reply["hubPort"])
    except (ValueError, KeyError, TypeError):
        raise JoinError("the cloud's join answer is not understood") from None

    paths = EdgePaths(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    paths.pki.mkdir(mode=0o700, exist_ok=True)
    write_public(paths.ca, ca_pem)
    not_before, not_after = cert_validity(cert_pem)
    install_certificate(paths.pki, cert_pem, key_pem, not_before, not_after)
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    old_link = None
    if paths.config.exists():
        from edgecore.config import load_config

        try:
            old_link = load_config(paths.config).link
        except Exception:
            old_link = None
    cfg = EdgeConfig(nodeName=node_name, server=base, hub=f"wss://{host}:{hub_port}",
                     labels=labels or {})
    if old_link is not None:
        cfg = cfg.model_copy(update={"link": old_link})
    save_config(paths.config, cfg)
    return cfg
