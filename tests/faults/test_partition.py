"""A network partition and a half-open link between edgecore and cloudcore, made by a
loopback TCP proxy (tests.faults.tcpproxy) on the edge's websocket, ROUNDS times each,
in the middle of two streams of acknowledged writes:

- the cloud side sets the Device's desired temperature through the API (acknowledged by
  a 2xx), and
- a device app on the edge's own broker reports temperatures over KubeEdge's twin topics
  (acknowledged by the edge's ``/result``).

A *drop* closes both sockets (each side sees the connection end: a clean partition) and
refuses new ones; a *stall* keeps both sockets open and forwards nothing, so neither side
gets a FIN or an RST and only heartbeats can tell.  Each time both sides must notice
within their configured bounds (the cloud: Ready leaves True after the grace period; the
edge: it gives up the link after its keepalive timeout), and after the heal the edge
reconnects and resyncs: the cloud then reports the last temperature the device app got
acknowledged, the edge's cache holds the last desired value the API acknowledged, and
neither side went back to an older value on the way.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import yaml

from tests.faults.support import ROUNDS, TwinApp, acknowledged, schedule
from tests.faults.tcpproxy import TcpProxy
from tests.harness import (
    FAST_LINK,
    Cloud,
    Edge,
    device,
    device_model,
    node_ready,
    reported,
    wait_until,
)
from tests.reliability import record_fault

pytestmark = [pytest.mark.system, pytest.mark.slow]

NODE, NAME = "edge-a", "thermo"
PATH = f"/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices/{NAME}"

GRACE = 3.0
"""The cloud's ``nodes.gracePeriodSeconds``: silent this long, a node is not Ready."""
CLOUD_BOUND = GRACE + min(1.0, GRACE / 4)
"""Ready leaves True within the grace period plus one lifecycle check."""
HEARTBEAT = float(FAST_LINK["heartbeatSeconds"])
CLOSE_TIMEOUT = 5.0
"""edgecore's websocket close timeout: a close frame cannot cross a stalled link."""
EDGE_BOUND = HEARTBEAT + min(3 * HEARTBEAT, 20.0) + CLOSE_TIMEOUT
"""The edge pings every heartbeat, gives the pong 3 heartbeats (at most 20 s), then
waits the close timeout for a closing handshake before it drops the socket."""
SLACK = 3.0
"""For a machine loaded by other tests: a detection this late still counts as bounded."""

LINK_LOST = ("link to wss://", "cannot reach the cloud")


@dataclass
class Counter:
    """The one sequence both writers draw values from: no value is ever written twice."""

    value: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self) -> int:
        with self.lock:
            self.value += 1
            return self.value


@dataclass
class Stream:
    """What one writer got acknowledged."""

    acked: str | None = None
    count: int = 0
    unsure: set[str] = field(default_factory=set)  # sent, answer lost: may or may not be in

    def allowed(self) -> set[str]:
        """What the other side may end on: the last acknowledged value, or one sent after
        it whose answer was lost; never an older one."""
        last = int(self.acked or 0)
        return {v for v in {self.acked, *self.unsure} if v is not None and int(v) >= last}


def _write_desired(cloud: Cloud, seq: Counter, stream: Stream, stop: threading.Event) -> None:
    with cloud.api() as api:
        while not stop.is_set():
            value = str(seq.next())
            try:
                r = api.put(PATH, json=device(NAME, NODE, desired=value))
            except httpx.HTTPError:
                stream.unsure.add(value)
                continue
            assert r.status_code == 200, r.text  # the API is not behind the proxy
            stream.acked = value
            stream.count += 1
            stop.wait(0.05)  # pacing, not synchronisation


def _report_actual(app: TwinApp, seq: Counter, stream: Stream, stop: threading.Event) -> None:
    while not stop.is_set():
        value = str(seq.next())
        result = app.update(f"u{value}", {"temperature": value})
        if not acknowledged(result):
            stream.unsure.add(value)
            continue
        stream.acked = value
        stream.count += 1
        stop.wait(0.05)


