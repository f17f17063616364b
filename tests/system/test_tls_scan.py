"""Both cloud ports, scanned from outside with sslyze: only TLS 1.2 and 1.3, and in
TLS 1.2 only ECDHE key exchange with AEAD ciphers; no compression, no insecure
renegotiation.

sslyze runs from its own virtualenv (``.venv-tools``, made by ``scripts/_venv.sh``)
because its pins clash with ours.  Without it the test is skipped, except in CI (the
``CI`` environment variable set), where a missing scanner is a failure.

The hub (:10000) completes no handshake without a client certificate, so its scan
presents a real node certificate (``sslyze --cert/--key``) obtained by ``edgecore
join``.  The API/join port (:10002) takes anonymous clients and is scanned without one.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Cloud, Edge

pytestmark = pytest.mark.system

SSLYZE = Path(__file__).resolve().parents[2] / ".venv-tools" / "bin" / "sslyze"

REJECTED_VERSIONS = ("ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1")


def _require_sslyze() -> None:
    if SSLYZE.exists():
        return
    message = f"{SSLYZE} is missing; scripts/test (scripts/_venv.sh) installs it"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _scan(port: int, out: Path, client_cert: tuple[Path, Path] | None = None) -> dict[str, Any]:
    args = [str(SSLYZE), "--quiet", f"--json_out={out}", "--sslv2", "--sslv3", "--tlsv1",
            "--tlsv1_1", "--tlsv1_2", "--tlsv1_3", "--compression", "--reneg",
            "--mozilla_config=disable"]
    if client_cert is not None:
        args += ["--cert", str(client_cert[0]), "--key", str(client_cert[1])]
    result = subprocess.run([*args, f"127.0.0.1:{port}"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    [server] = json.loads(out.read_text())["server_scan_results"]
    assert server["scan_status"] == "COMPLETED", server.get("connectivity_error_trace")
    scan: dict[str, Any] = server["scan_result"]
    return scan


def _assert_policy(scan: dict[str, Any], port_name: str) -> None:
    for version in REJECTED_VERSIONS:
        result = scan[f"{version}_cipher_suites"]
        assert result["status"] == "COMPLETED", (port_name, version, result)
        accepted = result["result"]["accepted_cipher_suites"]
        assert accepted == [], f"{port_name} accepts {version}: {accepted}"

    tls12 = scan["tls_1_2_cipher_suites"]["result"]["accepted_cipher_suites"]
    assert tls12, f"{port_name} accepts no TLS 1.2 suite"
    for suite in tls12:
        name = suite["cipher_suite"]["name"]
        assert name.startswith("TLS_ECDHE_"), f"{port_name}: {name} is not ECDHE"
        assert "_GCM_" in name or "CHACHA20_POLY1305" in name, f"{port_name}: {name} not AEAD"
        assert suite["ephemeral_key"]["type_name"] == "ECDH", (port_name, suite)

    tls13 = scan["tls_1_3_cipher_suites"]["result"]
    assert tls13["is_tls_version_supported"], f"{port_name} does not accept TLS 1.3"

    assert scan["tls_compression"]["result"]["supports_compression"] is False
    reneg = scan["session_renegotiation"]["result"]
    # Secure renegotiation (RFC 5746) is only the extension being present; what matters
    # is that a client cannot renegotiate at all.
    assert reneg["supports_secure_renegotiation"], port_name
    assert reneg["is_vulnerable_to_client_renegotiation_dos"] is False, port_name
    assert reneg["client_renegotiations_success_count"] == 0, port_name


def test_both_cloud_ports_accept_only_modern_tls(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge], tmp_path: Path,
) -> None:
    _require_sslyze()
    cloud = cloud_factory().start()
    edge = edge_factory(cloud, "scanner")
    joined = edge.join(cloud.join_token())
    assert joined.returncode == 0, joined.stderr
    state = json.loads((edge.dir / "pki" / "node.json").read_text())
    node_cert = (edge.dir / "pki" / state["cert"], edge.dir / "pki" / state["key"])

    _assert_policy(_scan(cloud.api_port, tmp_path / "api.json"), "API :10002")
    _assert_policy(_scan(cloud.hub_port, tmp_path / "hub.json", node_cert), "hub :10000")
