"""``efctl node revoke``: a lost or stolen node is cut off at once and stays out, across
its restarts and the cloud's, until it joins again with a new token.  Real processes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from certs.csr import new_node_key_and_csr
from certs.tls import client_context
from efctl.config import write_efctl_config
from protocol import envelope as wire
from protocol.envelope import Op
from tests.harness import Cloud, Edge, command, device, device_model, node_ready, wait_until

pytestmark = pytest.mark.system

CLOSE_REVOKED = 4001


def efctl(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EFCTL_CONFIG": str(config)}
    return subprocess.run([*command("efctl"), *args], capture_output=True, text=True,
                          env=env, timeout=60, check=False)


def keep_certificate(edge: Edge, into: Path) -> tuple[Path, Path]:
    """A copy of the edge's current certificate and key, as a thief would take them."""
    pki = edge.dir / "pki"
    state = json.loads((pki / "node.json").read_text())
    into.mkdir(parents=True, exist_ok=True)
    cert, key = into / "node.crt", into / "node.key"
    shutil.copy2(pki / state["cert"], cert)
    shutil.copy2(pki / state["key"], key)
    return cert, key


def serial_of(cert: Path) -> str:
    return f"{x509.load_pem_x509_certificate(cert.read_bytes()).serial_number:X}"


def renew_with(cloud: Cloud, edge: Edge, cert: Path, key: Path) -> int:
    """Open the link with ``cert`` and ask for a renewal; return the close code the hub
    answered with (no certificate must come back)."""

    async def attempt() -> int:
        ctx = client_context(edge.dir / "pki" / "ca.crt", cert, key)
        _key, csr = new_node_key_and_csr(edge.name)
        async with connect(f"wss://127.0.0.1:{cloud.hub_port}", ssl=ctx) as ws:
            try:
                await ws.send(wire.encode(wire.make(Op.CSR, ts=0, body={"csr": csr.decode()})))
                while True:
                    env = wire.decode(await ws.recv())
                    assert env.op is not Op.CERT, "a revoked certificate was renewed"
            except ConnectionClosed as exc:
                assert exc.rcvd is not None
                return exc.rcvd.code
    return asyncio.run(attempt())


def refusals(cloud: Cloud, node: str) -> int:
    return cloud.log().count(f"refused link from node {node}: its certificate")


def test_a_revoked_node_is_cut_off_at_once_and_stays_out_until_it_joins_again(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge], tmp_path: Path,
) -> None:
    cloud = cloud_factory({"nodes": {"gracePeriodSeconds": 3}}).start()
    edge = edge_factory(cloud, "edge-a")
    assert edge.join(cloud.join_token()).returncode == 0
    stolen = keep_certificate(edge, tmp_path / "stolen")
    edge.start()
    wait_until(lambda: node_ready(cloud, "edge-a") == "True", what="Ready=True")

    result = efctl(cloud.efctl_config, "node", "revoke", "edge-a")
    assert (result.returncode, result.stdout, result.stderr) == (0, "node/edge-a revoked\n", "")
    wait_until(lambda: "node certificate revoked by the cloud; re-join with a new token: "
               "edgecore join" in edge.log(), 5, what="the edge told it was revoked")
    assert "node edge-a: certificate revoked; closing its link" in cloud.log()
    wait_until(lambda: node_ready(cloud, "edge-a") == "Unknown", 3 + 3,
               what="Ready=Unknown by the normal grace period")

    # Its restarts stay refused, before any sync.
    synced = edge.log().count("resync with the cloud")
    before = refusals(cloud, "edge-a")
    assert edge.stop() == 0
    edge.start(wait_connected=False)
    wait_until(lambda: refusals(cloud, "edge-a") > before, 10, what="the restart refused")

    # And so does a restarted cloud: the list is on disk.
    assert cloud.stop() == 0
    cloud.start()
    before = refusals(cloud, "edge-a")
    wait_until(lambda: refusals(cloud, "edge-a") > before, 10,
               what="the edge refused by the restarted cloud")
    assert renew_with(cloud, edge, *stolen) == CLOSE_REVOKED
    assert edge.log().count("resync with the cloud") == synced
    assert node_ready(cloud, "edge-a") == "Unknown"
    # One clear line per edgecore process, not one per attempt, and no tracebacks.
    assert edge.log().count("node certificate revoked by the cloud") == 2
    assert "Traceback" not in edge.log()

    # Recovery: an admin's new token, a new certificate; the old one stays revoked.
    assert edge.stop() == 0
    assert edge.join(cloud.join_token()).returncode == 0
    edge.start()
    wait_until(lambda: node_ready(cloud, "edge-a") == "True", what="Ready=True again")
    cloud.apply(device_model())
    cloud.apply(device("after-rejoin", "edge-a"))
    wait_until(lambda: edge.cached_one("Device", "after-rejoin"), what="sync after re-join")
    assert renew_with(cloud, edge, *stolen) == CLOSE_REVOKED


