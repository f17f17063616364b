"""Turns the lines the fault and fuzz tests recorded (tests/reliability.py) into the
tables of docs/reliability.md.  Pure: text in, text out."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class FuzzRow:
    tried: int = 0
    crashes: int = 0


@dataclass
class FaultRow:
    injected: int = 0
    acknowledged: int = 0
    found: int = 0
    lost: int = 0
    duplicated: int = 0


@dataclass
class Figures:
    fuzz: dict[str, FuzzRow] = field(default_factory=lambda: defaultdict(FuzzRow))
    faults: dict[str, FaultRow] = field(default_factory=lambda: defaultdict(FaultRow))

    @property
    def lost(self) -> int:
        return sum(r.lost for r in self.faults.values())

    @property
    def duplicated(self) -> int:
        return sum(r.duplicated for r in self.faults.values())

    @property
    def crashes(self) -> int:
        return sum(r.crashes for r in self.fuzz.values())


def collect(lines: Iterable[str]) -> Figures:
    """Sum the recorded lines per interface and per fault kind (a test that runs in
    several parametrised cases records once per case)."""
    figures = Figures()
    for line in lines:
        if not line.strip():
            continue
        rec = json.loads(line)
        if rec["suite"] == "fuzz":
            row = figures.fuzz[rec["interface"]]
            row.tried += int(rec["tried"])
            row.crashes += int(rec["crashes"])
        elif rec["suite"] == "fault":
            fault = figures.faults[rec["kind"]]
            fault.injected += int(rec["injected"])
            fault.acknowledged += int(rec["acknowledged"])
            fault.found += int(rec["found"])
            fault.lost += int(rec["lost"])
            fault.duplicated += int(rec.get("duplicated", 0))
        else:
            raise ValueError(f"unknown suite {rec['suite']!r} in {line!r}")
    return figures


def render(figures: Figures, *, command: str, when: str, seed: int, rounds: int,
           examples: int, tests_passed: int, tests_failed: int, seconds: float,
           machine: str) -> str:
    out = [
        "# Reliability",
        "",
        "Produced by `scripts/bench/reliability`; do not edit by hand. The same fault and",
        "fuzz tests run in CI on every change, with fewer rounds and examples.",
        "",
        f"- Command: `{command}`",
        f"- Run: {when}, {seconds:.0f} s, on {machine}",
        f"- Seed {seed}, {rounds} rounds per fault kind, up to {examples} examples per "
        "fuzzed property",
        f"- Tests: {tests_passed} passed, {tests_failed} failed",
        f"- **Lost acknowledged changes: {figures.lost}. Duplicated: {figures.duplicated}. "
        f"Crashes: {figures.crashes}.**",
        "",
        "## Faults injected",
        "",
        "| Fault | Injected | Changes acknowledged | Found afterwards | Lost | Duplicated |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind in sorted(figures.faults):
        r = figures.faults[kind]
        out.append(f"| {kind} | {r.injected:,} | {r.acknowledged:,} | {r.found:,} | "
                   f"{r.lost:,} | {r.duplicated:,} |")
    out += [
        "",
        "## Bad input per interface",
        "",
        "| Interface | Bad inputs tried | Crashes |",
        "|---|---:|---:|",
    ]
    for name in sorted(figures.fuzz):
        f = figures.fuzz[name]
        out.append(f"| {name} | {f.tried:,} | {f.crashes:,} |")
    out.append("")
    return "\n".join(out)
