from __future__ import annotations

import hashlib
import ipaddress
import os
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.ca import (
    CertAuthority,
    ensure_server_cert,
    load_or_create_ca,
    make_token_secret,
)
from certs.errors import CertError, InsecureKeyFile
from certs.keyfiles import write_private, write_public

REPO_ROOT = Path(__file__).resolve().parents[3]


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_first_start_creates_a_p256_ca_with_private_files(tmp_path: Path) -> None:
    pki_dir = tmp_path / "data" / "pki"
    ca = load_or_create_ca(pki_dir)

    assert mode_of(pki_dir) == 0o700
    assert mode_of(pki_dir / "ca.key") == 0o600
    cert = load_cert(pki_dir / "ca.crt")
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "edgefleet-ca"
    assert cert.issuer == cert.subject
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert isinstance(public.curve, ec.SECP256R1)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(days=29 * 365) < lifetime < timedelta(days=31 * 365)
    assert ca.cert_pem == (pki_dir / "ca.crt").read_bytes()
    assert ca.ca_hash == hashlib.sha256(ca.cert_der).hexdigest()


def test_later_starts_reuse_the_same_ca(tmp_path: Path) -> None:
    first = load_or_create_ca(tmp_path / "pki")
    files_before = {p.name: p.read_bytes() for p in (tmp_path / "pki").iterdir()}

    second = load_or_create_ca(tmp_path / "pki")

    assert second.ca_hash == first.ca_hash
    assert {p.name: p.read_bytes() for p in (tmp_path / "pki").iterdir()} == files_before


RACE_SCRIPT = """
import sys, time
from pathlib import Path
from certs.ca import load_or_create_ca  # imported before the barrier: race on files only
pki, ready, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
ready.touch()
deadline = time.monotonic() + 30
while not go.exists():
    if time.monotonic() > deadline:
        sys.exit("no go signal")
    time.sleep(0.001)
print(load_or_create_ca(pki).ca_hash)
"""


def test_processes_racing_on_first_start_end_with_one_ca(tmp_path: Path) -> None:
    pki_dir, go = tmp_path / "pki", tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in range(6)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACE_SCRIPT, str(pki_dir), str(r), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=REPO_ROOT,
        )
        for r in ready
    ]
    try:
        deadline = time.monotonic() + 60
        while not all(r.exists() for r in ready):
            assert time.monotonic() < deadline, "racers did not start"
            assert all(p.poll() is None for p in procs), "a racer died before the start"
            time.sleep(0.01)
        go.touch()
        results = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    assert [p.returncode for p in procs] == [0] * len(procs), [err for _, err in results]
    hashes = {out.decode().strip() for out, _ in results}
    assert len(hashes) == 1
    on_disk = load_or_create_ca(pki_dir).ca_hash
    assert hashes == {on_disk}


def test_ca_key_readable_by_others_refuses_to_start(tmp_path: Path) -> None:
    load_or_create_ca(tmp_path / "pki")
    key = tmp_path / "pki" / "ca.key"
    key.chmod(0o644)
    with pytest.raises(InsecureKeyFile) as info:
        load_or_create_ca(tmp_path / "pki")
    assert info.value.path == key
    assert "0644" in str(info.value)


def test_encrypted_ca_key_round_trip(tmp_path: Path) -> None:
    created = load_or_create_ca(tmp_path / "pki", passphrase=b"correct horse")
    key_pem = (tmp_path / "pki" / "ca.key").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in key_pem

    loaded = load_or_create_ca(tmp_path / "pki", passphrase=b"correct horse")
    assert loaded.ca_hash == created.ca_hash
    # The loaded key really signs: a certificate it issues verifies against the CA.
    cert_pem, _ = loaded.issue_server_cert(["10.0.0.1"])
    assert created.issued(x509.load_pem_x509_certificate(cert_pem))


def test_wrong_or_missing_passphrase_is_a_clear_error(tmp_path: Path) -> None:
    load_or_create_ca(tmp_path / "pki", passphrase=b"correct horse")
    with pytest.raises(CertError, match="wrong passphrase"):
        load_or_create_ca(tmp_path / "pki", passphrase=b"battery staple")
    with pytest.raises(CertError, match="is encrypted; give its passphrase"):
        load_or_create_ca(tmp_path / "pki")


def test_passphrase_for_an_unencrypted_key_is_reported(tmp_path: Path) -> None:
    load_or_create_ca(tmp_path / "pki")
    with pytest.raises(CertError, match="not encrypted"):
        load_or_create_ca(tmp_path / "pki", passphrase=b"x")


