"""kill -9 of cloudcore at a random point of a stream of API writes, ROUNDS times: every
write the API acknowledged (2xx) is in the store afterwards, exactly, nothing twice, and
every sqlite file passes its integrity check.

Three writer threads each own five Devices and send one request at a time (PUT with a
new desired value, now and then a DELETE), so at the kill each has at most one write in
flight: for every object the store must hold its last acknowledged state or the state
that in-flight write would have made - nothing else."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.faults.support import ROUNDS, assert_intact, schedule
from tests.harness import Cloud, device, device_model, wait_until
from tests.reliability import record_fault

pytestmark = [pytest.mark.system, pytest.mark.slow]

DEVICES = "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices"
WRITERS = 3
OBJECTS_PER_WRITER = 5

# An object's state as the writer knows it: its desired value and resourceVersion, or
# None (deleted / never created) with the delete's resourceVersion.
State = tuple[str | None, int]


@dataclass
class Writer:
    index: int
    seed: int
    acked: dict[str, State] = field(default_factory=dict)
    acked_rvs: list[int] = field(default_factory=list)
    in_flight: tuple[str, str | None] | None = None  # (name, value or None for a delete)
    count: int = 0
    error: str | None = None  # a refusal from a live cloud, which no write should get

    def names(self) -> list[str]:
        return [f"w{self.index}-{j}" for j in range(OBJECTS_PER_WRITER)]


def _desired(obj: dict[str, Any]) -> str:
    return str(obj["spec"]["properties"][0]["desired"]["value"])


def _write_until_refused(cloud: Cloud, writer: Writer, round_no: int, step: int) -> None:
    """Send writes until the cloud stops answering; record each acknowledged one."""
    rng = random.Random(writer.seed * 1000 + round_no)
    with cloud.api() as api:
        while True:
            name = rng.choice(writer.names())
            exists = (writer.acked.get(name) or (None, 0))[0] is not None
            value = None if exists and rng.random() < 0.15 else f"{round_no}.{step}"
            step += 1
            writer.in_flight = (name, value)
            try:
                if value is None:
                    r = api.delete(f"{DEVICES}/{name}")
                else:
                    r = api.put(f"{DEVICES}/{name}", json=device(name, None, desired=value))
            except httpx.HTTPError:
                return  # the cloud is gone: this write stays unacknowledged
            if r.status_code not in (200, 201):
                writer.error = f"{r.status_code} {r.text}"
                return
            rv = int(r.json()["metadata"]["resourceVersion"])
            writer.acked[name] = (value, rv)
            writer.acked_rvs.append(rv)
            writer.in_flight = None
            writer.count += 1


def _stored(cloud: Cloud) -> dict[str, State]:
    items = cloud.list("Device")
    names = [d["metadata"]["name"] for d in items]
    assert len(names) == len(set(names)), f"an object listed twice: {sorted(names)}"
    return {d["metadata"]["name"]: (_desired(d), int(d["metadata"]["resourceVersion"]))
            for d in items}


def test_kill9_cloudcore_during_api_writes_loses_no_acknowledged_write(
    cloud_factory: Callable[..., Cloud],
) -> None:
    rng = schedule("kill9-cloudcore")
    cloud = cloud_factory().start()
    assert cloud.apply(device_model()).status_code in (200, 201)
    writers = [Writer(i, rng.randrange(1 << 30)) for i in range(WRITERS)]
    mismatches: list[str] = []
    duplicated = 0
    for round_no in range(ROUNDS):
        before = sum(w.count for w in writers)
        threads = [threading.Thread(target=_write_until_refused, args=(cloud, w, round_no, 0))
                   for w in writers]
        for t in threads:
            t.start()
        # At least a few writes land each round; then the kill comes at a random point.
        wait_until(lambda: sum(w.count for w in writers) >= before + 20, 30,  # noqa: B023
                   what="acknowledged writes")
        time.sleep(rng.uniform(0.0, 1.0))  # where the kill falls: the fault schedule
        cloud.kill9()
        for t in threads:
            t.join(15)
            assert not t.is_alive(), "a writer did not notice the cloud going away"
        assert not [w.error for w in writers if w.error], [w.error for w in writers]
        assert_intact(cloud.dir)

        cloud.start()
        stored = _stored(cloud)
        for writer in writers:
            for name in writer.names():
                acked = writer.acked.get(name, (None, 0))
                held = stored.get(name, (None, 0))
                flight = writer.in_flight
                if held[0] == acked[0] and (held[0] is None or held[1] == acked[1]):
                    continue  # exactly the last acknowledged state
                if flight is not None and flight[0] == name and held[0] == flight[1] \
                        and (held[0] is None or held[1] > acked[1]):
                    # The unacknowledged write landed: allowed, and from now on it is
                    # what a reader sees.
                    writer.acked[name] = held if held[0] is not None else (None, acked[1])
                    continue
                mismatches.append(f"round {round_no}: {name} holds {held}, the last "
                                  f"acknowledged state is {acked} (in flight: {flight})")
                writer.acked[name] = held  # judge the next round from what is there
            writer.in_flight = None
        # No resourceVersion handed out twice, even across the crash: a write after the
        # restart gets one above every acknowledged one.
        all_rvs = [rv for w in writers for rv in w.acked_rvs]
        duplicated += len(all_rvs) - len(set(all_rvs))
        r = cloud.apply(device("after-restart", None, desired=str(round_no)))
        assert r.status_code in (200, 201), r.text
        assert int(r.json()["metadata"]["resourceVersion"]) > max(all_rvs)

    assert cloud.stop() == 0
    assert_intact(cloud.dir)
    acked_total = sum(w.count for w in writers)
    record_fault("kill9-cloudcore", ROUNDS, acked_total, acked_total - len(mismatches),
                 duplicated)
    assert mismatches == []
    assert duplicated == 0
