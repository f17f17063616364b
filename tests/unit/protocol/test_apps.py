"""The App kind: a full manifest is accepted as written; a bad one is refused naming the
field, before anything is stored or scheduled."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

import protocol.kinds  # noqa: F401  (registers every kind)
from efctl.render import table
from protocol.errors import InvalidObject
from protocol.kinds.apps import APP
from protocol.resources import REGISTRY, validate_object, validate_status

SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

FULL = f"""
apiVersion: apps.edgefleet.io/v1alpha1
kind: App
metadata: {{name: thermo-mapper, namespace: plant-a, labels: {{team: vision}}}}
spec:
  command: [python3, mapper.py]
  args: ["--port", "/dev/ttyUSB0"]
  env: [{{name: LOG_LEVEL, value: debug}}, {{name: EMPTY}}]
  workingDir: work
  artifacts:
    - {{name: mapper.py, sha256: {SHA}}}
    - {{name: model.bin, sha256: {SHA}, path: models/model.bin}}
  config:
    - {{name: settings, path: conf/settings.yaml, content: "rate: 5\\n"}}
  resources:
    requests: {{cpu: 250m, memory: 64Mi}}
    limits: {{cpu: "1", memory: 128Mi}}
  replicas: 3
  restartPolicy: OnFailure
  queue: team-vision
  priority: 10
  minAvailable: 2
  nodeSelector: {{edgefleet.io/zone: hall-1}}
  schedulerName: edgefleet-scheduler
