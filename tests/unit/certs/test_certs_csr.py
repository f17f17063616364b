from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.ca import CertAuthority
from certs.csr import cert_common_name, cert_validity, new_node_key_and_csr
from certs.errors import CertError, CSRRejected
from certs.rotation import read_cert_validity


@pytest.fixture(scope="module")
def ca() -> CertAuthority:
    return CertAuthority.generate()


def test_node_key_and_csr_are_p256_for_the_node_name() -> None:
    key_pem, csr_pem = new_node_key_and_csr("node-1")
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert b"BEGIN PRIVATE KEY" in key_pem  # PKCS#8, unencrypted
    csr = x509.load_pem_x509_csr(csr_pem)
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node-1"
    assert csr.public_key() == key.public_key()


def test_signed_node_cert_has_the_node_identity(ca: CertAuthority) -> None:
    _, csr_pem = new_node_key_and_csr("node-1")
    now = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)

    cert_pem = ca.sign_node_csr(csr_pem, "node-1", now=now)

    cert = x509.load_pem_x509_certificate(cert_pem)
    assert ca.issued(cert)
    assert cert_common_name(cert_pem) == "node-1"
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [o.value for o in orgs] == ["edgefleet:nodes"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # Backdated by the default 5 minutes of skew, valid for 365 days from now.
    assert cert_validity(cert_pem) == (now - timedelta(minutes=5), now + timedelta(days=365))


def test_validity_and_skew_are_honoured(ca: CertAuthority) -> None:
    _, csr_pem = new_node_key_and_csr("node-1")
    now = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    cert_pem = ca.sign_node_csr(
        csr_pem, "node-1", timedelta(days=30), skew=timedelta(hours=1), now=now
    )
    assert cert_validity(cert_pem) == (now - timedelta(hours=1), now + timedelta(days=30))


def test_stdlib_validity_reader_agrees_with_cryptography(ca: CertAuthority) -> None:
    _, csr_pem = new_node_key_and_csr("node-1")
    cert_pem = ca.sign_node_csr(csr_pem, "node-1")
    assert read_cert_validity(cert_pem) == cert_validity(cert_pem)
    # The CA lives past 2049, so its notAfter is a GeneralizedTime, not a UTCTime.
    assert read_cert_validity(ca.cert_der) == (
        ca.certificate.not_valid_before_utc,
        ca.certificate.not_valid_after_utc,
    )
    assert ca.certificate.not_valid_after_utc.year >= 2050


def test_csr_for_another_node_is_rejected(ca: CertAuthority) -> None:
    _, csr_pem = new_node_key_and_csr("node-2")
    with pytest.raises(CSRRejected) as info:
        ca.sign_node_csr(csr_pem, "node-1")
    assert "'node-2'" in str(info.value) and "'node-1'" in str(info.value)


def test_requested_extensions_are_ignored(ca: CertAuthority) -> None:
    # A node asking to become a CA or a server gets a plain client certificate.
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node-1")]))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert = x509.load_pem_x509_certificate(
        ca.sign_node_csr(csr.public_bytes(serialization.Encoding.PEM), "node-1")
    )
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_csr_with_rsa_key_is_rejected(ca: CertAuthority) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node-1")]))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(CSRRejected, match="P-256"):
        ca.sign_node_csr(csr.public_bytes(serialization.Encoding.PEM), "node-1")


def test_csr_with_broken_signature_is_rejected(ca: CertAuthority) -> None:
    _, csr_pem = new_node_key_and_csr("node-1")
    der = bytearray(x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # last byte of the ECDSA signature's s value
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CSRRejected, match="signature"):
        ca.sign_node_csr(tampered, "node-1")


def test_garbage_csr_is_rejected(ca: CertAuthority) -> None:
    with pytest.raises(CSRRejected, match="not a PEM"):
        ca.sign_node_csr(b"hello", "node-1")


def test_node_cert_never_outlives_the_ca(ca: CertAuthority) -> None:
    _, csr_pem = new_node_key_and_csr("node-1")
    cert_pem = ca.sign_node_csr(csr_pem, "node-1", timedelta(days=365 * 100))
    assert cert_validity(cert_pem)[1] == ca.certificate.not_valid_after_utc


def test_inspection_of_non_certificates_is_a_cert_error() -> None:
    with pytest.raises(CertError):
        cert_validity(b"not a cert")
    with pytest.raises(CertError):
        cert_common_name(b"not a cert")
