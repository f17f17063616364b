"""Percentiles and the printed report of the fan-out benchmark (pure)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = p / 100 * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True)
class Dist:
    """A latency distribution in seconds."""

    n: int
    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Dist:
        return cls(len(values), percentile(values, 50), percentile(values, 99),
                   max(values) if values else math.nan)

    @classmethod
    def from_dict(cls, d: dict[str, float]) -> Dist:
        return cls(int(d["n"]), d["p50_s"], d["p99_s"], d["max_s"])

    def ms(self) -> str:
        return f"p50 {self.p50 * 1e3:,.0f} / p99 {self.p99 * 1e3:,.0f} / max {self.max * 1e3:,.0f}"

    def as_dict(self) -> dict[str, float]:
        return {"n": self.n, "p50_s": self.p50, "p99_s": self.p99, "max_s": self.max}


def median_dist(rounds: Sequence[Dist]) -> Dist:
    """The round whose p99 is the median one (rounds are whole broadcasts)."""
    ordered = sorted(rounds, key=lambda d: d.p99)
    return ordered[(len(ordered) - 1) // 2]


def ratio(a: float, b: float) -> str:
    if not b or math.isnan(a) or math.isnan(b):
        return "-"
    return f"{a / b:.1f}x"


def mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.1f} MB"


def kb(nbytes: float) -> str:
    return f"{nbytes / 1024:,.1f} KB"


def cpus(u: dict[str, float]) -> str:
    return (f"cloudcore {u['cloud_cpus']:.2f}, clients {u['client_cpus']:.2f}, "
            f"others {u['other_cpus']:.2f} CPUs")


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)), line]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def render(r: dict[str, Any]) -> str:
    """The human-readable report from the results dict the benchmark builds."""
    n = r["nodes"]
    e, raw, storm = r["edgefleet"], r["raw"], r["storm"]
    fan, per = Dist.from_dict(e["fanout"]), Dist.from_dict(e["per_node_ack"])
    bcast = Dist.from_dict(raw["broadcast"])
    lines = [
        f"Fan-out benchmark: {n:,} simulated edge nodes, real mTLS websockets, one cloudcore",
        f"machine: {r['machine']['cpus']} CPUs, Python {r['machine']['python']}, "
        f"{r['machine']['platform']}; {r['layout']}",
        f"other processes on the machine during the run: {r['other_load']['mean_cpus']:.2f} "
        f"CPUs on average, {r['other_load']['worst_cpus']:.2f} in the busiest half second",
        "",
        table([
            ["mTLS connects, all N (100 in flight)",
             f"{e['connect_rate']:,.0f} conn/s (to synced)",
             f"{raw['connect_rate']:,.0f} conn/s", ratio(raw["connect_rate"], e["connect_rate"])],
            ["server RSS idle", mb(e["rss_idle"]), mb(raw["rss_idle"]), ""],
            ["server RSS, N connected", mb(e["rss_connected"]), mb(raw["rss_connected"]), ""],
            ["server RSS per connected node", kb(e["rss_per_node"]), kb(raw["rss_per_node"]),
             ratio(e["rss_per_node"], raw["rss_per_node"])],
            ["reconnect storm: kill -9 -> all N back",
             f"{storm['resynced_s']:.1f} s (resynced)",
             f"{raw['storm_s']:.1f} s (reconnected)", ratio(storm["resynced_s"], raw["storm_s"])],
            ["  server restart / sessions opened / failed handshakes",
             f"{storm['restart_s']:.1f} s / {storm['hub_sessions']:,} / "
             f"{storm['hub_handshake_failures']:,}",
             f"{raw['storm_restart_s']:.1f} s / {raw['storm_sessions']:,} / "
             f"{raw['storm_handshake_failures']:,}", ""],
            ["one message to all N: send -> edge receive, ms",
             Dist.from_dict(e["fanout_recv"]).ms(), bcast.ms(),
             ratio(e["fanout_recv"]["p99_s"], bcast.p99) + " (p99)"],
        ], ["", "edgefleet (cloudcore hub)", "raw websockets broadcast", "edgefleet/raw"]),
        "",
        "  edgefleet 'one message to all N' = one PUT of the DeviceModel every node holds,",
        "  timed from the PUT's start; raw = websockets.broadcast() of a 1 KB frame, timed",
        f"  from the broadcast call. Median of {raw['rounds']} raw and {e['fanout_rounds']} "
        "edgefleet rounds (by p99).",
        "",
        table([
            ["joins (POST /join, CSR signed, Node created)", f"{e['join_rate']:,.0f} /s"],
            ["held with heartbeats (15 s +-10 %)",
             f"{e['held']:,}/{n:,} connected for {e['hold_seconds']:.0f} s, "
             f"{e['hold_drops']} drops, {e['ready']:,} Ready=True"],
            ["CPUs used while holding", cpus(e["hold_usage"])],
            ["per-node change: PUT start -> edge ack, ms",
             f"{per.ms()} ({per.n:,} acked of {n:,})"],
            ["per-node change: PUT return -> edge receive, ms",
             Dist.from_dict(e["per_node_recv"]).ms()],
            ["per-node changes: throughput",
             f"{e['per_node_rate']:,.0f} changes/s acked ({e['apply_concurrency']} PUTs in "
             "flight)"],
            ["CPUs used during the per-node changes", cpus(e["per_node_usage"])],
            ["one change to all N: PUT start -> last edge ack",
             f"{fan.max * 1e3:,.0f} ms ({fan.ms()} ms)"],
            ["server RSS after the changes", mb(e["rss_after_changes"])],
            ["storm: kill -9 -> cloudcore serving again", f"{storm['restart_s']:.1f} s"],
            ["storm: kill -9 -> every node resynced",
             f"{storm['resynced_s']:.1f} s ({storm['resynced']:,}/{n:,}; per node "
             f"p50 {storm['per_node']['p50_s']:.1f} s, p99 {storm['per_node']['p99_s']:.1f} s)"],
            ["storm: connection attempts",
             f"{storm['reconnect_failures']:,} failed on the simulators; the hub opened "
             f"{storm['hub_sessions']:,} sessions for {n:,} nodes and failed "
             f"{storm['hub_handshake_failures']:,} websocket handshakes"],
            ["storm: changes made just before the kill",
             f"{storm['updates']} updates, {storm['deletes']} deletes"],
            ["storm: lost (edge holdings != store)",
             f"{storm['lost']} nodes; store vs last acknowledged writes: "
             f"{storm['store_mismatch']} differences"],
            ["storm: peak cloudcore RSS", mb(storm["rss_peak"])],
            ["CPUs used from the kill to the last resync", cpus(storm["usage"])],
        ], ["edgefleet", "measured"]),
        "",
        table(verdicts(r), ["requirement", "target", "measured", "verdict"]),
    ]
    return "\n".join(lines)


def verdicts(r: dict[str, Any]) -> list[list[str]]:
    n = r["nodes"]
    e, storm = r["edgefleet"], r["storm"]
    p99 = e["per_node_ack"]["p99_s"]
    held_ok = e["held"] == n and e["hold_drops"] == 0 and e["ready"] == n
    storm_ok = storm["resynced"] == n and storm["lost"] == 0 and storm["store_mismatch"] == 0
    ack_ok = p99 <= 2.0 and e["per_node_ack"]["n"] == n
    return [
        ["nodes held with heartbeats", "2,000", f"{e['held']:,} of {n:,}",
         _verdict(held_ok, n, 2000)],
        ["apply -> edge ack p99 (one change per node)", "<= 2 s", f"{p99:.2f} s",
         _verdict(ack_ok, n, 2000)],
        ["reconnect storm resynced, nothing lost", "all, 0 lost",
         f"{storm['resynced']:,}/{n:,}, {storm['lost']} lost", _verdict(storm_ok, n, 2000)],
        ["goal: 5,000 nodes", "5,000", f"{e['held']:,}", _verdict(held_ok, n, 5000)],
        ["goal: RSS per node", "<= 100 KB", kb(e["rss_per_node"]),
         _verdict(e["rss_per_node"] <= 100 * 1024, n, 0)],
    ]


def _verdict(ok: bool, n: int, needs: int) -> str:
    if n < needs:
        return f"{'ok' if ok else 'MISS'} at N={n:,} (needs a run with N >= {needs:,})"
    return "PASS" if ok else "MISS"
