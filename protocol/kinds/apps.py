"""The App kind (``apps.edgefleet.io/v1alpha1``): a workload edgecore runs as supervised
processes on the nodes the scheduler picks.

Spec, in short::

    command: [python3, main.py]          # required; args are appended
    args, env [{name, value}], workingDir
    artifacts: [{name, sha256, path?}]   # fetched from cloudcore, verified before running
    config: [{name, path, content}]      # ConfigMap-like files written into the working dir
    resources: {requests: {cpu, memory}, limits: {cpu, memory}}   # Kubernetes quantities
    replicas: 3                          # default 1
    restartPolicy: Always | OnFailure | Never
    queue: default, priority: 0          # Volcano's queue and job priority
    minAvailable: 3                      # gang: place none unless this many fit
    nodeSelector: {k: v}, schedulerName

Status is written by the apps controller (cloudcore/apps/): one entry per replica
(index, node, phase, restarts, lastExitCode, startTime, reason, message) aggregated from
the App's AppReplica objects - plus an entry without a node for each replica still
waiting for one, with the reason - the ready count, conditions, a message (``0/5 nodes:
3 insufficient cpu``) and ``placement``, the last node-group decision.

Replicas are bound by AppReplica objects (protocol/kinds/appreplicas.py), one per
placed replica, which the edge runs and reports on; the scheduler reads those, never
``status.replicas`` (cloudcore/scheduler/views.py).  ``placement`` is the controller's
memory of Karmada's ResourceBinding: which PropagationPolicy (and generation) decided,
the clusterAffinities term it used (``affinityName``, so that a workload that fell back
to a later term does not move back by itself), and how many replicas each NodeGroup
was given.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

from protocol.errors import InvalidObject
from protocol.kinds.core import ConditionStatus
from protocol.quantity import CpuQuantity, MemoryQuantity, cpu_millis, memory_bytes
from protocol.resources import (
    Column,
    KindInfo,
    check_dns_subdomain,
    check_label_key,
    check_label_value,
    register,
)

GROUP = "apps.edgefleet.io"
VERSION = "v1alpha1"

DEFAULT_QUEUE = "default"
EVICTED_REASON = "Evicted"
"""``status.replicas[].reason`` of a replica that was preempted or reclaimed and is stopping."""
UNSCHEDULABLE_REASON = "Unschedulable"
"""``status.replicas[].reason`` of a replica no node can take (the message says why)."""

Int32 = Annotated[StrictInt, Field(ge=-(2**31), le=2**31 - 1)]
Count = Annotated[StrictInt, Field(ge=0, le=2**31 - 1)]
NonEmpty = Annotated[StrictStr, Field(min_length=1)]

_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_relative_path(value: str, field: str) -> None:
    """Files an App brings along land inside its working directory and nowhere else."""
    path = PurePosixPath(value)
    if (not value or "\x00" in value or "\\" in value or path.is_absolute()
            or ".." in path.parts or str(path) in ("", ".")):
        raise InvalidObject(
            f"{value!r} must be a relative path inside the working directory "
            "(no leading '/', no '..')",
            field=field,
        )


# --- spec --------------------------------------------------------------------------------


class EnvVar(_Strict):
    name: NonEmpty
    value: StrictStr = ""


class AppArtifact(_Strict):
    """A file pushed with ``efctl artifact push``; the edge refuses to run the App if the
    downloaded content does not hash to ``sha256``."""

    name: NonEmpty
    sha256: StrictStr
    path: StrictStr | None = None  # where it lands in the working directory; default: name


class AppConfigFile(_Strict):
    name: NonEmpty
    path: StrictStr
    content: StrictStr = ""


class ResourceAmounts(_Strict):
    cpu: CpuQuantity | None = None
    memory: MemoryQuantity | None = None


class ResourceRequirements(_Strict):
    """A request missing where a limit is given defaults to the limit, as in Kubernetes."""

    requests: ResourceAmounts | None = None
    limits: ResourceAmounts | None = None


class RestartPolicy(StrEnum):
    ALWAYS = "Always"
    ON_FAILURE = "OnFailure"
    NEVER = "Never"


class AppSpec(_Strict):
    command: Annotated[list[StrictStr], Field(min_length=1)]
    args: list[StrictStr] | None = None
    env: list[EnvVar] | None = None
    workingDir: StrictStr | None = None
    artifacts: list[AppArtifact] | None = None
    config: list[AppConfigFile] | None = None
    resources: ResourceRequirements | None = None
    replicas: Count = 1
    restartPolicy: RestartPolicy = RestartPolicy.ALWAYS
    queue: StrictStr = DEFAULT_QUEUE
    priority: Int32 = 0
    minAvailable: Count | None = None
    nodeSelector: dict[StrictStr, StrictStr] | None = None
    schedulerName: StrictStr | None = None

    @model_validator(mode="after")
    def _consistent(self) -> AppSpec:
        # InvalidObject passes through pydantic untouched, keeping our exact path: this
        # model is only ever validated as an object's `spec`.
        if not self.command[0]:
            raise InvalidObject("the program to run must not be empty", field="spec.command[0]")
        check_dns_subdomain(self.queue, "spec.queue")
        if self.minAvailable is not None and self.minAvailable > self.replicas:
            raise InvalidObject(
                f"minAvailable ({self.minAvailable}) must not exceed replicas ({self.replicas})",
                field="spec.minAvailable",
            )
        self._check_env()
        self._check_files()
        self._check_resources()
        for key, value in (self.nodeSelector or {}).items():
            check_label_key(key, f"spec.nodeSelector.{key}")
            check_label_value(value, f"spec.nodeSelector.{key}")
        return self

    def _check_env(self) -> None:
        seen: set[str] = set()
        for i, var in enumerate(self.env or ()):
            if not _ENV_NAME.fullmatch(var.name):
                raise InvalidObject(
                    f"{var.name!r} is not a valid environment variable name "
                    "(letters, digits, '_', '-' and '.', not starting with a digit)",
                    field=f"spec.env[{i}].name",
                )
            if var.name in seen:
                raise InvalidObject(f"duplicate variable {var.name!r}", field=f"spec.env[{i}].name")
            seen.add(var.name)

    def _check_files(self) -> None:
        # Artifacts and config files share the working directory: no two may collide.
        targets: dict[str, str] = {}
        for i, art in enumerate(self.artifacts or ()):
            if not _SHA256.fullmatch(art.sha256):
                raise InvalidObject(
                    "must be 64 lower-case hex digits (the artifact's SHA-256)",
                    field=f"spec.artifacts[{i}].sha256",
                )
            field = f"spec.artifacts[{i}].path" if art.path is not None else \
                f"spec.artifacts[{i}].name"
            self._claim(targets, art.path if art.path is not None else art.name, field)
        names: set[str] = set()
        for i, cfg in enumerate(self.config or ()):
            if cfg.name in names:
                raise InvalidObject(f"duplicate config name {cfg.name!r}",
                                    field=f"spec.config[{i}].name")
            names.add(cfg.name)
            self._claim(targets, cfg.path, f"spec.config[{i}].path")

    @staticmethod
    def _claim(targets: dict[str, str], path: str, field: str) -> None:
        _check_relative_path(path, field)
        normal = str(PurePosixPath(path))
        if normal in targets:
            raise InvalidObject(f"{path!r} is already used by {targets[normal]}", field=field)
        targets[normal] = field

    def _check_resources(self) -> None:
        res = self.resources
        if res is None or res.requests is None or res.limits is None:
            return
        pairs = (("cpu", cpu_millis), ("memory", memory_bytes))
        for name, convert in pairs:
            request = getattr(res.requests, name)
            limit = getattr(res.limits, name)
            if request is not None and limit is not None and convert(request) > convert(limit):
                raise InvalidObject(
                    f"request {request} exceeds the limit {limit}",
                    field=f"spec.resources.requests.{name}",
                )


# --- status ------------------------------------------------------------------------------


class ReplicaPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"


class ReplicaStatus(_Strict):
    index: Count
    node: StrictStr | None = None
    phase: ReplicaPhase = ReplicaPhase.PENDING
    restarts: Count = 0
    lastExitCode: Int32 | None = None
    startTime: StrictStr | None = None
    reason: StrictStr | None = None
    message: StrictStr | None = None


class AppCondition(_Strict):
    type: NonEmpty
    status: ConditionStatus
    reason: StrictStr | None = None
    message: StrictStr | None = None
    lastTransitionTime: StrictStr | None = None


class AppPlacement(_Strict):
    """The last node-group decision (Karmada's ResourceBinding ``spec.clusters``)."""

    policy: StrictStr | None = None  # the PropagationPolicy that governed it
    policyGeneration: StrictInt | None = None
    affinityName: StrictStr | None = None  # the clusterAffinities term used
    groups: dict[StrictStr, Count] | None = None  # NodeGroup -> replicas


class AppStatus(_Strict):
    replicas: list[ReplicaStatus] | None = None
    readyReplicas: Count | None = None
    conditions: list[AppCondition] | None = None
    message: StrictStr | None = None
    observedGeneration: StrictInt | None = None
    placement: AppPlacement | None = None

    @model_validator(mode="after")
    def _indices_unique(self) -> AppStatus:
        seen: set[int] = set()
        for i, replica in enumerate(self.replicas or ()):
            if replica.index in seen:
                raise InvalidObject(f"duplicate replica index {replica.index}",
                                    field=f"status.replicas[{i}].index")
            seen.add(replica.index)
        return self


APP = register(KindInfo(
    kind="App", group=GROUP, version=VERSION, plural="apps", namespaced=True,
    spec_model=AppSpec, status_model=AppStatus,
    columns=(
        Column("READY", "status.readyReplicas"),
        Column("REPLICAS", "spec.replicas"),
        Column("QUEUE", "spec.queue", wide_only=True),
        Column("PRIORITY", "spec.priority", wide_only=True),
        Column("MIN-AVAILABLE", "spec.minAvailable", wide_only=True),
        Column("MESSAGE", "status.message", wide_only=True),
    ),
))