def test_only_admins_revoke_and_unknown_nodes_are_not_found(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge], tmp_path: Path,
) -> None:
    cloud = cloud_factory().start()
    edge = edge_factory(cloud, "edge-a")
    assert edge.join(cloud.join_token()).returncode == 0
    cert, _key = keep_certificate(edge, tmp_path / "issued")
    for user, role in (("olga", "operator"), ("vic", "viewer")):
        with cloud.api() as admin:
            created = admin.post("/auth/users", json={"name": user, "role": role})
            assert created.status_code == 201
        config = tmp_path / f"{user}.yaml"
        write_efctl_config(config, cloud.url, cloud.ca_pem(), created.json()["token"])
        result = efctl(config, "node", "revoke", "edge-a")
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr == f"error: user '{user}' ({role}) may not create node revocations\n"
        with cloud.api(created.json()["token"]) as c:
            assert c.post("/auth/nodes/edge-a/revoke").status_code == 403

    result = efctl(cloud.efctl_config, "node", "revoke", "ghost")
    assert (result.returncode, result.stderr) == (1, "error: node ghost does not exist\n")

    # The refused attempts changed nothing: the node still gets in.
    edge.start()
    wait_until(lambda: node_ready(cloud, "edge-a") == "True", what="Ready=True")

    with cloud.api() as admin:
        r = admin.post("/auth/nodes/edge-a/revoke")
        assert r.status_code == 200
        body = r.json()
        assert (body["node"], body["revokedBy"], body["serials"], body["disconnected"]) == (
            "edge-a", "admin", [serial_of(cert)], True)
        again = admin.post("/auth/nodes/edge-a/revoke").json()
        assert (again["serials"], again["disconnected"]) == ([], False)


def test_deleting_a_node_revokes_its_certificates_for_when_the_name_joins_again(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge], tmp_path: Path,
) -> None:
    cloud = cloud_factory().start()
    edge = edge_factory(cloud, "edge-a")
    assert edge.join(cloud.join_token()).returncode == 0
    stolen = keep_certificate(edge, tmp_path / "stolen")
    edge.start()
    wait_until(lambda: node_ready(cloud, "edge-a") == "True", what="Ready=True")

    assert cloud.delete("Node", "edge-a", None).status_code == 200
    wait_until(lambda: "node edge-a was deleted: its 1 certificate(s) are revoked"
               in cloud.log(), 10, what="the deleted node's certificate revoked")
    assert edge.stop() == 0

    # The name joins again (a new token, a new certificate): the new one works, the
    # certificate from before the deletion stays out.
    assert edge.join(cloud.join_token()).returncode == 0
    edge.start()
    wait_until(lambda: node_ready(cloud, "edge-a") == "True", what="Ready=True after re-join")
    assert renew_with(cloud, edge, *stolen) == CLOSE_REVOKED
    assert edge.stop() == 0
    # And a restarted cloud leaves the re-joined node's certificate alone.
    assert cloud.stop() == 0
    cloud.start()
    edge.start()
    wait_until(lambda: node_ready(cloud, "edge-a") == "True", what="Ready=True after restart")
