"""``edgecore join``: from a join token to a node certificate.

1. The token starts with the sha256 of the cloud CA's DER encoding.  Fetch
   ``/ca.crt`` without verification (we cannot verify yet) and accept it only if its
   hash matches — a wrong server or a man in the middle is caught here.
2. Make a P-256 key and a CSR with CN = node name; POST it with the token to
   ``/join``, now verifying the server against that CA.
3. Store the CA, the certificate and the key (0600) and write DIR/edgecore.yaml —
   without the token, which is never stored on the node.

Joining again into the same data directory (same node name) is the way back for a node
whose certificate expired or was revoked: it replaces the certificate and keeps the
node's cached state and its own settings.  A data directory is never re-used for a
different node name.

The request carries this node's clock (``nodeTime``); the cloud refuses a join from a
clock further off than its tolerance, naming the difference.  When the clock is so far
off that the cloud's certificate does not verify at all, the error says so, measured
from the ``Date`` header of the CA download.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from certs.clock import clock_skew, describe_skew
from certs.errors import TokenError
from certs.keyfiles import write_public
from certs.tls import client_context, fetch_insecure_context
from certs.tokens import token_ca_hash
from edgecore.certstate import install_certificate
from edgecore.config import ConfigError, EdgeConfig, EdgePaths, load_config, save_config
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


# OpenSSL verify codes for a certificate outside its validity by our clock.
_X509_NOT_YET_VALID = 9
_X509_EXPIRED = 10


def _request(url: str, ctx: ssl.SSLContext, *, data: bytes | None = None,
             headers: dict[str, str] | None = None, timeout: float = 15.0,
             skew: timedelta | None = None) -> tuple[bytes, datetime | None]:
    """(body, the server's Date header) of one request; JoinError for any failure.
    ``skew`` (ours minus the cloud's clock, if known) explains certificate time errors."""
    req = urllib.request.Request(url, data=data, headers=headers or {},
                                 method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
            body: bytes = resp.read(1_048_576)
            return body, _date_header(resp.headers.get("Date"))
    except urllib.error.HTTPError as exc:
        detail = exc.read(65536).decode(errors="replace")
        try:
            detail = json.loads(detail).get("message", detail)
        except ValueError:
            pass
        raise JoinError(f"the cloud refused the join ({exc.code}): {detail}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if (isinstance(reason, ssl.SSLCertVerificationError)
                and reason.verify_code in (_X509_NOT_YET_VALID, _X509_EXPIRED)):
            measured = (f"this node's clock is {describe_skew(skew)} the cloud's"
                        if skew is not None else "check this node's clock")
            raise JoinError(
                f"the cloud's certificate is {reason.verify_message} by this node's clock "
                f"({datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}): {measured}; set the clock "
                "(NTP) and join again") from None
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise JoinError(
                f"the cloud's certificate does not cover {urlsplit(url).hostname}: "
                f"{reason.verify_message}; start cloudcore with --advertise-address "
                f"{urlsplit(url).hostname}") from None
        raise JoinError(f"cannot reach {url}: {reason}") from None
    except OSError as exc:
        raise JoinError(f"cannot reach {url}: {exc}") from None


def _date_header(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _previous_config(paths: EdgePaths, node_name: str) -> EdgeConfig | None:
    """The configuration of an earlier join into this data directory, if any; a data
    directory that belongs to another node is refused (its cache is that node's)."""
    if not paths.config.exists():
        return None
    try:
        old = load_config(paths.config)
    except ConfigError:
        return None  # unreadable: this join writes a fresh one
    if old.nodeName != node_name:
        raise JoinError(
            f"{paths.root} belongs to node {old.nodeName!r}; join {node_name!r} with another "
            f"--data-dir, or re-join with --node-name {old.nodeName}")
    return old


def _utc_now() -> datetime:
    return datetime.now(UTC)


def join(server: str, token: str, node_name: str, data_dir: Path,
         labels: dict[str, str] | None = None, *,
         clock: Callable[[], datetime] = _utc_now) -> EdgeConfig:
    """Join (or re-join) ``node_name`` and return its saved configuration.  ``clock`` is
    this node's clock (tests move it)."""
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
    paths = EdgePaths(data_dir)
    old = _previous_config(paths, node_name)

    ca_pem, cloud_date = _request(f"{base}/ca.crt", fetch_insecure_context())
    # Only to explain a failure below: the Date came over an unverified connection.
    skew = clock_skew(clock(), cloud_date) if cloud_date is not None else None
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
                          "labels": labels or {},
                          "nodeTime": clock().astimezone(UTC).isoformat()}).encode()
    reply_raw, _ = _request(f"{base}/join", client_context(ca_pem), data=payload, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"}, skew=skew)
    try:
        reply: dict[str, Any] = json.loads(reply_raw)
        cert_pem = str(reply["certificate"]).encode()
        hub_port = int(reply["hubPort"])
        # A cloud from before the tolerance was sent: assume its default.
        tolerance = float(reply.get("clockSkewSeconds", 300.0))
    except (ValueError, KeyError, TypeError):
        raise JoinError("the cloud's join answer is not understood") from None

    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    paths.pki.mkdir(mode=0o700, exist_ok=True)
    write_public(paths.ca, ca_pem)
    not_before, not_after = cert_validity(cert_pem)
    install_certificate(paths.pki, cert_pem, key_pem, not_before, not_after,
                        tolerance=timedelta(seconds=tolerance))
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    joined = {"nodeName": node_name, "server": base, "hub": f"wss://{host}:{hub_port}",
              "clockSkewSeconds": tolerance}
    if old is None:
        cfg = EdgeConfig(labels=labels or {}, **joined)
    else:
        # Re-join: the operator's own settings (link, storage, …) stay as they were.
        cfg = old.model_copy(update={**joined, "labels": {**old.labels, **(labels or {})}})
    save_config(paths.config, cfg)
    return cfg
