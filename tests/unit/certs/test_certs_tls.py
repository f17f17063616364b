"""Real TLS handshakes on 127.0.0.1 with the contexts the hub and edgecore use."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from certs.ca import CertAuthority, ensure_server_cert, load_or_create_ca
from certs.csr import new_node_key_and_csr
from certs.errors import InsecureKeyFile
from certs.keyfiles import write_private, write_public
from certs.tls import (
    client_context,
    fetch_insecure_context,
    peer_common_name,
    server_context,
)

TIMEOUT = 10

SERVER_NAME = "cloud.example.test"


@dataclass(frozen=True)
class NodeFiles:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: CertAuthority
    ca_file: Path
    server_cert: Path
    server_key: Path


def issue_node_files(ca: CertAuthority, directory: Path, node_name: str) -> NodeFiles:
    """What edgecore ends up with after joining: its own key and a CA-signed certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    key_pem, csr_pem = new_node_key_and_csr(node_name)
    files = NodeFiles(cert=directory / f"{node_name}.crt", key=directory / f"{node_name}.key")
    write_private(files.key, key_pem)
    write_public(files.cert, ca.sign_node_csr(csr_pem, node_name))
    return files


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    pki_dir = tmp_path / "pki"
    ca = load_or_create_ca(pki_dir)
    server_cert, server_key = ensure_server_cert(pki_dir, ca, [SERVER_NAME])
    return Pki(ca=ca, ca_file=pki_dir / "ca.crt", server_cert=server_cert, server_key=server_key)


@dataclass
class Server:
    port: int
    accepted: list[str | None] = field(default_factory=list)


@asynccontextmanager
async def serving(ctx: ssl.SSLContext) -> AsyncIterator[Server]:
    """A TLS server that answers every connection with the client's CN and a newline.

    The callback runs only after a completed handshake, so ``accepted`` lists exactly
    the clients the TLS layer let through.
    """
    state = Server(port=0)

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cn = peer_common_name(writer.get_extra_info("peercert"))
        state.accepted.append(cn)
        writer.write(f"{cn}\n".encode())
        with suppress(ConnectionError):
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0, ssl=ctx)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


