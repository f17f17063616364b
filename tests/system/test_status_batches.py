"""Statuses queued at the edge go up in ``statuses`` frames: what the cloud refuses leaves
the outbox once (logged, never resent), what it accepts is written.  Real cloudcore and
edgecore processes; the statuses are put straight into the stopped edge's outbox file, as
edgecore itself queues them."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from edgecore.outbox import Outbox
from protocol.envelope import ObjectRef, Op
from protocol.resources import REGISTRY
from tests.harness import Cloud, Edge, device, device_model, wait_until

pytestmark = pytest.mark.system

ACK_TIMEOUT = 1.0
"""The edge's ack timeout here (seconds): an entry left unacked is resent after it."""

REFUSED = "the cloud refused an upstream message ("


def outbox_rows(edge: Edge) -> int:
    """Rows in the edge's outbox file, read beside the running edgecore (a WAL database
    lets a reader in while its writer works)."""
    conn = sqlite3.connect(f"file:{edge.dir / 'outbox.db'}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
    finally:
        conn.close()


def refusals(edge: Edge) -> list[str]:
    return [line for line in edge.log().splitlines() if REFUSED in line]


def holds_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll ``check`` for ``seconds``; fail the first time it is false."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert check(), f"{what} stopped holding"
        time.sleep(0.05)


def statuses_written(cloud: Cloud, name: str, after_rv: int, until_rv: int) -> list[Any]:
    """Every status the cloud stored for Device ``name`` after ``after_rv``, up to the
    change that made ``until_rv``, read back from its change stream (a later write may
    have replaced an earlier one: the stream keeps both)."""
    path = REGISTRY.by_kind("Device").collection_path("default")
    written: list[Any] = []
    with cloud.api() as api, api.stream(
            "GET", path, params={"watch": "true", "resourceVersion": str(after_rv)},
            timeout=httpx.Timeout(10, read=5)) as stream:
        for line in stream.iter_lines():
            if not line:
                continue
            event = json.loads(line)
            assert event["type"] != "ERROR", event
            meta = event["object"]["metadata"]
            if meta["name"] != name:
                continue
            written.append(event["object"].get("status"))
            if int(meta["resourceVersion"]) >= until_rv:
                return written
    raise AssertionError(f"the change stream of Devices ended before rv {until_rv}")


def test_refused_statuses_leave_the_outbox_once_and_the_others_reach_the_cloud(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
) -> None:
    cloud = cloud_factory().start()
    edge = edge_factory(cloud, "edge-a", link={"ackTimeoutSeconds": ACK_TIMEOUT})
    assert edge.join(cloud.join_token()).returncode == 0
    cloud.apply(device_model())
    assert cloud.apply(device("mine", "edge-a")).status_code == 201
    assert cloud.apply(device("theirs", "edge-b")).status_code == 201
    theirs_before = cloud.get("Device", "theirs")

    # First run: with no mapper, the twin's status of "mine" is its desired value as
    # observed.  Once that is in the cloud and the outbox is empty, stop.
    edge.start()
    wait_until(lambda: cloud.get("Device", "mine").get("status"),
               what="the twin's status of mine in the cloud")
    wait_until(lambda: outbox_rows(edge) == 0, what="an empty outbox before the stop")
    twin_status = cloud.get("Device", "mine")["status"]
    assert edge.stop() == 0

    # Offline: three statuses queued as edgecore queues them (report_statuses).
    mine = {"state": "online", "twins": [{"propertyName": "temperature", "reported": {
        "value": "77", "metadata": {"timestamp": str(int(time.time() * 1000)),
                                    "type": "int"}}}]}
    queued = [(ObjectRef(kind="Device", namespace="default", name="mine"), mine),
              (ObjectRef(kind="Device", namespace="default", name="theirs"),
               {"state": "offline"}),
              (ObjectRef(kind="Device", namespace="default", name="ghost"), {"state": "online"})]
    outbox = Outbox.open(edge.dir / "outbox.db")
    try:
        outbox.put_many([(Op.STATUS, ref, {"status": status}, f"status/{ref.key}")
                         for ref, status in queued])
        assert len(outbox) == 3
    finally:
        outbox.close()
    rv_before = cloud.store_rv()

    edge.start()

    wait_until(lambda: outbox_rows(edge) == 0 and len(refusals(edge)) >= 2,
               what="the outbox emptied and both refusals logged")
    # Nothing comes back: were an entry kept or resent, the outbox would fill again or a
    # refusal be logged twice within an ack timeout or two.
    holds_for(lambda: outbox_rows(edge) == 0 and len(refusals(edge)) == 2,
              2 * ACK_TIMEOUT + 0.5, what="an empty outbox and two refusals")
    forbidden, not_found = sorted(refusals(edge))
    assert "(Forbidden)" in forbidden and "Device/default/theirs" in forbidden, forbidden
    assert "(NotFound)" in not_found and "Device/default/ghost" in not_found, not_found
    assert cloud.log().count("node edge-a: 2 of 3 statuses refused") == 1

    # The queued status of "mine" was written.  The twin queues every device's status
    # again after each resync, so its own view of "mine" (unchanged since the first run)
    # may be written after it: the cloud ends with one or the other, and its change
    # stream shows the queued one went first (the drain sent it before the resync ended).
    final = cloud.get("Device", "mine")
    written = statuses_written(cloud, "mine", rv_before, int(final["metadata"]["resourceVersion"]))
    assert written[0] == mine, written
    assert all(status == twin_status for status in written[1:]), written
    assert final["status"] in (mine, twin_status)
    assert cloud.get("Device", "theirs") == theirs_before
    with cloud.api() as api:
        assert api.get(REGISTRY.by_kind("Device").object_path("default", "ghost")
                       ).status_code == 404


def test_a_cloud_with_a_smaller_frame_limit_gets_the_statuses_in_smaller_frames(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
) -> None:
    """The edge batches statuses into frames of up to 64 KiB; a cloud configured to take
    less answers 413 naming the frame, and the edge sends the statuses again in smaller
    frames instead of repeating the one it cannot take."""
    cloud = cloud_factory(settings={"hub": {"maxFrameBytes": 4096}}).start()
    edge = edge_factory(cloud, "edge-a", link={"ackTimeoutSeconds": ACK_TIMEOUT})
    assert edge.join(cloud.join_token()).returncode == 0
    cloud.apply(device_model())
    names = [f"d{i:02d}" for i in range(40)]
    for name in names:
        bare = device(name, "edge-a")
        del bare["spec"]["properties"]  # no twin of its own to upload after the resync
        assert cloud.apply(bare).status_code == 201
    status = {"state": "online", "lastOnlineTime": "2026-01-01T00:00:00Z"}
    outbox = Outbox.open(edge.dir / "outbox.db")
    try:  # 40 statuses of ~150 bytes: one frame of ~6 KB
        outbox.put_many([(Op.STATUS, ref, {"status": status}, f"status/{ref.key}")
                         for ref in (ObjectRef(kind="Device", namespace="default", name=n)
                                     for n in names)])
    finally:
        outbox.close()

    edge.start()

    wait_until(lambda: all((cloud.get("Device", n).get("status") or {}).get("lastOnlineTime")
                           == status["lastOnlineTime"] for n in names),
               timeout=30, what="every status in the cloud")
    wait_until(lambda: outbox_rows(edge) == 0, what="an empty outbox")
    assert "exceeds the limit of 4096" in cloud.log()
    assert "sending statuses in frames of at most" in edge.log()
    assert not refusals(edge)
