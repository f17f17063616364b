"""A node whose certificate expired while it was offline, with real processes: it says
so once, clearly, with the command that brings it back; it keeps serving its cache
meanwhile; and ``edgecore join`` with a new token (same node name, same data directory)
brings the link back, even while edgecore runs, with the cached state intact.

Certificates are made short-lived with cloudcore's ``nodes.certValidity``; the tests
wait for the expiry by polling the clock against the certificate's notAfter.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from certs.errors import format_utc
from tests.harness import (
    Cloud,
    Edge,
    command,
    device,
    device_model,
    node_ready,
    wait_until,
)

pytestmark = pytest.mark.system

EXPIRED = "node certificate expired at"


def _restart_with(cloud: Cloud, settings: dict[str, Any]) -> None:
    assert cloud.stop() == 0
    cloud.config_path.write_text(yaml.safe_dump(settings))
    cloud.start()


def _not_after(edge: Edge) -> datetime:
    state = json.loads((edge.dir / "pki" / "node.json").read_text())
    return datetime.fromisoformat(state["notAfter"])


def _joined(edge: Edge, cloud: Cloud) -> None:
    result = edge.join(cloud.join_token())
    assert result.returncode == 0, result.stderr


def test_an_expired_node_says_how_to_rejoin_and_rejoining_keeps_its_cache(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
) -> None:
    cloud = cloud_factory().start()
    edge = edge_factory(cloud, "edge-a")
    _joined(edge, cloud)
    edge.start()
    cloud.apply(device_model())
    cloud.apply(device("kept", "edge-a"))
    wait_until(lambda: edge.cached_one("Device", "kept"), what="the device cached")
    assert edge.stop() == 0

    # The node is offline; its next certificate lives two seconds.
    _restart_with(cloud, {"nodes": {"certValidity": "2s", "clockSkewSeconds": 0}})
    _joined(edge, cloud)  # a re-join into the same directory, with a new token
    not_after = _not_after(edge)
    wait_until(lambda: datetime.now(UTC) > not_after, 15, what="the certificate to expire")

    edge.start(wait_connected=False)
    wait_until(lambda: EXPIRED in edge.log(), 15, what="the expiry reported")
    log = edge.log()
    assert f"{EXPIRED} {format_utc(not_after)}" in log
    assert (f"edgecore join --server {cloud.url} --token <new token> --node-name edge-a "
            f"--data-dir {edge.dir}") in log
    assert edge.cached_one("Device", "kept") is not None  # the cache still serves
    # It keeps trying (a re-join must be noticed) but says it once, without a traceback.
    wait_until(lambda: edge.log().count("still expired") >= 2, 15, what="two more attempts")
    assert edge.log().count(EXPIRED) == 1
    assert "Traceback" not in edge.log()

    # Re-join while edgecore runs, on a cloud that issues year-long certificates again.
    _restart_with(cloud, {})
    _joined(edge, cloud)
    edge.wait_synced(after=1)
    wait_until(lambda: node_ready(cloud, "edge-a") == "True", what="Ready=True")
    cloud.apply(device("after-rejoin", "edge-a"))
    wait_until(lambda: edge.cached_one("Device", "after-rejoin"), what="sync after re-join")
    assert edge.cached_one("Device", "kept") is not None
    assert "Traceback" not in edge.log()


def test_the_cloud_refusing_an_expired_certificate_gives_the_same_advice(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
) -> None:
    # With 60 s of tolerated skew the node does not call a certificate expired until a
    # minute after its notAfter; the cloud, whose clock decides, refuses it at once.
    cloud = cloud_factory({"nodes": {"certValidity": "2s", "clockSkewSeconds": 60}}).start()
    edge = edge_factory(cloud, "edge-a")
    _joined(edge, cloud)
    not_after = _not_after(edge)
    wait_until(lambda: datetime.now(UTC) > not_after, 15, what="the certificate to expire")

    edge.start(wait_connected=False)
    wait_until(lambda: EXPIRED in edge.log(), 15, what="the cloud's refusal reported")
    assert f"{EXPIRED} {format_utc(not_after)}" in edge.log()
    assert "--node-name edge-a" in edge.log()
    assert "Traceback" not in edge.log()


def test_a_data_directory_is_not_rejoined_under_another_node_name(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
) -> None:
    # Its cache, outbox and twins are edge-a's; handing them to edge-b would mix nodes.
    cloud = cloud_factory().start()
    edge = edge_factory(cloud, "edge-a")
    _joined(edge, cloud)
    before = (edge.dir / "pki" / "node.json").read_text()
    result = subprocess.run(
        [*command("edgecore"), "join", "--server", cloud.url, "--token", cloud.join_token(),
         "--node-name", "edge-b", "--data-dir", str(edge.dir)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert f"{edge.dir} belongs to node 'edge-a'" in result.stderr
    assert (edge.dir / "pki" / "node.json").read_text() == before
    assert yaml.safe_load((edge.dir / "edgecore.yaml").read_text())["nodeName"] == "edge-a"