def _watch_reported(cloud: Cloud, seen: list[int], stop: threading.Event) -> None:
    """Every reported temperature the cloud shows, in order (for the regression check)."""
    while not stop.wait(0.2):
        try:
            value = reported(cloud, NAME, "temperature")
        except httpx.HTTPError:
            continue
        if value and (not seen or seen[-1] != int(value)):
            seen.append(int(value))


def _edge_desired(edge: Edge) -> str | None:
    cached = edge.cached_one("Device", NAME) or {}
    props = (cached.get("spec") or {}).get("properties") or [{}]
    return (props[0].get("desired") or {}).get("value")


def _link_failures(edge: Edge) -> int:
    return sum(1 for line in edge.log().splitlines()
               if any(mark in line for mark in LINK_LOST))


def _resyncs(edge: Edge) -> int:
    return edge.log().count("resync with the cloud")


def _regressions(values: list[int]) -> list[tuple[int, int]]:
    return [(a, b) for a, b in itertools.pairwise(values) if b < a]


def _edge_reapplied(edge: Edge) -> list[str]:
    """Versions the edge's cache applied twice, or after a newer one."""
    last: dict[str, int] = {}
    bad = []
    for op, key, rv in edge.applied():
        if rv <= last.get(key, 0):
            bad.append(f"{op} {key} rv={rv} after rv={last[key]}")
        last[key] = rv
    return bad


@dataclass
class Tally:
    injected: int = 0
    acknowledged: int = 0
    lost: int = 0
    duplicated: int = 0
    timings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _noticed(since: float, checks: dict[str, Callable[[], bool]], timeout: float,
             label: str) -> dict[str, float]:
    """Seconds from ``since`` until each check first held, all polled together."""
    took: dict[str, float] = {}

    def all_seen() -> bool:
        for name, check in checks.items():
            if name not in took and check():
                took[name] = time.monotonic() - since
        return len(took) == len(checks)

    try:
        wait_until(all_seen, timeout, what=f"{label}: both sides to notice")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; noticed so far: {took}") from None
    return took


def _through_proxy(edge: Edge, proxy: TcpProxy) -> None:
    """Point the joined edge's link at the proxy instead of the cloud's hub port."""
    path = edge.dir / "edgecore.yaml"
    cfg: dict[str, Any] = yaml.safe_load(path.read_text())
    cfg["hub"] = f"wss://127.0.0.1:{proxy.port}"
    path.write_text(yaml.safe_dump(cfg))


def test_partition_and_half_open_link_are_detected_and_healed_by_resync(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
) -> None:
    rng = schedule("partition")
    cloud = cloud_factory({"nodes": {"gracePeriodSeconds": GRACE}}).start()
    edge = edge_factory(cloud, NODE)
    assert edge.join(cloud.join_token()).returncode == 0
    seq = Counter()
    tallies = {"drop": Tally(), "stall": Tally()}
    with TcpProxy(cloud.hub_port) as proxy:
        _through_proxy(edge, proxy)
        edge.start()
        assert proxy.accepted >= 1, "the edge did not connect through the proxy"
        assert cloud.apply(device_model()).status_code in (200, 201)
        assert cloud.apply(device(NAME, NODE, desired="0")).status_code in (200, 201)
        wait_until(lambda: edge.cached_one("Device", NAME), what="the device on the edge")
        wait_until(lambda: node_ready(cloud, NODE) == "True", 15, what="Ready=True")
        app = TwinApp(edge.mqtt_port, "default", NAME, client_id="partition-app")
        try:
            for round_no in range(ROUNDS):
                for kind in ("drop", "stall"):
                    _one_fault(kind, round_no, rng.uniform(0.0, 1.0), cloud, edge, proxy,
                               app, seq, tallies[kind])
        finally:
            app.close()
    for bad in _edge_reapplied(edge):
        tallies["stall"].duplicated += 1
        tallies["stall"].problems.append(f"the edge re-applied {bad}")
    for kind, tally in tallies.items():
        record_fault(f"partition-{kind}", tally.injected, tally.acknowledged,
                     tally.acknowledged - tally.lost, tally.duplicated)
    print("\n".join(line for t in tallies.values() for line in t.timings))
    timings = [line for t in tallies.values() for line in t.timings]
    problems = [line for t in tallies.values() for line in t.problems]
    assert problems == [], "\n".join(problems + timings)