"""


def app(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "apps.edgefleet.io/v1alpha1", "kind": "App",
            "metadata": {"name": "a"}, "spec": {"command": ["run"], **spec}}


def refused(obj: dict[str, Any]) -> InvalidObject:
    with pytest.raises(InvalidObject) as err:
        validate_object(obj)
    return err.value


def test_full_manifest_is_accepted_as_written() -> None:
    obj = yaml.safe_load(FULL)
    info, out = validate_object(copy.deepcopy(obj))
    assert info is APP
    assert out["spec"] == obj["spec"]
    assert out["metadata"]["namespace"] == "plant-a"


def test_minimal_app_needs_only_a_command_and_lands_in_default_namespace() -> None:
    _, out = validate_object(app())
    assert out["metadata"]["namespace"] == "default"
    assert out["spec"] == {"command": ["run"]}  # defaults are the scheduler's, not stored


def test_app_is_served_under_its_group_and_resolves_by_name() -> None:
    assert APP.api_version == "apps.edgefleet.io/v1alpha1"
    assert APP.namespaced
    assert APP.collection_path("ns") == "/apis/apps.edgefleet.io/v1alpha1/namespaces/ns/apps"
    assert REGISTRY.resolve("app") is APP and REGISTRY.resolve("apps") is APP


@pytest.mark.parametrize(("spec", "field", "says"), [
    ({"command": []}, "spec.command", "at least 1"),
    ({"command": [""]}, "spec.command[0]", "must not be empty"),
    ({"replicas": -1}, "spec.replicas", "greater than or equal to 0"),
    ({"replicas": "3"}, "spec.replicas", "valid integer"),
    ({"replicas": 2, "minAvailable": 3}, "spec.minAvailable", "must not exceed replicas (2)"),
    ({"minAvailable": 2}, "spec.minAvailable", "must not exceed replicas (1)"),
    ({"restartPolicy": "Sometimes"}, "spec.restartPolicy", "'Always', 'OnFailure' or 'Never'"),
    ({"queue": "Team_A"}, "spec.queue", "not a valid name"),
    ({"priority": 2**31}, "spec.priority", "less than or equal"),
    ({"resources": {"requests": {"cpu": "2 cores"}}}, "spec.resources.requests.cpu",
     "not a valid quantity"),
    ({"resources": {"limits": {"memory": "-1Gi"}}}, "spec.resources.limits.memory",
     "must not be negative"),
    ({"resources": {"requests": {"gpu": "1"}}}, "spec.resources.requests.gpu", "unknown field"),
    ({"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "500m"}}},
     "spec.resources.requests.cpu", "exceeds the limit 500m"),
    ({"env": [{"name": "1BAD"}]}, "spec.env[0].name", "not a valid environment variable"),
    ({"env": [{"name": "A"}, {"name": "A", "value": "x"}]}, "spec.env[1].name", "duplicate"),
    ({"artifacts": [{"name": "x", "sha256": "abc"}]}, "spec.artifacts[0].sha256",
     "64 lower-case hex"),
    ({"artifacts": [{"name": "x", "sha256": SHA, "path": "../../etc/passwd"}]},
     "spec.artifacts[0].path", "relative path inside the working directory"),
    ({"artifacts": [{"name": "/bin/sh", "sha256": SHA}]}, "spec.artifacts[0].name",
     "relative path"),
    ({"config": [{"name": "c", "path": "/etc/hosts"}]}, "spec.config[0].path", "relative path"),
    ({"config": [{"name": "c", "path": "a"}, {"name": "c", "path": "b"}]},
     "spec.config[1].name", "duplicate config name"),
    ({"artifacts": [{"name": "run.py", "sha256": SHA}],
      "config": [{"name": "c", "path": "./run.py"}]},
     "spec.config[0].path", "already used by spec.artifacts[0].name"),
    ({"nodeSelector": {"zone": "hall 1"}}, "spec.nodeSelector.zone", "not a valid label value"),
    ({"nodeSelector": {"-zone": "a"}}, "spec.nodeSelector.-zone", "not a valid label key"),
    ({"volumes": []}, "spec.volumes", "unknown field"),
])
def test_invalid_apps_name_the_field(spec: dict[str, Any], field: str, says: str) -> None:
    err = refused(app(**spec))
    assert err.field == field
    assert says in err.message


def test_status_holds_one_entry_per_replica() -> None:
    status = {
        "replicas": [
            {"index": 0, "node": "edge-1", "phase": "Running", "restarts": 0,
             "startTime": "2025-01-01T00:00:00Z"},
            {"index": 1, "node": "edge-2", "phase": "CrashLoopBackOff", "restarts": 5,
             "lastExitCode": 1, "reason": "CrashLoopBackOff"},
            {"index": 2, "phase": "Pending", "reason": "Unschedulable",
             "message": "0/5 nodes: 3 insufficient cpu, 2 not ready"},
        ],
        "readyReplicas": 1,
        "conditions": [{"type": "Scheduled", "status": "False", "reason": "Unschedulable"}],
        "message": "0/5 nodes: 3 insufficient cpu, 2 not ready",
    }
    assert validate_status(APP, status) == status


@pytest.mark.parametrize(("status", "field"), [
    ({"replicas": [{"index": 0, "phase": "Sleeping"}]}, "status.replicas[0].phase"),
    ({"replicas": [{"index": -1}]}, "status.replicas[0].index"),
    ({"replicas": [{"index": 0}, {"index": 0}]}, "status.replicas[1].index"),
    ({"replicas": [{"index": 0, "restarts": -1}]}, "status.replicas[0].restarts"),
])
def test_invalid_status_names_the_field(status: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidObject) as err:
        validate_status(APP, status)
    assert err.value.field == field


def test_get_app_shows_ready_and_replicas_and_wide_adds_scheduling() -> None:
    obj = yaml.safe_load(FULL)
    obj["status"] = {"readyReplicas": 2, "message": "0/5 nodes: 3 insufficient cpu"}
    now = datetime(2025, 1, 1, tzinfo=UTC)
    narrow = table(APP, [obj], wide=False, all_namespaces=False, now=now).splitlines()
    assert narrow[0].split() == ["NAME", "READY", "REPLICAS", "AGE"]
    assert narrow[1].split()[:3] == ["thermo-mapper", "2", "3"]
    wide = table(APP, [obj], wide=True, all_namespaces=False, now=now).splitlines()
    assert wide[0].split()[:6] == ["NAME", "READY", "REPLICAS", "QUEUE", "PRIORITY",
                                   "MIN-AVAILABLE"]
    assert "team-vision" in wide[1] and "0/5 nodes: 3 insufficient cpu" in wide[1]
