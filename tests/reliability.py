"""Figures for docs/reliability.md, recorded by the fault and fuzz tests as they run.

The tests are the single source of truth: ``scripts/bench/reliability`` runs them with
``EDGEFLEET_RELIABILITY_OUT`` pointing at a file and builds the report from the lines
they append; without that variable (a plain ``scripts/test`` run) nothing is written.

Each line is one JSON object, one of two shapes:

- ``{"suite": "fuzz", "interface": ..., "tried": N, "crashes": N}`` — bad inputs sent to
  one interface and how many of them crashed (or hung) the receiver.
- ``{"suite": "fault", "kind": ..., "injected": N, "acknowledged": N, "found": N,
  "lost": N, "duplicated": N}`` — faults injected of one kind, changes acknowledged to
  the writer, changes found afterwards, and the difference.

The fixed seed and the round count come from the environment too, so the CI run (short)
and the reliability script (long) execute the same code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

SEED = int(os.environ.get("EDGEFLEET_FAULT_SEED", "20261126"))
"""The one seed every randomised fault schedule derives from: a failure is repeatable."""

ROUNDS = int(os.environ.get("EDGEFLEET_FAULT_ROUNDS", "3"))
"""Rounds per fault kind: 3 in CI, more from scripts/bench/reliability."""


def _append(line: dict[str, object]) -> None:
    out = os.environ.get("EDGEFLEET_RELIABILITY_OUT")
    if not out:
        return
    with Path(out).open("a", encoding="utf-8") as f:
        f.write(json.dumps(line, sort_keys=True) + "\n")


def record_fuzz(interface: str, tried: int, crashes: int) -> None:
    """Say that ``tried`` bad inputs went to ``interface`` and ``crashes`` of them broke it."""
    _append({"suite": "fuzz", "interface": interface, "tried": tried, "crashes": crashes})


def record_fault(kind: str, injected: int, acknowledged: int, found: int,
                 duplicated: int = 0) -> None:
    """Say that ``injected`` faults of ``kind`` ran over ``acknowledged`` writes, of which
    ``found`` were there afterwards (``lost`` = acknowledged - found, never negative)."""
    _append({"suite": "fault", "kind": kind, "injected": injected,
             "acknowledged": acknowledged, "found": found,
             "lost": max(0, acknowledged - found), "duplicated": duplicated})
