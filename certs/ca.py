"""The cloud's certificate authority (needs ``cryptography``; cloudcore only).

Files in ``pki_dir`` (directory 0700, private files 0600):

    ca.crt  ca.key        self-signed ECDSA P-256 CA, 30 years; the key optionally encrypted
    server.crt server.key the cloud's TLS server certificate (SANs = advertise addresses)
    token.key             32 random bytes that sign join tokens
    .lock                 flock target: one writer at a time

Creating the CA is guarded by an exclusive ``flock`` on ``.lock``. Two cloudcore
processes started together (a supervisor restart racing a manual start, two replicas on
shared storage) therefore end with the same CA; without the lock each could write its
own, and nodes joined against the loser's CA would be locked out (KubeEdge #5922).
An existing CA is never replaced automatically: losing it means re-joining every node.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.errors import CertError, CSRRejected
from certs.keyfiles import read_private, write_private, write_public
from certs.tokens import ca_hash_from_der

log = logging.getLogger(__name__)

CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
SERVER_CERT_FILE = "server.crt"
SERVER_KEY_FILE = "server.key"
TOKEN_SECRET_FILE = "token.key"
LOCK_FILE = ".lock"

CA_COMMON_NAME = "edgefleet-ca"
SERVER_COMMON_NAME = "edgefleet-cloudcore"
NODE_ORGANIZATION = "edgefleet:nodes"

CA_VALIDITY = timedelta(days=30 * 365)
# cloudcore checks its server certificate only at start, so this must outlast any uptime.
SERVER_CERT_VALIDITY = timedelta(days=10 * 365)
NODE_CERT_VALIDITY = timedelta(days=365)
SERVER_CERT_MIN_REMAINING = timedelta(days=30)
DEFAULT_SKEW = timedelta(minutes=5)
TOKEN_SECRET_BYTES = 32

# Names always in the server certificate so local tools can connect by either.
LOCAL_SANS = ("127.0.0.1", "localhost")

_DNS_NAME = re.compile(
    r"(\*\.)?([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)"
    r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
)


class CertAuthority:
    """The CA certificate and its private key, able to issue server and node certificates."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        if cert.public_key() != key.public_key():
            raise CertError("CA private key does not belong to the CA certificate")
        self._cert = cert
        self._key = key

    @classmethod
    def generate(
        cls, *, now: datetime | None = None, skew: timedelta = DEFAULT_SKEW
    ) -> CertAuthority:
        """A new self-signed CA (not stored anywhere; see ``load_or_create_ca``).

        notBefore is backdated by ``skew`` so that nodes whose clocks run behind the
        cloud's can verify it from the first minute.
        """
        now = now or datetime.now(UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME)])
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - skew)
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    @property
    def cert_pem(self) -> bytes:
        return self._cert.public_bytes(serialization.Encoding.PEM)

    @property
    def cert_der(self) -> bytes:
        return self._cert.public_bytes(serialization.Encoding.DER)

    @property
    def ca_hash(self) -> str:
        """sha256 hex of the CA certificate's DER: the first part of every join token."""
        return ca_hash_from_der(self.cert_der)

    def key_pem(self, passphrase: bytes | None = None) -> bytes:
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    def issue_server_cert(
        self,
        sans: list[str],
        validity: timedelta = SERVER_CERT_VALIDITY,
        *,
        skew: timedelta = DEFAULT_SKEW,
        now: datetime | None = None,
    ) -> tuple[bytes, bytes]:
        """(cert_pem, key_pem) for the cloud's TLS server, valid for every name in ``sans``.

        IP addresses become IPAddress entries, everything else DNSName; 127.0.0.1 and
        localhost are always added. A missing IP SAN for the advertised address is the
        classic "x509: certificate is valid for …" join failure (KubeEdge #2905, #3298).
        """
        now = now or datetime.now(UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        names = [_san_entry(s) for s in normalize_sans(sans)]
        cert = (
            self._leaf_builder(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_COMMON_NAME)]),
                key.public_key(),
                not_before=now - skew,
                not_after=now + validity,
            )
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem

    def sign_node_csr(
        self,
        csr_pem: bytes,
        node_name: str,
        validity: timedelta = NODE_CERT_VALIDITY,
        *,
        skew: timedelta = DEFAULT_SKEW,
        now: datetime | None = None,
    ) -> bytes:
        """Issue a client certificate (PEM) for ``node_name`` from the node's CSR.

        The certificate's subject and extensions are decided here, never copied from the
        CSR: a node cannot ask for serverAuth, a CA flag or another node's name. The CSR
        contributes only its public key, which must be EC P-256, and its CN, which must
        equal ``node_name``. notBefore is backdated by ``skew`` so that a node whose clock
        runs a little behind the cloud's can use the certificate at once.
        """
        now = now or datetime.now(UTC)
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError:
            raise CSRRejected("the certificate request is not a PEM-encoded CSR") from None
        if not csr.is_signature_valid:
            raise CSRRejected("the certificate request's signature does not verify")
        public = csr.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(
            public.curve, ec.SECP256R1
        ):
            raise CSRRejected("the certificate request must use an EC P-256 (secp256r1) key")
        common_names = [
            attr.value for attr in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
        if common_names != [node_name]:
            shown = ", ".join(repr(cn) for cn in common_names) or "none"
            raise CSRRejected(
                f"the certificate request is for CN {shown}, but it was sent for node "
                f"{node_name!r}; a node can only request a certificate for its own name"
            )
        try:
            subject = x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODE_ORGANIZATION),
                    x509.NameAttribute(NameOID.COMMON_NAME, node_name),
                ]
            )
        except ValueError as exc:
            raise CSRRejected(
                f"node name {node_name!r} cannot be a certificate CN: {exc}"
            ) from None
        cert = (
            self._leaf_builder(subject, public, not_before=now - skew, not_after=now + validity)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def issued(self, cert: x509.Certificate) -> bool:
        """Whether ``cert`` carries this CA's signature."""
        try:
            cert.verify_directly_issued_by(self._cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def _leaf_builder(
        self,
        subject: x509.Name,
        public: ec.EllipticCurvePublicKey,
        *,
        not_before: datetime,
        not_after: datetime,
    ) -> x509.CertificateBuilder:
        # A leaf must not outlive the CA that vouches for it.
        not_after = min(not_after, self._cert.not_valid_after_utc)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )


def load_or_create_ca(
    pki_dir: Path, *, passphrase: bytes | None = None, skew: timedelta = DEFAULT_SKEW
) -> CertAuthority:
    """Load the CA from ``pki_dir``, creating it (and the directory, 0700) the first time.

    A new CA's key is encrypted with ``passphrase`` when one is given, and its notBefore
    backdated by ``skew``. Raises CertError when only one of ca.crt/ca.key exists, when
    the key is readable by others (InsecureKeyFile), or when the passphrase is missing
    or wrong.
    """
    pki_dir = Path(pki_dir)
    _ensure_private_dir(pki_dir)
    cert_path, key_path = pki_dir / CA_CERT_FILE, pki_dir / CA_KEY_FILE
    with pki_lock(pki_dir):
        have_cert, have_key = cert_path.exists(), key_path.exists()
        if have_cert and have_key:
            return _load_ca(cert_path, key_path, passphrase)
        if have_cert or have_key:
            present, missing = (cert_path, key_path) if have_cert else (key_path, cert_path)
            raise CertError(
                f"{present} exists but {missing} does not; restore {missing} from a backup. "
                f"Only if the CA is lost for good, delete {present} to create a new CA "
                "(every node must then join again)"
            )
        ca = CertAuthority.generate(skew=skew)
        # Key first: a crash in between leaves a key without a certificate, which was
        # never published and so cannot have been trusted by anyone.
        write_private(key_path, ca.key_pem(passphrase))
        write_public(cert_path, ca.cert_pem)
        log.info("created certificate authority %s (sha256 %s)", cert_path, ca.ca_hash)
        return ca


def ensure_server_cert(
    pki_dir: Path, ca: CertAuthority, sans: list[str], *, skew: timedelta = DEFAULT_SKEW
) -> tuple[Path, Path]:
    """Make sure ``pki_dir/server.crt`` + ``server.key`` are usable; return their paths.

    Reissued when missing, not issued by ``ca``, when the SAN set differs from the wanted
    one (``sans`` + 127.0.0.1 + localhost), when the key does not match, or when less than
    30 days remain; a new one is backdated by ``skew``. An insecure existing key raises
    InsecureKeyFile rather than being silently replaced: someone may have copied it, and
    the operator should know.
    """
    pki_dir = Path(pki_dir)
    _ensure_private_dir(pki_dir)
    cert_path, key_path = pki_dir / SERVER_CERT_FILE, pki_dir / SERVER_KEY_FILE
    wanted = {_san_key(s) for s in normalize_sans(sans)}
    with pki_lock(pki_dir):
        reason = _server_cert_problem(cert_path, key_path, ca, wanted)
        if reason is None:
            return cert_path, key_path
        cert_pem, key_pem = ca.issue_server_cert(sans, skew=skew)
        write_private(key_path, key_pem)
        write_public(cert_path, cert_pem)
        log.info("issued server certificate %s (%s)", cert_path, reason)
    return cert_path, key_path


def make_token_secret(pki_dir: Path) -> bytes:
    """The 32-byte HMAC key for join tokens, created once in ``pki_dir/token.key`` (0600)."""
    pki_dir = Path(pki_dir)
    _ensure_private_dir(pki_dir)
    path = pki_dir / TOKEN_SECRET_FILE
    with pki_lock(pki_dir):
        if path.exists():
            secret = read_private(path)
            if len(secret) != TOKEN_SECRET_BYTES:
                raise CertError(
                    f"{path} holds {len(secret)} bytes, expected {TOKEN_SECRET_BYTES}; "
                    "delete it to create a new one (outstanding join tokens become invalid)"
                )
            return secret
        secret = secrets.token_bytes(TOKEN_SECRET_BYTES)
        write_private(path, secret)
        return secret


@contextmanager
def pki_lock(pki_dir: Path) -> Iterator[None]:
    """Exclusive lock over ``pki_dir`` across processes (blocking). Not reentrant."""
    fd = os.open(Path(pki_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def normalize_sans(sans: Iterable[str]) -> list[str]:
    """Wanted SANs in canonical form, deduplicated, with 127.0.0.1 and localhost added.

    Raises CertError for an entry that is neither an IP address nor a DNS name (a common
    slip is passing ``host:port``).
    """
    result: list[str] = []
    seen: set[tuple[str, str]] = set()
    for raw in [*sans, *LOCAL_SANS]:
        text = raw.strip()
        if not text:
            continue
        if text.startswith("[") and text.endswith("]"):  # [::1] as written in URLs
            text = text[1:-1]
        try:
            text = str(ipaddress.ip_address(text))
        except ValueError:
            if not _DNS_NAME.fullmatch(text) or len(text) > 253:
                raise CertError(
                    f"advertise address {raw!r} is neither an IP address nor a DNS name"
                ) from None
            text = text.rstrip(".").lower()
        key = _san_key(text)
        if key not in seen:
            seen.add(key)
            result.append(text)
    return result


def _san_key(name: str) -> tuple[str, str]:
    try:
        return ("ip", str(ipaddress.ip_address(name)))
    except ValueError:
        return ("dns", name.lower())


def _san_entry(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _server_cert_problem(
    cert_path: Path, key_path: Path, ca: CertAuthority, wanted: set[tuple[str, str]]
) -> str | None:
    """Why the server certificate must be (re)issued, or None if it is fine."""
    if not cert_path.exists() or not key_path.exists():
        return "missing"
    key_pem = read_private(key_path)  # raises InsecureKeyFile
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return "unreadable"
    if not ca.issued(cert):
        return "issued by another CA"
    if cert.public_key() != key.public_key():
        return "key does not match"
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "no SANs"
    present = {("ip", str(ip)) for ip in san.get_values_for_type(x509.IPAddress)}
    present |= {("dns", name.lower()) for name in san.get_values_for_type(x509.DNSName)}
    if present != wanted:
        return "SANs changed"
    if cert.not_valid_after_utc - datetime.now(UTC) < SERVER_CERT_MIN_REMAINING:
        return "expires soon"
    return None


def _load_ca(cert_path: Path, key_path: Path, passphrase: bytes | None) -> CertAuthority:
    key_pem = read_private(key_path)  # raises InsecureKeyFile before the key is used
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        raise CertError(f"{cert_path} is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=passphrase or None)
    except TypeError:
        # cryptography raises TypeError both for "encrypted but no password" and
        # "password given but key not encrypted".
        if passphrase:
            raise CertError(
                f"a CA key passphrase was given but {key_path} is not encrypted"
            ) from None
        raise CertError(f"{key_path} is encrypted; give its passphrase to cloudcore") from None
    except ValueError:
        if passphrase:
            raise CertError(
                f"cannot decrypt {key_path}: wrong passphrase (or the file is damaged)"
            ) from None
        raise CertError(f"{key_path} is not a PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{key_path} is not an EC private key")
    ca = CertAuthority(cert, key)
    if cert.not_valid_after_utc <= datetime.now(UTC):
        log.error("certificate authority %s expired at %s", cert_path, cert.not_valid_after_utc)
    return ca


def _ensure_private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
