"""kill -9 of edgecore at a random point of a stream of twin updates from a device app,
ROUNDS times: the latest acknowledged reported value reaches the cloud's Device status
after the restart, a desired value set in the cloud while the edge was dead reaches the
edge's twin, and the edge's sqlite files pass their integrity check.

The device app sends one update at a time and counts it acknowledged only when the
edge's ``/result`` says so (after the twin store committed it); at the kill at most one
update is in flight, so the cloud must end on the last acknowledged value or on that
one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import pytest

from tests.faults.support import ROUNDS, TwinApp, acknowledged, assert_intact, schedule
from tests.harness import Cloud, Edge, device, device_model, reported, wait_until
from tests.reliability import record_fault

pytestmark = [pytest.mark.system, pytest.mark.slow]

NAME = "thermo"


@dataclass
class Stream:
    acked: str | None = None
    in_flight: str | None = None
    count: int = 0


def _send_until_refused(app: TwinApp, stream: Stream, round_no: int, stop: threading.Event,
                        ) -> None:
    step = 0
    while not stop.is_set():
        value = str(round_no * 100_000 + step)
        step += 1
        stream.in_flight = value
        result = app.update(f"r{round_no}-{step}", {"temperature": value}, timeout=3)
        if not acknowledged(result):
            return  # the edge is gone (or refused): not acknowledged
        stream.acked, stream.in_flight = value, None
        stream.count += 1


def _twin_value(app: TwinApp, side: str) -> str:
    twin = app.get(f"get-{time.monotonic_ns()}")
    return str(twin["temperature"][side]["value"])


def _twin_is(app: TwinApp, side: str, value: str) -> bool:
    return _twin_value(app, side) == value


def _resyncs(edge: Edge) -> int:
    return edge.log().count("resync with the cloud")


def test_kill9_edgecore_during_twin_updates_keeps_every_acknowledged_value(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
) -> None:
    rng = schedule("kill9-edgecore")
    cloud = cloud_factory().start()
    edge = edge_factory(cloud, "edge-a")
    assert edge.join(cloud.join_token()).returncode == 0
    edge.start()
    assert cloud.apply(device_model()).status_code in (200, 201)
    assert cloud.apply(device(NAME, "edge-a", desired="0")).status_code in (200, 201)
    wait_until(lambda: edge.cached_one("Device", NAME), what="the device on the edge")

    stream = Stream()
    mismatches: list[str] = []
    desired_acked = 0
    for round_no in range(ROUNDS):
        app = TwinApp(edge.mqtt_port, "default", NAME, client_id=f"app-{round_no}")
        stop = threading.Event()
        before = stream.count
        sender = threading.Thread(target=_send_until_refused,
                                  args=(app, stream, round_no, stop))
        sender.start()
        try:
            wait_until(lambda: stream.count >= before + 10, 20,  # noqa: B023
                       what="acknowledged twin updates")
            time.sleep(rng.uniform(0.0, 1.5))  # where the kill falls: the fault schedule
            edge.kill9()
            sender.join(15)
            assert not sender.is_alive(), "the device app did not notice edgecore dying"
        finally:
            stop.set()
            app.close()
        assert_intact(edge.dir)

        # While the edge is dead the cloud changes the desired value.
        desired = str(1000 + round_no)
        assert cloud.apply(device(NAME, "edge-a", desired=desired)).status_code == 200
        desired_acked += 1

        resyncs = _resyncs(edge)
        edge.start(wait_connected=False)
        edge.wait_synced(after=resyncs)
        allowed = {stream.acked, stream.in_flight} - {None}
        try:
            wait_until(lambda: reported(cloud, NAME, "temperature") in allowed,  # noqa: B023
                       20, what=f"the cloud to report one of {allowed}")
        except AssertionError as exc:
            mismatches.append(f"round {round_no}: {exc}; holds "
                              f"{reported(cloud, NAME, 'temperature')}")
            continue
        held = reported(cloud, NAME, "temperature")
        stream.acked, stream.in_flight = held, None
        probe = TwinApp(edge.mqtt_port, "default", NAME, client_id=f"probe-{round_no}")
        try:
            # The edge agrees with the cloud, and gets the desired value set while it was
            # dead.
            assert _twin_value(probe, "actual") == held
            wait_until(partial(_twin_is, probe, "expected", desired), 20,
                       what=f"desired {desired} in the edge's twin")
        except AssertionError as exc:
            mismatches.append(f"round {round_no}: {exc}")
        finally:
            probe.close()

    assert edge.stop() == 0
    assert_intact(edge.dir)
    acked_total = stream.count + desired_acked
    record_fault("kill9-edgecore", ROUNDS, acked_total, acked_total - len(mismatches), 0)
    assert mismatches == []
