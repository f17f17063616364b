"""KubeEdge's router kinds are accepted unchanged and bad ones are named precisely."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

import protocol.kinds  # noqa: F401
from protocol.errors import InvalidObject
from protocol.resources import validate_object
from tests.harness import kubeedge_crds_dir

SAMPLES = kubeedge_crds_dir()

REST_TO_EVENTBUS = """
apiVersion: rules.kubeedge.io/v1
kind: Rule
metadata: {name: my-rule, labels: {description: restToEventbus}}
spec:
  source: "my-rest"
  sourceResource: {"path": "/test"}
  target: "my-eventbus"
  targetResource: {"topic": "test"}
"""

SERVICEBUS_ENDPOINT = """
apiVersion: rules.kubeedge.io/v1
kind: RuleEndpoint
metadata: {name: my-servicebus}
spec:
  ruleEndpointType: "servicebus"
  properties: {"service_port": "6666"}
"""


@pytest.mark.parametrize("text", [REST_TO_EVENTBUS, SERVICEBUS_ENDPOINT])
def test_router_manifests_are_accepted_unchanged(text: str) -> None:
    obj = yaml.safe_load(text)
    _, out = validate_object(obj)
    assert out["spec"] == obj["spec"]


def test_kubeedge_router_samples_apply_unchanged() -> None:
    # The samples ship in the shared reference of this workspace (and CI); elsewhere
    # the inline copies above cover the same shapes.
    if not SAMPLES.exists():
        pytest.skip("shared/reference/kubeedge-crds is not present outside the workspace")
    samples = sorted(SAMPLES.glob("rule*.yaml"))
    assert len(samples) == 6
    for path in samples:
        obj = yaml.safe_load(path.read_text())
        _, out = validate_object(obj)
        assert out["spec"] == obj["spec"], path.name


@pytest.mark.parametrize(("patch", "field"), [
    ({"spec": {"ruleEndpointType": "kafka"}}, "spec.ruleEndpointType"),
    ({"spec": {"ruleEndpointType": "rest", "properties": {"port": 8080}}},
     "spec.properties.port"),
    ({"spec": {"ruleEndpointType": "rest", "extra": 1}}, "spec.extra"),
    ({"spec": {}}, "spec.ruleEndpointType"),
])
def test_bad_rule_endpoints_name_the_field(patch: dict[str, Any], field: str) -> None:
    obj = {"apiVersion": "rules.kubeedge.io/v1", "kind": "RuleEndpoint",
           "metadata": {"name": "x"}, **patch}
    with pytest.raises(InvalidObject) as info:
        validate_object(obj)
    assert info.value.field == field


def test_a_rule_needs_all_four_fields() -> None:
    obj = yaml.safe_load(REST_TO_EVENTBUS)
    del obj["spec"]["targetResource"]
    with pytest.raises(InvalidObject) as info:
        validate_object(obj)
    assert info.value.field == "spec.targetResource"