async def exchange(
    server: Server, ctx: ssl.SSLContext, server_hostname: str = "127.0.0.1"
) -> tuple[bytes, tuple[str, str, int] | None]:
    """Connect, read the server's line; return it with the negotiated cipher."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", server.port, ssl=ctx, server_hostname=server_hostname),
        TIMEOUT,
    )
    try:
        line = await asyncio.wait_for(reader.readline(), TIMEOUT)
        return line, writer.get_extra_info("cipher")
    finally:
        writer.close()
        with suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()


async def assert_rejected(server: Server, ctx: ssl.SSLContext, **kwargs: str) -> None:
    # With TLS 1.3 a client's handshake completes before the server has checked the
    # client certificate; the refusal then shows up as an alert, a reset or EOF on the
    # first read (libcheck gotcha 6), so any of those counts as rejection.
    try:
        line, _ = await exchange(server, ctx, **kwargs)
    except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
        pass
    else:
        assert line == b"", f"connection was accepted: {line!r}"
    assert server.accepted == []


def hub_context(pki: Pki) -> ssl.SSLContext:
    return server_context(pki.server_cert, pki.server_key, pki.ca_file, require_client_cert=True)


async def test_node_with_a_ca_signed_cert_is_identified_by_its_cn(pki: Pki, tmp_path: Path) -> None:
    node = issue_node_files(pki.ca, tmp_path / "edge", "node-1")
    async with serving(hub_context(pki)) as server:
        line, _ = await exchange(server, client_context(pki.ca_file, node.cert, node.key))
    assert line == b"node-1\n"
    assert server.accepted == ["node-1"]


async def test_server_name_from_advertise_addresses_verifies(pki: Pki, tmp_path: Path) -> None:
    node = issue_node_files(pki.ca, tmp_path / "edge", "node-1")
    ctx = client_context(pki.ca_file, node.cert, node.key)
    async with serving(hub_context(pki)) as server:
        line, _ = await exchange(server, ctx, server_hostname=SERVER_NAME)
    assert line == b"node-1\n"


async def test_server_name_not_in_the_cert_fails_verification(pki: Pki, tmp_path: Path) -> None:
    node = issue_node_files(pki.ca, tmp_path / "edge", "node-1")
    ctx = client_context(pki.ca_file, node.cert, node.key)
    async with serving(hub_context(pki)) as server:
        with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
            await exchange(server, ctx, server_hostname="elsewhere.example.test")
    assert server.accepted == []


async def test_client_without_certificate_is_rejected(pki: Pki) -> None:
    async with serving(hub_context(pki)) as server:
        await assert_rejected(server, client_context(pki.ca_file))


async def test_client_without_certificate_is_rejected_on_tls12(pki: Pki) -> None:
    ctx = client_context(pki.ca_file)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    async with serving(hub_context(pki)) as server:
        await assert_rejected(server, ctx)


async def test_client_cert_from_another_ca_is_rejected(pki: Pki, tmp_path: Path) -> None:
    stranger = issue_node_files(CertAuthority.generate(), tmp_path / "other", "node-1")
    async with serving(hub_context(pki)) as server:
        await assert_rejected(server, client_context(pki.ca_file, stranger.cert, stranger.key))


async def test_server_certificate_cannot_pose_as_a_node(pki: Pki) -> None:
    # Same CA, but the EKU is serverAuth only; the hub must not accept it as a client.
    ctx = client_context(pki.ca_file, pki.server_cert, pki.server_key)
    async with serving(hub_context(pki)) as server:
        await assert_rejected(server, ctx)


async def test_client_refuses_a_server_from_another_ca(pki: Pki, tmp_path: Path) -> None:
    node = issue_node_files(pki.ca, tmp_path / "edge", "node-1")
    other_ca = CertAuthority.generate()
    ctx = client_context(other_ca.cert_pem, node.cert, node.key)
    async with serving(hub_context(pki)) as server:
        with pytest.raises(ssl.SSLCertVerificationError):
            await exchange(server, ctx)


async def test_tls12_negotiates_ecdhe_with_aead(pki: Pki, tmp_path: Path) -> None:
    node = issue_node_files(pki.ca, tmp_path / "edge", "node-1")
    ctx = client_context(pki.ca_file, node.cert, node.key)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    async with serving(hub_context(pki)) as server:
        line, cipher = await exchange(server, ctx)
    assert line == b"node-1\n"
    assert cipher is not None
    name, version, _ = cipher
    assert version == "TLSv1.2"
    assert name.startswith("ECDHE-")
    assert "GCM" in name or "CHACHA20" in name


async def test_tls12_client_offering_only_cbc_is_refused(pki: Pki, tmp_path: Path) -> None:
    node = issue_node_files(pki.ca, tmp_path / "edge", "node-1")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.ca_file)
    ctx.load_cert_chain(node.cert, node.key)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA")
    async with serving(hub_context(pki)) as server:
        # The server aborts the handshake: an alert or a reset, depending on timing.
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await exchange(server, ctx)
    assert server.accepted == []


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
async def test_tls11_client_is_refused(pki: Pki, tmp_path: Path) -> None:
    node = issue_node_files(pki.ca, tmp_path / "edge", "node-1")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.ca_file)
    ctx.load_cert_chain(node.cert, node.key)
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    async with serving(hub_context(pki)) as server:
        # The server aborts the handshake: an alert or a reset, depending on timing.
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await exchange(server, ctx)


async def test_ca_may_be_given_as_pem_or_der_bytes(pki: Pki, tmp_path: Path) -> None:
    node = issue_node_files(pki.ca, tmp_path / "edge", "node-1")
    async with serving(hub_context(pki)) as server:
        for ca in (pki.ca.cert_pem, pki.ca.cert_der):
            line, _ = await exchange(server, client_context(ca, node.cert, node.key))
            assert line == b"node-1\n"


async def test_join_server_accepts_clients_without_certificate(pki: Pki, tmp_path: Path) -> None:
    # The join endpoint: new nodes have no certificate yet, renewing nodes present theirs.
    ctx = server_context(pki.server_cert, pki.server_key, pki.ca_file, require_client_cert=False)
    node = issue_node_files(pki.ca, tmp_path / "edge", "node-1")
    async with serving(ctx) as server:
        anonymous, _ = await exchange(server, client_context(pki.ca_file))
        renewing, _ = await exchange(server, client_context(pki.ca_file, node.cert, node.key))
    assert anonymous == b"None\n"
    assert renewing == b"node-1\n"


async def test_insecure_fetch_context_connects_without_knowing_the_ca(pki: Pki) -> None:
    ctx = server_context(pki.server_cert, pki.server_key, None, require_client_cert=False)
    async with serving(ctx) as server:
        line, _ = await exchange(server, fetch_insecure_context())
    assert line == b"None\n"


def test_server_refuses_an_insecure_key(pki: Pki) -> None:
    pki.server_key.chmod(0o644)
    with pytest.raises(InsecureKeyFile):
        hub_context(pki)


def test_client_refuses_an_insecure_key(pki: Pki, tmp_path: Path) -> None:
    node = issue_node_files(pki.ca, tmp_path / "edge", "node-1")
    node.key.chmod(0o640)
    with pytest.raises(InsecureKeyFile):
        client_context(pki.ca_file, node.cert, node.key)


def test_require_client_cert_needs_a_ca(pki: Pki) -> None:
    with pytest.raises(ValueError):
        server_context(pki.server_cert, pki.server_key, None, require_client_cert=True)


@pytest.mark.parametrize(
    ("peercert", "expected"),
    [
        ({}, None),
        (None, None),
        ({"subject": ((("organizationName", "edgefleet:nodes"),), (("commonName", "n1"),))}, "n1"),
        ({"subject": ((("commonName", "a"),), (("commonName", "b"),))}, None),
        ({"subject": ((("organizationName", "x"),),)}, None),
    ],
)
def test_peer_common_name(peercert: dict[str, object] | None, expected: str | None) -> None:
    assert peer_common_name(peercert) == expected
