"""A full disk, made repeatable with a size cap on each sqlite file: a write that does
not fit is refused with a clear "store is full (cap N bytes)" error and leaves nothing
half-written, the file passes its integrity check (after a kill -9 too), and once the
cap is raised (a restart with a bigger one) writes work again and nothing that was
acknowledged is missing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgecore.outbox import Outbox
from protocol.envelope import ObjectRef, Op
from protocol.errors import StoreFull
from tests.faults.support import ROUNDS, TwinApp, acknowledged, assert_intact, integrity
from tests.harness import Cloud, Edge, device, device_model, reported, wait_until
from tests.reliability import record_fault

DEVICES = "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices"
CLOUD_CAP = 192 * 1024
TWIN_CAP = 64 * 1024
OUTBOX_CAP = 32 * 1024


def _padded(name: str, size: int) -> dict[str, Any]:
    obj = device(name, None, desired=name)
    obj["metadata"]["annotations"] = {"padding": "x" * size}
    return obj


@pytest.mark.system
def test_cloud_store_at_its_cap_refuses_writes_cleanly_and_recovers(
    cloud_factory: Callable[..., Cloud],
) -> None:
    cloud = cloud_factory({"storeMaxBytes": CLOUD_CAP}).start()
    assert cloud.apply(device_model()).status_code in (200, 201)
    acked: dict[str, int] = {}
    refused: list[str] = []
    with cloud.api() as api:
        # Fill it: big objects first, then ever smaller ones, until even a small one
        # does not fit.
        for size in (4000, 1000, 200):
            for i in range(1000):
                name = f"fill-{size}-{i}"
                r = api.put(f"{DEVICES}/{name}", json=_padded(name, size))
                if r.status_code == 507:
                    body = r.json()
                    assert body["reason"] == "InsufficientStorage"
                    assert f"store is full (cap {CLOUD_CAP} bytes)" in body["message"]
                    assert "storeMaxBytes" in body["message"]
                    refused.append(name)
                    break
                assert r.status_code == 201, r.text
                acked[name] = int(r.json()["metadata"]["resourceVersion"])
            else:
                pytest.fail(f"the store took 1000 objects of {size} bytes under its cap")
        # Nothing of a refused write is there; reads still work; deletes still work.
        for name in refused:
            assert api.get(f"{DEVICES}/{name}").status_code == 404
        gone = next(iter(acked))
        assert api.delete(f"{DEVICES}/{gone}").status_code == 200
        del acked[gone]
    assert (cloud.dir / "store.db").stat().st_size <= CLOUD_CAP

    cloud.kill9()
    assert_intact(cloud.dir)
    cloud.config_path.write_text(yaml.safe_dump({"storeMaxBytes": 4 * CLOUD_CAP}))
    cloud.start()
    for name in refused:
        r = cloud.apply(_padded(name, 4000))
        assert r.status_code == 201, r.text
    stored = {d["metadata"]["name"]: int(d["metadata"]["resourceVersion"])
              for d in cloud.list("Device")}
    found = sum(1 for name, rv in acked.items() if stored.get(name) == rv)
    assert gone not in stored
    assert cloud.stop() == 0
    assert_intact(cloud.dir)
    record_fault("store-full-cloudcore", len(refused), len(acked), found, 0)
    assert found == len(acked)


def _set_storage(edge: Edge, **caps: int | None) -> None:
    path = edge.dir / "edgecore.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg.setdefault("storage", {}).update(caps)
    path.write_text(yaml.safe_dump(cfg))


@pytest.mark.system
def test_edge_twin_store_at_its_cap_answers_an_error_result_and_recovers(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
) -> None:
    cloud = cloud_factory().start()
    edge = edge_factory(cloud, "edge-a")
    assert edge.join(cloud.join_token()).returncode == 0
    _set_storage(edge, twinMaxBytes=TWIN_CAP)
    edge.start()
    assert cloud.apply(device_model()).status_code in (200, 201)
    assert cloud.apply(device("thermo", "edge-a")).status_code in (200, 201)
    wait_until(lambda: edge.cached_one("Device", "thermo"), what="the device on the edge")

    app = TwinApp(edge.mqtt_port, "default", "thermo", client_id="filler")
    acked: list[str] = []
    refused: dict[str, str] | None = None
    try:
        assert acknowledged(app.update("t1", {"temperature": "23"}))
        for i in range(200):
            # Four new properties of 500 characters (a twin value's limit) per update.
            pads = {f"pad{i}{c}": "y" * 500 for c in "abcd"}
            result = app.update(f"pad-{i}", pads)
            assert result is not None, "no result for a twin update"
            if acknowledged(result):
                acked.extend(pads)
                continue
            assert result["code"] == 507, result
            assert f"store is full (cap {TWIN_CAP} bytes)" in result["reason"]
            refused = pads
            break
        assert refused is not None, "the twin store took 200 updates under its cap"
        twin = app.get("g1")
        assert not set(refused) & set(twin), "a refused update was half-written"
        assert set(acked) <= set(twin)
    finally:
        app.close()
    # The acknowledged reported value reached the cloud all the same.
    wait_until(lambda: reported(cloud, "thermo", "temperature") == "23", 20,
               what="the reported temperature in the cloud")

    edge.kill9()
    assert_intact(edge.dir)
    assert (edge.dir / "twin.db").stat().st_size <= TWIN_CAP
    _set_storage(edge, twinMaxBytes=4 * TWIN_CAP)
    edge.start()
    app = TwinApp(edge.mqtt_port, "default", "thermo", client_id="after")
    try:
        assert acknowledged(app.update("again", refused))
        twin = app.get("g2")
    finally:
        app.close()
    found = sum(1 for name in acked if name in twin)
    assert edge.stop() == 0
    assert_intact(edge.dir)
    record_fault("store-full-edge-twin", 1, len(acked), found, 0)
    assert found == len(acked) and set(refused) <= set(twin)


def test_outbox_at_its_cap_refuses_a_put_and_keeps_everything_queued(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.db"
    injected = acked_total = found_total = 0
    for round_no in range(ROUNDS):
        outbox = Outbox.open(path, max_bytes=OUTBOX_CAP * (round_no + 1))
        # Messages queued so far (the status is checked on its own: each round's
        # replaces the last, as coalescing should).
        queued = {e.envelope_id for e in outbox.peek(0, 100_000) if e.op is Op.MESSAGE}
        ref = ObjectRef(kind="Device", namespace="default", name="d")
        with pytest.raises(StoreFull) as caught:
            for i in range(10_000):
                queued.add(outbox.put(Op.MESSAGE, None, {"i": i, "pad": "z" * 700}))
                if i == 0:
                    outbox.put(Op.STATUS, ref, {"status": round_no}, coalesce_key="status/d")
        injected += 1
        assert f"store is full (cap {OUTBOX_CAP * (round_no + 1)} bytes)" in caught.value.message
        assert "storage.outboxMaxBytes" in caught.value.message
        before = outbox.peek(0, 100_000)
        # A coalescing put that does not fit leaves the entry it would replace.
        with pytest.raises(StoreFull):
            outbox.put(Op.STATUS, ref, {"status": "x" * 20_000}, coalesce_key="status/d")
        assert outbox.peek(0, 100_000) == before
        # Taking entries out (the cloud's acks) always works, and frees room.
        first = next(e for e in before if e.op is Op.MESSAGE)
        assert outbox.remove(first.envelope_id)
        queued.discard(first.envelope_id)
        outbox.close()
        assert integrity(path) == "ok"

        # Reopened with a bigger cap: every queued entry is there, once.
        reopened = Outbox.open(path, max_bytes=OUTBOX_CAP * (round_no + 2))
        entries = reopened.peek(0, 100_000)
        ids = [e.envelope_id for e in entries]
        assert len(ids) == len(set(ids))
        held = set(ids)
        acked_total += len(queued)
        found_total += len(queued & held)
        assert queued <= held, f"lost {len(queued - held)} acknowledged puts"
        statuses = [e for e in entries if e.op is Op.STATUS]
        assert len(statuses) == 1 and statuses[0].body == {"status": round_no}
        reopened.put(Op.MESSAGE, None, {"after": round_no})
        reopened.close()
    record_fault("store-full-edge-outbox", injected, acked_total, found_total, 0)
