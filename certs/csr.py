"""Node key, CSR and certificate inspection (needs ``cryptography``).

edgecore imports this only while it joins or renews its certificate; the steady-state
edge process must stay free of ``cryptography`` (see ``certs/__init__``). For the renewal
schedule at run time use ``certs.rotation.read_cert_validity`` instead.
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certs.errors import CertError


def new_node_key_and_csr(node_name: str) -> tuple[bytes, bytes]:
    """(key_pem, csr_pem): a fresh EC P-256 key (PKCS#8, unencrypted) and a CSR for CN=node_name.

    The caller stores the key with ``keyfiles.write_private``. The CSR asks only for the
    name; the cloud decides everything else about the certificate.
    """
    try:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_name)])
    except ValueError as exc:
        raise CertError(f"node name {node_name!r} cannot be a certificate CN: {exc}") from None
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def cert_validity(cert_pem: bytes) -> tuple[datetime, datetime]:
    """(not_before, not_after) of a PEM certificate, timezone-aware UTC."""
    cert = _load(cert_pem)
    return cert.not_valid_before_utc, cert.not_valid_after_utc


def cert_serial(cert_pem: bytes) -> int:
    """The serial number of a PEM certificate."""
    return int(_load(cert_pem).serial_number)


def cert_common_name(cert_pem: bytes) -> str:
    """The subject CN of a PEM certificate (CertError if it has none or several)."""
    names = [a.value for a in _load(cert_pem).subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if len(names) != 1 or not isinstance(names[0], str):
        raise CertError(f"certificate has {len(names)} common names, expected exactly one")
    return names[0]


def _load(cert_pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise CertError("not a PEM certificate") from None
