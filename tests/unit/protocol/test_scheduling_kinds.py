"""The Queue kind takes Volcano's field names (reference §5.1) and refuses bad values
naming the field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

import protocol.kinds  # noqa: F401  (registers every kind)
from efctl.render import table
from protocol.errors import InvalidObject
from protocol.kinds.scheduling import QUEUE
from protocol.resources import REGISTRY, validate_object, validate_status

# The reference's §5.1 example, with only the apiVersion changed to ours.
VOLCANO_EXAMPLE = """
apiVersion: scheduling.edgefleet.io/v1alpha1
kind: Queue
metadata: {name: team-vision}
spec:
  weight: 2
  reclaimable: true
  capability: {cpu: "64", memory: 256Gi}
  guarantee: {resource: {cpu: "4", memory: 16Gi}}
"""


def queue(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "scheduling.edgefleet.io/v1alpha1", "kind": "Queue",
            "metadata": {"name": "q"}, "spec": spec}


def test_volcano_queue_is_accepted_as_written() -> None:
    obj = yaml.safe_load(VOLCANO_EXAMPLE)
    info, out = validate_object(obj)
    assert info is QUEUE
    assert out["spec"] == obj["spec"]
    assert "namespace" not in out["metadata"]


def test_queue_is_cluster_scoped_with_a_short_name() -> None:
    assert not QUEUE.namespaced
    assert QUEUE.collection_path(None) == "/apis/scheduling.edgefleet.io/v1alpha1/queues"
    assert REGISTRY.resolve("q") is QUEUE
    obj = queue()
    obj["metadata"]["namespace"] = "ns"
    with pytest.raises(InvalidObject) as err:
        validate_object(obj)
    assert err.value.field == "metadata.namespace"


def test_empty_spec_means_volcano_defaults() -> None:
    validate_object(queue())  # weight 1, no cap, reclaimable, no guarantee


@pytest.mark.parametrize(("spec", "field", "says"), [
    ({"weight": -1}, "spec.weight", "greater than or equal to 1"),
    ({"weight": 0}, "spec.weight", "greater than or equal to 1"),
    ({"weight": 65536}, "spec.weight", "less than or equal to 65535"),
    ({"weight": 1.5}, "spec.weight", "valid integer"),
    ({"reclaimable": "yes"}, "spec.reclaimable", "valid boolean"),
    ({"capability": {"cpu": "lots"}}, "spec.capability.cpu", "not a valid quantity"),
    ({"capability": {"memory": "8GB"}}, "spec.capability.memory", "unknown suffix 'GB'"),
    ({"guarantee": {"resource": {"cpu": "-2"}}}, "spec.guarantee.resource.cpu",
     "must not be negative"),
    ({"guarantee": {"cpu": "2"}}, "spec.guarantee.cpu", "unknown field"),
    ({"capability": {"cpu": "2"}, "guarantee": {"resource": {"cpu": "3"}}},
     "spec.guarantee.resource.cpu", "guarantee 3 exceeds the capability 2"),
    ({"capability": {"memory": "1Gi"}, "guarantee": {"resource": {"memory": "2Gi"}}},
     "spec.guarantee.resource.memory", "exceeds the capability 1Gi"),
    ({"priority": -1}, "spec.priority", "greater than or equal to 0"),
    ({"deserved": {"cpu": "1"}}, "spec.deserved", "unknown field"),
])
def test_invalid_queues_name_the_field(spec: dict[str, Any], field: str, says: str) -> None:
    with pytest.raises(InvalidObject) as err:
        validate_object(queue(**spec))
    assert err.value.field == field
    assert says in err.value.message


def test_guarantee_within_a_capability_in_other_units_is_fine() -> None:
    validate_object(queue(capability={"cpu": "2", "memory": "1Gi"},
                          guarantee={"resource": {"cpu": "2000m", "memory": "1024Mi"}}))


def test_status_and_columns() -> None:
    status = {"allocated": {"cpu": "6", "memory": "48Gi"},
              "deserved": {"cpu": "9", "memory": "52Gi"}, "state": "Open"}
    assert validate_status(QUEUE, status) == status
    with pytest.raises(InvalidObject) as err:
        validate_status(QUEUE, {"state": "Paused"})
    assert err.value.field == "status.state"
    obj = {**yaml.safe_load(VOLCANO_EXAMPLE), "status": status}
    now = datetime(2025, 1, 1, tzinfo=UTC)
    narrow = table(QUEUE, [obj], wide=False, all_namespaces=False, now=now).splitlines()
    assert narrow[0].split() == ["NAME", "WEIGHT", "STATE", "AGE"]
    assert narrow[1].split()[:3] == ["team-vision", "2", "Open"]
    wide = table(QUEUE, [obj], wide=True, all_namespaces=False, now=now)
    assert '{"cpu":"9","memory":"52Gi"}' in wide
