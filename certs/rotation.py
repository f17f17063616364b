"""When to renew a node certificate (standard library only).

Like KubeEdge, a node renews at a random point between 70 % and 90 % of its
certificate's lifetime. The jitter spreads renewals out: a fleet that joined in one
afternoon would otherwise hit the cloud all at the same moment a year later.

``read_cert_validity`` reads notBefore/notAfter straight from the DER so that the running
edgecore can schedule renewal without importing ``cryptography``.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime

from certs.errors import CertError

RENEWAL_MIN_FRACTION = 0.7
RENEWAL_MAX_FRACTION = 0.9


def renewal_fraction(rand: float) -> float:
    """Map ``rand`` in [0, 1) (e.g. ``random.random()``) to a lifetime fraction in [0.7, 0.9)."""
    if not 0.0 <= rand < 1.0:
        raise ValueError(f"rand must be in [0, 1), got {rand}")
    return RENEWAL_MIN_FRACTION + (RENEWAL_MAX_FRACTION - RENEWAL_MIN_FRACTION) * rand


def renewal_deadline(not_before: datetime, not_after: datetime, fraction: float) -> datetime:
    """The moment ``fraction`` of the way through the certificate's validity."""
    if not_after <= not_before:
        raise ValueError(f"certificate validity is empty: {not_before} .. {not_after}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    return not_before + (not_after - not_before) * fraction


def read_cert_validity(cert: bytes) -> tuple[datetime, datetime]:
    """(notBefore, notAfter) in UTC of a certificate given as PEM or DER bytes.

    A minimal DER walk over Certificate → TBSCertificate → Validity (RFC 5280 §4.1). It
    reads the certificate; it does not verify it.
    """
    der = _to_der(cert)
    try:
        certificate, _ = _read_tlv(der, 0, expected_tag=0x30)
        tbs, _ = _read_tlv(certificate, 0, expected_tag=0x30)
        pos = 0
        tag, _, end = _header(tbs, pos)
        if tag == 0xA0:  # [0] EXPLICIT version, absent in v1 certificates
            pos = end
        for _field in ("serialNumber", "signature", "issuer"):
            _, _, pos = _header(tbs, pos)
        validity, _ = _read_tlv(tbs, pos, expected_tag=0x30)
        not_before, after_pos = _read_time(validity, 0)
        not_after, _ = _read_time(validity, after_pos)
    except (IndexError, ValueError) as exc:
        raise CertError(f"cannot read certificate validity: {exc}") from None
    return not_before, not_after


def _to_der(cert: bytes) -> bytes:
    if cert.lstrip().startswith(b"-----BEGIN"):
        try:
            return ssl.PEM_cert_to_DER_cert(cert.decode("ascii"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise CertError(f"not a PEM certificate: {exc}") from None
    return cert


def _header(data: bytes, pos: int) -> tuple[int, int, int]:
    """Tag, start of content and end of content of the DER element at ``pos``."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    end = pos + length
    if end > len(data):
        raise ValueError("truncated DER")
    return tag, pos, end


def _read_tlv(data: bytes, pos: int, *, expected_tag: int) -> tuple[bytes, int]:
    tag, start, end = _header(data, pos)
    if tag != expected_tag:
        raise ValueError(f"expected DER tag {expected_tag:#x}, found {tag:#x}")
    return data[start:end], end


def _read_time(data: bytes, pos: int) -> tuple[datetime, int]:
    tag, start, end = _header(data, pos)
    text = data[start:end].decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ; RFC 5280: YY >= 50 means 19YY
        parsed = datetime.strptime(text, "%y%m%d%H%M%SZ")
        if parsed.year >= 2050:
            parsed = parsed.replace(year=parsed.year - 100)
    elif tag == 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        parsed = datetime.strptime(text, "%Y%m%d%H%M%SZ")
    else:
        raise ValueError(f"expected a time, found DER tag {tag:#x}")
    return parsed.replace(tzinfo=UTC), end
