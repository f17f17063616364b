"""The reliability report adds up what the fault and fuzz tests recorded, and says
plainly when anything was lost or crashed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts" / "bench"))

import reliability_report

from tests import reliability


def render(figures: reliability_report.Figures) -> str:
    return reliability_report.render(
        figures, command="scripts/bench/reliability --quick", when="now", seed=1, rounds=2,
        examples=100, tests_passed=5, tests_failed=0, seconds=12.0, machine="2 CPUs")


def test_recorded_lines_are_summed_per_kind_and_interface(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "figures.jsonl"
    monkeypatch.setenv("EDGEFLEET_RELIABILITY_OUT", str(out))
    reliability.record_fault("kill -9 cloudcore", injected=3, acknowledged=120, found=120)
    reliability.record_fault("kill -9 cloudcore", injected=2, acknowledged=80, found=79)
    reliability.record_fuzz("envelope decoder", tried=500, crashes=0)
    reliability.record_fuzz("envelope decoder", tried=250, crashes=0)

    figures = reliability_report.collect(out.read_text().splitlines())
    kill = figures.faults["kill -9 cloudcore"]
    assert (kill.injected, kill.acknowledged, kill.found, kill.lost) == (5, 200, 199, 1)
    assert figures.fuzz["envelope decoder"].tried == 750
    assert figures.lost == 1 and figures.crashes == 0

    text = render(figures)
    assert "| kill -9 cloudcore | 5 | 200 | 199 | 1 | 0 |" in text
    assert "| envelope decoder | 750 | 0 |" in text
    assert "**Lost acknowledged changes: 1. Duplicated: 0. Crashes: 0.**" in text


def test_nothing_is_written_outside_a_reliability_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEFLEET_RELIABILITY_OUT", raising=False)
    monkeypatch.chdir(tmp_path)
    reliability.record_fuzz("api", tried=1, crashes=0)
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_record_is_an_error_not_a_silent_gap() -> None:
    with pytest.raises(ValueError, match="unknown suite"):
        reliability_report.collect([json.dumps({"suite": "other"})])