def _one_fault(kind: str, round_no: int, delay: float, cloud: Cloud, edge: Edge,
               proxy: TcpProxy, app: TwinApp, seq: Counter, tally: Tally) -> None:
    desired, actual = Stream(), Stream()
    seen: list[int] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_write_desired, args=(cloud, seq, desired, stop)),
               threading.Thread(target=_report_actual, args=(app, seq, actual, stop)),
               threading.Thread(target=_watch_reported, args=(cloud, seen, stop))]
    for thread in threads:
        thread.start()
    label = f"round {round_no} {kind}"
    try:
        wait_until(lambda: desired.count >= 5 and actual.count >= 5, 30,
                   what=f"{label}: writes acknowledged on both sides before the fault")
        time.sleep(delay)  # where the fault falls in the streams: the fault schedule
        failures, resyncs = _link_failures(edge), _resyncs(edge)
        before = (desired.count, actual.count)
        injected_at = time.monotonic()
        proxy.drop() if kind == "drop" else proxy.stall()
        tally.injected += 1

        # Both sides notice, each within its own bound.
        noticed = _noticed(injected_at, {
            "edge": lambda: _link_failures(edge) > failures,
            "cloud": lambda: node_ready(cloud, NODE) != "True",
        }, max(EDGE_BOUND, CLOUD_BOUND) + 20, label)
        edge_took, cloud_took = noticed["edge"], noticed["cloud"]
        tally.timings.append(f"{label}: the edge noticed in {edge_took:.1f} s, the cloud "
                             f"in {cloud_took:.1f} s")
        if edge_took > EDGE_BOUND + SLACK or cloud_took > CLOUD_BOUND + SLACK:
            tally.problems.append(f"{label}: detected late (edge {edge_took:.1f} s, "
                                    f"cloud {cloud_took:.1f} s)")
        # Both sides kept taking writes while cut off from each other.
        wait_until(lambda: desired.count > before[0] and actual.count > before[1], 20,
                   what=f"{label}: writes acknowledged during the fault")

        proxy.heal()
        edge.wait_synced(after=resyncs)
        wait_until(lambda: node_ready(cloud, NODE) == "True", 15,
                   what=f"{label}: Ready=True after the heal")
        healed = (desired.count, actual.count)
        wait_until(lambda: desired.count >= healed[0] + 5 and actual.count >= healed[1] + 5,
                   30, what=f"{label}: writes acknowledged after the heal")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not any(t.is_alive() for t in threads), f"{label}: a writer hung"
    tally.acknowledged += desired.count + actual.count

    # The last acknowledged value of each side is on the other (a write whose answer was
    # lost may have landed after it, and may be what is held: never an older one).
    want_actual, want_desired = actual.allowed(), desired.allowed()
    try:
        wait_until(lambda: reported(cloud, NAME, "temperature") in want_actual, 20,
                   what=f"{label}: the cloud to report one of {sorted(want_actual)}")
    except AssertionError as exc:
        tally.lost += 1
        tally.problems.append(f"{label}: lost on the way up: {exc}; the cloud holds "
                                f"{reported(cloud, NAME, 'temperature')}")
    try:
        wait_until(lambda: _edge_desired(edge) in want_desired, 20,
                   what=f"{label}: the edge's cache to hold desired one of {sorted(want_desired)}")
    except AssertionError as exc:
        tally.lost += 1
        tally.problems.append(f"{label}: lost on the way down: {exc}; the edge holds "
                                f"{_edge_desired(edge)}")
    went_back = _regressions(seen)
    if went_back:
        tally.duplicated += len(went_back)
        tally.problems.append(f"{label}: the cloud's reported value went back: {went_back}")