@pytest.mark.parametrize("survivor", ["ca.crt", "ca.key"])
def test_half_a_ca_is_never_replaced_silently(tmp_path: Path, survivor: str) -> None:
    ca = load_or_create_ca(tmp_path / "pki")
    kept = (tmp_path / "pki" / survivor).read_bytes()
    lost = "ca.key" if survivor == "ca.crt" else "ca.crt"
    (tmp_path / "pki" / lost).unlink()

    with pytest.raises(CertError, match=f"{lost} does not;"):
        load_or_create_ca(tmp_path / "pki")

    assert not (tmp_path / "pki" / lost).exists()
    assert (tmp_path / "pki" / survivor).read_bytes() == kept
    assert ca.ca_hash  # the original CA object is untouched


def sans_of(cert: x509.Certificate) -> set[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return ips | set(san.get_values_for_type(x509.DNSName))


def test_server_cert_covers_every_advertise_address(tmp_path: Path) -> None:
    ca = load_or_create_ca(tmp_path / "pki")
    cert_path, key_path = ensure_server_cert(
        tmp_path / "pki", ca, ["192.168.1.10", "cloud.example.test", "fd00::1"]
    )

    cert = load_cert(cert_path)
    assert sans_of(cert) == {
        "192.168.1.10",
        "cloud.example.test",
        "fd00::1",
        "127.0.0.1",
        "localhost",
    }
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # IPs must be IPAddress entries: a DNSName "192.168.1.10" does not satisfy clients.
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("192.168.1.10"),
        ipaddress.ip_address("fd00::1"),
        ipaddress.ip_address("127.0.0.1"),
    }
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert ca.issued(cert)
    assert mode_of(key_path) == 0o600


def test_server_cert_is_kept_while_sans_are_unchanged(tmp_path: Path) -> None:
    ca = load_or_create_ca(tmp_path / "pki")
    cert_path, _ = ensure_server_cert(tmp_path / "pki", ca, ["10.0.0.1"])
    before = cert_path.read_bytes()
    # Same set written differently (order, case, duplicates, the local names spelled out).
    ensure_server_cert(tmp_path / "pki", ca, ["localhost", "10.0.0.1", "127.0.0.1", "10.0.0.1"])
    assert cert_path.read_bytes() == before


def test_server_cert_is_reissued_when_sans_change(tmp_path: Path) -> None:
    ca = load_or_create_ca(tmp_path / "pki")
    cert_path, _ = ensure_server_cert(tmp_path / "pki", ca, ["10.0.0.1"])

    ensure_server_cert(tmp_path / "pki", ca, ["10.0.0.1", "10.0.0.2"])
    assert sans_of(load_cert(cert_path)) >= {"10.0.0.1", "10.0.0.2"}

    ensure_server_cert(tmp_path / "pki", ca, ["10.0.0.2"])
    assert "10.0.0.1" not in sans_of(load_cert(cert_path))


def test_server_cert_is_reissued_when_it_expires_within_30_days(tmp_path: Path) -> None:
    ca = load_or_create_ca(tmp_path / "pki")
    cert_pem, key_pem = ca.issue_server_cert(["10.0.0.1"], validity=timedelta(days=20))
    write_private(tmp_path / "pki" / "server.key", key_pem)
    write_public(tmp_path / "pki" / "server.crt", cert_pem)

    cert_path, _ = ensure_server_cert(tmp_path / "pki", ca, ["10.0.0.1"])

    remaining = load_cert(cert_path).not_valid_after_utc - datetime.now(UTC)
    assert remaining > timedelta(days=365)


def test_server_cert_from_another_ca_is_reissued(tmp_path: Path) -> None:
    ca = load_or_create_ca(tmp_path / "pki")
    stranger = CertAuthority.generate()
    cert_pem, key_pem = stranger.issue_server_cert(["10.0.0.1"])
    write_private(tmp_path / "pki" / "server.key", key_pem)
    write_public(tmp_path / "pki" / "server.crt", cert_pem)

    cert_path, _ = ensure_server_cert(tmp_path / "pki", ca, ["10.0.0.1"])

    assert ca.issued(load_cert(cert_path))


def test_address_with_port_is_rejected_clearly(tmp_path: Path) -> None:
    ca = load_or_create_ca(tmp_path / "pki")
    with pytest.raises(CertError, match=r"'10\.0\.0\.1:10000' is neither an IP address nor a DNS"):
        ensure_server_cert(tmp_path / "pki", ca, ["10.0.0.1:10000"])


def test_token_secret_is_created_once_and_private(tmp_path: Path) -> None:
    secret = make_token_secret(tmp_path / "pki")
    assert len(secret) == 32
    assert mode_of(tmp_path / "pki" / "token.key") == 0o600
    assert make_token_secret(tmp_path / "pki") == secret


def test_insecure_token_secret_is_refused(tmp_path: Path) -> None:
    make_token_secret(tmp_path / "pki")
    (tmp_path / "pki" / "token.key").chmod(0o644)
    with pytest.raises(InsecureKeyFile):
        make_token_secret(tmp_path / "pki")
