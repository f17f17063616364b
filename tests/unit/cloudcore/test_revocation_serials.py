"""The pure parts of node revocation: reading serials off a peer certificate and a
signed PEM, and the efctl command line."""

from __future__ import annotations

from datetime import timedelta

import pytest

from certs.ca import CertAuthority
from certs.csr import new_node_key_and_csr
from cloudcore.revocation import certificate_serial, peer_serial, serial_hex
from efctl.cli import build_parser


@pytest.mark.parametrize(("peercert", "expected"), [
    # getpeercert() gives the serial as upper-case hex, zero-padded to whole bytes.
    ({"serialNumber": "0A1B2C"}, 0x0A1B2C),
    ({"serialNumber": "7F3E5A9C0D1B2E3F4A5B6C7D8E9F0A1B2C3D4E5F"},
     0x7F3E5A9C0D1B2E3F4A5B6C7D8E9F0A1B2C3D4E5F),
    ({"serialNumber": "ff"}, 255),
    ({"serialNumber": "not hex"}, None),
    ({"serialNumber": 12}, None),
    ({"subject": ()}, None),
    ({}, None),
    (None, None),
])
def test_peer_serial(peercert: dict[str, object] | None, expected: int | None) -> None:
    assert peer_serial(peercert) == expected


def test_serial_hex_is_upper_case_without_padding_and_round_trips() -> None:
    assert serial_hex(0x0A1B2C) == "A1B2C"
    serial = 0x7F3E5A9C0D1B2E3F4A5B6C7D8E9F0A1B2C3D4E5F
    assert peer_serial({"serialNumber": serial_hex(serial)}) == serial


def test_certificate_serial_reads_what_the_ca_signed() -> None:
    ca = CertAuthority.generate()
    _key, csr = new_node_key_and_csr("edge-1")
    first = certificate_serial(ca.sign_node_csr(csr, "edge-1", timedelta(hours=1)))
    second = certificate_serial(ca.sign_node_csr(csr, "edge-1", timedelta(hours=1)))
    assert first[0] != second[0]  # random serials: each issue is told apart
    assert first[0] > 0 and first[1].tzinfo is not None


def test_efctl_node_revoke_parses_and_needs_a_name(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["node", "revoke", "edge-1"])
    assert (args.command, args.action, args.node_name) == ("node", "revoke", "edge-1")
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["node", "revoke"])
    assert exc.value.code == 2
    assert "NAME" in capsys.readouterr().err
