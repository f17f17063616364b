"""Joining with a node clock that is off from the cloud's: a real cloudcore, and
``edgecore.join.join`` called in this process with a clock moved by a fixed offset.

The system clock cannot be moved in a test, so only the node's clock is shifted, and
only where edgecore reads it (``clock=``); TLS itself still runs on real time.  What
the cloud sees is exactly what a node with a skewed clock would send.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from certs.csr import new_node_key_and_csr
from edgecore.join import JoinError, join
from tests.harness import Cloud

pytestmark = pytest.mark.system

TOLERANCE = timedelta(minutes=1)


def _clock(offset: timedelta) -> Callable[[], datetime]:
    return lambda: datetime.now(UTC) + offset


def _node_exists(cloud: Cloud, name: str) -> bool:
    with cloud.api() as client:
        return client.get(f"/api/v1/nodes/{name}").status_code == 200


@pytest.mark.parametrize("offset", [timedelta(seconds=50), -timedelta(seconds=50)])
def test_a_node_clock_within_the_tolerance_joins(
    cloud_factory: Callable[..., Cloud], tmp_path: Path, offset: timedelta,
) -> None:
    cloud = cloud_factory({"nodes": {"clockSkewSeconds": TOLERANCE.total_seconds()}}).start()
    cfg = join(cloud.url, cloud.join_token(), "edge-a", tmp_path / "edge-a",
               clock=_clock(offset))
    assert cfg.clockSkewSeconds == 60  # learned from the cloud, for renewal and expiry
    saved = yaml.safe_load((tmp_path / "edge-a" / "edgecore.yaml").read_text())
    assert saved["clockSkewSeconds"] == 60
    assert _node_exists(cloud, "edge-a")


@pytest.mark.parametrize(("offset", "words"), [
    (timedelta(minutes=10), "10m0s ahead of"),
    (-timedelta(minutes=10), "10m0s behind"),
])
def test_a_node_clock_beyond_the_tolerance_is_refused_naming_the_skew(
    cloud_factory: Callable[..., Cloud], tmp_path: Path, offset: timedelta, words: str,
) -> None:
    cloud = cloud_factory({"nodes": {"clockSkewSeconds": TOLERANCE.total_seconds()}}).start()
    token = cloud.join_token()
    with pytest.raises(JoinError) as info:
        join(cloud.url, token, "edge-a", tmp_path / "edge-a", clock=_clock(offset))
    message = str(info.value)
    assert f"this node's clock is {words} the cloud's" in message
    assert "1m0s tolerated" in message
    assert not _node_exists(cloud, "edge-a")
    assert not (tmp_path / "edge-a").exists()  # nothing half-written on the node

    # With the clock set right, the same token joins.
    join(cloud.url, token, "edge-a", tmp_path / "edge-a")
    assert _node_exists(cloud, "edge-a")


def test_a_join_from_an_older_edgecore_without_its_clock_is_still_accepted(
    cloud_factory: Callable[..., Cloud],
) -> None:
    # nodeTime is optional: the check needs it, the join does not.
    cloud = cloud_factory().start()
    _, csr = new_node_key_and_csr("edge-old")
    ca = ssl.create_default_context(cadata=cloud.ca_pem())
    with httpx.Client(verify=ca, timeout=10) as client:
        reply = client.post(f"{cloud.url}/join",
                            json={"nodeName": "edge-old", "csr": csr.decode()},
                            headers={"Authorization": f"Bearer {cloud.join_token()}"})
    assert reply.status_code == 201, reply.text
    assert reply.json()["clockSkewSeconds"] == 300
