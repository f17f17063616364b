from __future__ import annotations

import pytest

from efctl.commands import CommandError
from efctl.twin import parse_assignments, with_desired
from tests.harness import device


def test_assignments_parse_and_reject_bad_items() -> None:
    assert parse_assignments(["setpoint=25", "mode=eco"]) == {"setpoint": "25", "mode": "eco"}
    for bad in (["setpoint"], ["=25"], ["setpoint="], []):
        with pytest.raises(CommandError):
            parse_assignments(bad)


def test_only_the_named_desired_values_change() -> None:
    dev = device("t", "edge-a", desired="21")
    dev["spec"]["properties"].append({"name": "other", "desired": {"value": "x"}})
    out = with_desired(dev, {"temperature": "25"})
    assert out["spec"]["properties"][0]["desired"] == {"value": "25"}
    assert out["spec"]["properties"][1]["desired"] == {"value": "x"}
    assert dev["spec"]["properties"][0]["desired"] == {"value": "21"}  # input untouched


def test_an_unknown_property_is_named_with_the_ones_that_exist() -> None:
    with pytest.raises(CommandError, match=r"no property nope .*temperature"):
        with_desired(device("t", "edge-a"), {"nope": "1"})
