"""Heartbeats, readiness, certificate renewal and the upstream outbox, with real
processes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

from edgecore.outbox import Outbox
from protocol.envelope import ObjectRef, Op
from tests.harness import Cloud, Edge, command, device, device_model, node_ready, wait_until

pytestmark = pytest.mark.system


def test_a_silent_node_goes_unknown_within_the_grace_period_and_back_to_ready(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
) -> None:
    cloud = cloud_factory({"nodes": {"gracePeriodSeconds": 3}}).start()
    edge = edge_factory(cloud, "edge-a")  # heartbeats every second
    assert edge.join(cloud.join_token()).returncode == 0
    edge.start()
    wait_until(lambda: node_ready(cloud, "edge-a") == "True", what="Ready=True")
    status = cloud.get("Node", "edge-a", None)["status"]
    assert int(status["capacity"]["cpu"]) >= 1
    assert status["allocatable"]["memory"].endswith("Ki")
    assert status["nodeInfo"]["edgecoreVersion"]
    assert any(a["type"] == "InternalIP" for a in status["addresses"])

    edge.pause()  # SIGSTOP: the process and its socket stay, heartbeats stop
    wait_until(lambda: node_ready(cloud, "edge-a") == "Unknown", 3 + 3,
               what="Ready=Unknown within the grace period (+ one check interval)")
    edge.resume()
    wait_until(lambda: node_ready(cloud, "edge-a") == "True", 15, what="Ready=True again")


@pytest.mark.slow
def test_the_node_certificate_renews_itself_over_the_link(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
) -> None:
    # A 20 s certificate renews at 70-90 % of its life, 14-18 s after issue.
    cloud = cloud_factory({"nodes": {"certValidity": "20s", "clockSkewSeconds": 0}}).start()
    edge = edge_factory(cloud, "edge-a")
    assert edge.join(cloud.join_token()).returncode == 0
    first = json.loads((edge.dir / "pki" / "node.json").read_text())
    edge.start()
    wait_until(lambda: json.loads((edge.dir / "pki" / "node.json").read_text())["cert"]
               != first["cert"], 30, what="a renewed certificate")
    renewed = json.loads((edge.dir / "pki" / "node.json").read_text())
    assert renewed["notAfter"] > first["notAfter"]
    wait_until(lambda: not (edge.dir / "pki" / first["key"]).exists(), 5,
               what="the old key removed")
    assert oct((edge.dir / "pki" / renewed["key"]).stat().st_mode & 0o777) == "0o600"
    edge.wait_synced(after=1)  # reconnected with the new certificate
    cloud.apply(device_model())
    cloud.apply(device("after-renewal", "edge-a"))
    wait_until(lambda: edge.cached_one("Device", "after-renewal"), what="sync on the new cert")
    assert "renewed the certificate of node edge-a" in cloud.log()


def test_the_outbox_survives_a_stop_and_drains_when_the_cloud_is_back(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
) -> None:
    cloud = cloud_factory().start()
    edge = edge_factory(cloud, "edge-a")
    assert edge.join(cloud.join_token()).returncode == 0
    cloud.apply(device_model())
    # Without properties the edge's twin has nothing of its own to report for "mine",
    # so the status seen in the cloud is the one queued below.
    mine_device = device("mine", "edge-a")
    del mine_device["spec"]["properties"]
    cloud.apply(mine_device)
    cloud.apply(device("theirs", "edge-b"))
    assert cloud.stop() == 0

    # Offline: statuses are queued durably; the latest per object wins.
    outbox = Outbox.open(edge.dir / "outbox.db")
    mine = ObjectRef(kind="Device", namespace="default", name="mine")
    theirs = ObjectRef(kind="Device", namespace="default", name="theirs")
    outbox.put(Op.STATUS, mine, {"status": {"state": "offline"}}, coalesce_key="status/mine")
    outbox.put(Op.STATUS, mine, {"status": {"state": "online"}}, coalesce_key="status/mine")
    outbox.put(Op.STATUS, theirs, {"status": {"state": "online"}}, coalesce_key="status/theirs")
    assert len(outbox) == 2
    outbox.close()

    edge.start(wait_connected=False)
    cloud.start()
    edge.wait_synced()
    wait_until(lambda: cloud.get("Device", "mine").get("status", {}).get("state") == "online",
               what="the queued status in the cloud")
    wait_until(lambda: len(Outbox.open(edge.dir / "outbox.db")) == 0, what="an empty outbox")
    assert "status" not in cloud.get("Device", "theirs")  # not edge-a's to write
    assert "the cloud refused an upstream message (Forbidden)" in edge.log()


def test_cloudcore_refuses_to_start_on_a_key_readable_by_others(
    cloud_factory: Callable[..., Cloud],
) -> None:
    cloud = cloud_factory().start()
    assert cloud.stop() == 0
    key = cloud.dir / "pki" / "server.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    key.chmod(0o644)
    result = subprocess.run(
        [*command("cloudcore"), "run", "--data-dir", str(cloud.dir),
         "--hub-listen", f"127.0.0.1:{cloud.hub_port}",
         "--api-listen", f"127.0.0.1:{cloud.api_port}"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "server.key" in result.stderr and "600" in result.stderr
    assert oct(key.stat().st_mode & 0o777) == "0o644"  # reported, not silently "fixed"

