"""The node's renewal time and expiry judgement under clock skew.

The cloud's clock decides whether a certificate is valid; this node's clock may be off
from it by up to the tolerance.  The system clock cannot be moved in a test, so each
case computes "the node's clock" as the cloud's time plus a skew and hands it to the
same functions edgecore calls with ``datetime.now(UTC)``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from certs.errors import CertError, format_utc
from certs.keyfiles import write_private
from edgecore.certstate import (
    CertState,
    NodeCertExpired,
    check_expiry,
    check_node_key,
    install_certificate,
    load_state,
    rejoin_command,
    renew_time,
)

TOLERANCE = timedelta(minutes=5)
ISSUED = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)  # by the cloud's clock
NOT_BEFORE = ISSUED - TOLERANCE  # the cloud backdates by the tolerance
REJOIN = rejoin_command("https://cloud:10002", "edge-a", Path("/var/lib/edgecore"))
WITHIN = [timedelta(0), TOLERANCE - timedelta(seconds=1), -(TOLERANCE - timedelta(seconds=1))]


def _state(not_after: datetime, renew_at: datetime | None = None) -> CertState:
    return CertState(cert="node.crt", key="node.key", notBefore=NOT_BEFORE.isoformat(),
                     notAfter=not_after.isoformat(),
                     renewAt=(renew_at or not_after).isoformat())


@pytest.mark.parametrize("skew", WITHIN)
@pytest.mark.parametrize("lifetime", [timedelta(days=365), timedelta(minutes=20),
                                      timedelta(seconds=30)])
@pytest.mark.parametrize("fraction", [0.7, 0.9])
def test_a_node_within_the_tolerance_renews_before_the_cloud_calls_it_expired(
    skew: timedelta, lifetime: timedelta, fraction: float,
) -> None:
    not_after = ISSUED + lifetime
    renew_at = renew_time(NOT_BEFORE, not_after, fraction, TOLERANCE)  # on the node's clock
    cloud_time_at_renewal = renew_at - skew
    assert cloud_time_at_renewal <= not_after
    assert renew_at >= NOT_BEFORE


def test_a_long_certificate_keeps_its_jittered_renewal_point() -> None:
    not_after = ISSUED + timedelta(days=365)
    assert renew_time(NOT_BEFORE, not_after, 0.8, TOLERANCE) == (
        NOT_BEFORE + (not_after - NOT_BEFORE) * 0.8)


@pytest.mark.parametrize("skew", WITHIN)
def test_a_node_within_the_tolerance_does_not_call_a_valid_certificate_expired(
    skew: timedelta,
) -> None:
    not_after = ISSUED + timedelta(days=1)
    node_now = not_after - timedelta(seconds=1) + skew  # the cloud still accepts it
    check_expiry(_state(not_after), node_now, TOLERANCE, REJOIN)


def test_an_expired_certificate_is_reported_with_the_rejoin_command() -> None:
    # Only past notAfter + tolerance by the node's clock: a node running up to the
    # tolerance ahead must not give up on a certificate the cloud still accepts.
    not_after = ISSUED + timedelta(days=1)
    check_expiry(_state(not_after), not_after + TOLERANCE, TOLERANCE, REJOIN)
    node_now = not_after + TOLERANCE + timedelta(seconds=1)
    with pytest.raises(NodeCertExpired) as info:
        check_expiry(_state(not_after), node_now, TOLERANCE, REJOIN)
    message = str(info.value)
    assert message.startswith(f"node certificate expired at {format_utc(not_after)}")
    assert f"this node's clock says {format_utc(node_now)}" in message
    assert ("edgecore join --server https://cloud:10002 --token <new token> "
            "--node-name edge-a --data-dir /var/lib/edgecore") in message
    assert "efctl token create" in message


def test_installing_uses_the_tolerance_for_the_renewal_time(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    pki.mkdir(mode=0o700)
    not_after = ISSUED + timedelta(minutes=20)
    state = install_certificate(pki, b"cert", b"key", NOT_BEFORE, not_after, rand=0.99,
                                tolerance=TOLERANCE)
    assert state.renew_at == not_after - TOLERANCE
    assert load_state(pki) == state
    assert check_node_key(pki) == state


def test_a_missing_or_exposed_node_key_is_refused(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    pki.mkdir(mode=0o700)
    with pytest.raises(CertError, match="run `edgecore join` first"):
        check_node_key(pki)
    state = install_certificate(pki, b"cert", b"key", NOT_BEFORE, ISSUED + timedelta(days=1))
    write_private(pki / state.key, b"key")
    (pki / state.key).chmod(0o640)
    with pytest.raises(CertError, match=f"{pki / state.key} has mode 0640"):
        check_node_key(pki)
