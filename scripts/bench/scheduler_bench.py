"""The scheduler benchmark (run it through ``scripts/bench/scheduler``).

What runs, all in this one process, each run against its own real :class:`SqliteStore`
in a temp dir (WAL, ``synchronous=FULL``, as cloudcore runs it):

- **the cluster** (written before the clock starts): ``--nodes`` Ready Nodes with varied
  allocatable cpu/memory and labels (site, region, arch), ``--groups`` NodeGroups of
  equal size (half by ``matchLabels``, half by a ``nodes`` list; five regions; a ``tier``
  label), 4 Queues with weights 1..4 (one per namespace/team), and per namespace ten
  PropagationPolicies of mixed kinds that select Apps by label - Duplicated over two or
  three named groups, Divided by static weights 1:2:3, Divided by dynamic weights over a
  region, Aggregated over the ``tier=gold`` groups, Divided over ``tier=silver`` groups
  with a spread constraint, clusterAffinities with a fallback term - plus one
  OverridePolicy (extra args in one region);
- **the workload**: ``--apps`` Apps (four namespaces; 20 % governed by no policy, some
  with a ``nodeSelector``, a few gangs, varied priorities and requests) whose
  AppReplicas add up to exactly ``--replicas`` (a Duplicated App over k groups counts k
  times).  Every replica fits: they ask for about 12 % of the cluster's CPU.

**ours**: the real :class:`cloudcore.apps.AppsController` with its default settings,
started (informer listed, first rounds done) before the clock starts.  The clock starts
when the first App is written; the Apps are written one by one with ``store.apply`` (as
the API server would, yielding to the event loop between them, so the controller runs
while they arrive) and it stops when the last AppReplica the controller creates is in
the store.  Measured: that wall time and replicas placed per second; per App, the time
from its write to its last AppReplica; the decision time of every round (the pure
``plan.reconcile``) and per App; the rounds; the controller's store writes (counted by a
pass-through wrapper around the store); this process's CPU time and garbage-collector
pauses; and, after the last create, how long until the controller is idle with every
App's status Scheduled.

**first fit** (the baseline, same run, a fresh store with the same cluster): a naive
placer that watches Apps and, for each new one, puts each of its replicas on the first
node in name order that is Ready, matches the App's nodeSelector and has room, and
creates the AppReplica (the same object the controller would write) with one
``store.create`` per replica.  It ignores policies, groups and queues, but places the
same number of AppReplicas per App.  Same clock.  **first fit, batched**: the same, each
App's replicas written with one ``write_many`` (the controller's write path) - what the
store does when the decisions are trivial.

Checks after each run: every App has all its replicas, no node holds more than its
allocatable, and (ours) each replica is in a NodeGroup its policy allows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import protocol.kinds  # noqa: F401  (registers every kind)
from cloudcore.apps import AppsController, AppsControllerConfig, RoundStats
from cloudcore.apps import replicas as rep
from cloudcore.scheduler.resources import Resources
from cloudcore.scheduler.views import app_request, node_from_object
from cloudcore.store.base import Create, Store, WatchEvent, Write, WriteResult
from cloudcore.store.sqlite import SqliteStore
from protocol.events import EventType
from protocol.kinds.appreplicas import APP_REPLICA
from protocol.kinds.apps import APP
from protocol.resources import dig, validate_object
from protocol.selectors import Selector

GOAL_REPLICAS_PER_S = 1000.0
NAMESPACES = ("team-a", "team-b", "team-c", "team-d")
QUEUE_WEIGHTS = {"team-a": 1, "team-b": 2, "team-c": 3, "team-d": 4}
REGIONS = 5
TIERS = ("gold", "silver", "bronze")
POLICY_LABEL = "bench.edgefleet.io/policy"
POLICY_KINDS = ("duplicated", "static", "dynamic", "aggregated", "spread", "affinities",
                "duplicated", "static", "dynamic", "aggregated")
CPUS = ("2", "4", "8", "16")
MEMORIES = ("4Gi", "8Gi", "16Gi", "32Gi")
REQUEST_CPU = ("100m", "250m", "500m", "1")
REQUEST_MEMORY = ("128Mi", "256Mi", "512Mi", "1Gi")


# === the workload ============================================================================


@dataclass
class AppPlan:
    """One App of the workload and what placing it must produce."""

    obj: dict[str, Any]
    kind: str  # "implicit" or one of POLICY_KINDS
    copies: int  # AppReplicas per spec.replica (k for Duplicated over k groups, else 1)
    allowed: frozenset[str] | None  # NodeGroups its replicas may be in (None: any)

    @property
    def key(self) -> tuple[str, str]:
        return (str(dig(self.obj, "metadata.namespace")), str(dig(self.obj, "metadata.name")))

    @property
    def expected(self) -> int:
        return int(self.obj["spec"]["replicas"]) * self.copies


@dataclass
class Workload:
    nodes: list[dict[str, Any]]  # with status
    groups: list[dict[str, Any]]
    queues: list[dict[str, Any]]
    policies: list[dict[str, Any]]
    overrides: list[dict[str, Any]]
    apps: list[AppPlan]
    group_of: dict[str, str]  # node -> group

    @property
    def expected(self) -> int:
        return sum(a.expected for a in self.apps)


def _group_name(g: int) -> str:
    return f"ng-{g:02d}"


def build_workload(nodes: int, groups: int, apps: int, replicas: int, seed: int) -> Workload:
    rng = random.Random(seed)
    per_group = nodes // groups
    group_of: dict[str, str] = {}
    node_objs: list[dict[str, Any]] = []
    members: dict[str, list[str]] = {_group_name(g): [] for g in range(groups)}
    for i in range(per_group * groups):
        name = f"edge-{i:05d}"
        group = _group_name(i // per_group)
        group_of[name] = group
        members[group].append(name)
        cpu, memory = rng.choice(CPUS), rng.choice(MEMORIES)
        node_objs.append({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {
                "bench.edgefleet.io/site": group,
                "bench.edgefleet.io/region": f"region-{(i // per_group) % REGIONS}",
                "kubernetes.io/arch": "arm64" if rng.random() < 0.3 else "amd64"}},
            "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "capacity": {"cpu": cpu, "memory": memory},
                       "allocatable": {"cpu": cpu, "memory": memory}},
        })
    group_objs: list[dict[str, Any]] = []
    tier_of: dict[str, str] = {}
    region_of: dict[str, str] = {}
    for g in range(groups):
        name = _group_name(g)
        tier_of[name] = TIERS[g % len(TIERS)]
        region_of[name] = f"region-{g % REGIONS}"
        group_spec: dict[str, Any] = {"region": region_of[name],
                                      "zone": f"{region_of[name]}-z{g % 2}"}
        if g % 2 == 0:
            group_spec["matchLabels"] = {"bench.edgefleet.io/site": name}
        else:
            group_spec["nodes"] = list(members[name])
        group_objs.append({"apiVersion": "apps.kubeedge.io/v1alpha1", "kind": "NodeGroup",
                           "metadata": {"name": name, "labels": {"tier": tier_of[name]}},
                           "spec": group_spec})
    queue_objs = [{"apiVersion": "scheduling.edgefleet.io/v1alpha1", "kind": "Queue",
                   "metadata": {"name": ns}, "spec": {"weight": QUEUE_WEIGHTS[ns]}}
                  for ns in NAMESPACES]

    names = [_group_name(g) for g in range(groups)]
    policies: list[dict[str, Any]] = []
    overrides: list[dict[str, Any]] = []
    # policy (namespace, name) -> (kind, groups it allows, copies per replica)
    policy_info: dict[tuple[str, str], tuple[str, frozenset[str], int]] = {}
    for ns in NAMESPACES:
        for p, kind in enumerate(POLICY_KINDS):
            pname = f"{kind}-{p}"
            placement, policy_groups, copies = _placement(kind, rng, names, tier_of,
                                                          region_of)
            policy_info[(ns, pname)] = (kind, policy_groups, copies)
            policies.append({
                "apiVersion": "policy.edgefleet.io/v1alpha1", "kind": "PropagationPolicy",
                "metadata": {"name": pname, "namespace": ns},
                "spec": {"resourceSelectors": [{
                    "apiVersion": APP.api_version, "kind": "App",
                    "labelSelector": {"matchLabels": {POLICY_LABEL: pname}}}],
                    "placement": placement}})
        overrides.append({
            "apiVersion": "policy.edgefleet.io/v1alpha1", "kind": "OverridePolicy",
            "metadata": {"name": "region-0-args", "namespace": ns},
            "spec": {"resourceSelectors": [{"apiVersion": APP.api_version, "kind": "App"}],
                     "overrideRules": [{
                         "targetCluster": {"fieldSelector": {"matchExpressions": [
                             {"key": "region", "operator": "In", "values": ["region-0"]}]}},
                         "overriders": {"argsOverrider": [
                             {"operator": "add", "value": ["--region", "region-0"]}]}}]}})

    plans: list[AppPlan] = []
    for i in range(apps):
        ns = NAMESPACES[i % len(NAMESPACES)]
        labels = {"bench.edgefleet.io/app": f"app-{i:04d}"}
        kind, copies = "implicit", 1
        allowed: frozenset[str] | None = None
        if rng.random() >= 0.2:
            pname = _pick_policy(rng, ns, policy_info)
            labels[POLICY_LABEL] = pname
            kind, allowed, copies = policy_info[(ns, pname)]
        count = rng.randint(1, 6) if copies > 1 else rng.randint(1, 19)
        cpu, memory = rng.choice(REQUEST_CPU), rng.choice(REQUEST_MEMORY)
        spec: dict[str, Any] = {
            "command": ["python3", "main.py"], "args": ["--app", str(i)],
            "env": [{"name": "MODE", "value": "bench"}],
            "resources": {"requests": {"cpu": cpu, "memory": memory},
                          "limits": {"cpu": cpu, "memory": memory}},
            "replicas": count, "queue": ns, "priority": rng.choice((0, 0, 0, 10, 100)),
        }
        if rng.random() < 0.1:
            spec["nodeSelector"] = {"kubernetes.io/arch": "arm64"}
        obj = {"apiVersion": APP.api_version, "kind": "App",
               "metadata": {"name": f"app-{i:04d}", "namespace": ns, "labels": labels},
               "spec": spec}
        plans.append(AppPlan(obj, kind, copies, allowed))
    _hit_total(plans, replicas)
    for plan in plans:
        # A few gangs: Apps that must be placed whole (minAvailable = replicas).
        if plan.kind == "implicit" and rng.random() < 0.25:
            plan.obj["spec"]["minAvailable"] = plan.obj["spec"]["replicas"]
    return Workload(node_objs, group_objs, queue_objs, policies, overrides, plans, group_of)


def _pick_policy(rng: random.Random, ns: str,
                 info: Mapping[tuple[str, str], tuple[str, frozenset[str], int]]) -> str:
    return rng.choice(sorted(n for (pns, n) in info if pns == ns))


def _placement(kind: str, rng: random.Random, names: Sequence[str], tier_of: Mapping[str, str],
               region_of: Mapping[str, str]) -> tuple[dict[str, Any], frozenset[str], int]:
    """A policy's placement, the groups it allows and AppReplicas per spec.replica."""
    if kind == "duplicated":
        chosen = sorted(rng.sample(list(names), rng.choice((2, 3))))
        return ({"clusterAffinity": {"clusterNames": chosen},
                 "replicaScheduling": {"replicaSchedulingType": "Duplicated"}},
                frozenset(chosen), len(chosen))
    if kind == "static":
        chosen = sorted(rng.sample(list(names), 3))
        weights = [{"targetCluster": {"clusterNames": [g]}, "weight": w}
                   for g, w in zip(chosen, (1, 2, 3), strict=True)]
        return ({"clusterAffinity": {"clusterNames": chosen},
                 "replicaScheduling": {"replicaSchedulingType": "Divided",
                                       "replicaDivisionPreference": "Weighted",
                                       "weightPreference": {"staticWeightList": weights}}},
                frozenset(chosen), 1)
    if kind == "dynamic":
        region = f"region-{rng.randrange(REGIONS)}"
        return ({"clusterAffinity": {"fieldSelector": {"matchExpressions": [
                    {"key": "region", "operator": "In", "values": [region]}]}},
                 "replicaScheduling": {"replicaSchedulingType": "Divided",
                                       "replicaDivisionPreference": "Weighted",
                                       "weightPreference": {"dynamicWeight": "AvailableReplicas"}}},
                frozenset(g for g in names if region_of[g] == region), 1)
    if kind == "aggregated":
        return ({"clusterAffinity": {"labelSelector": {"matchLabels": {"tier": "gold"}}},
                 "replicaScheduling": {"replicaSchedulingType": "Divided",
                                       "replicaDivisionPreference": "Aggregated"}},
                frozenset(g for g in names if tier_of[g] == "gold"), 1)
    if kind == "spread":
        return ({"clusterAffinity": {"labelSelector": {"matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["silver"]}]}},
                 "spreadConstraints": [{"spreadByField": "cluster", "minGroups": 2,
                                        "maxGroups": 3}],
                 "replicaScheduling": {"replicaSchedulingType": "Divided",
                                       "replicaDivisionPreference": "Weighted",
                                       "weightPreference": {"dynamicWeight": "AvailableReplicas"}}},
                frozenset(g for g in names if tier_of[g] == "silver"), 1)
    assert kind == "affinities"
    primary = sorted(rng.sample(list(names), 2))
    backup = sorted(set(rng.sample(list(names), 4)) - set(primary))[:2]
    return ({"clusterAffinities": [
                {"affinityName": "primary", "clusterNames": primary},
                {"affinityName": "backup", "clusterNames": backup}],
             "replicaScheduling": {"replicaSchedulingType": "Divided",
                                   "replicaDivisionPreference": "Weighted"}},
            frozenset(primary), 1)


def _hit_total(plans: list[AppPlan], total: int) -> None:
    """Nudge the replica counts of non-Duplicated Apps until the AppReplicas add up to
    exactly ``total``."""
    adjustable = [p for p in plans if p.copies == 1]
    if not adjustable:
        raise ValueError("no App can be resized")
    diff = total - sum(p.expected for p in plans)
    i = 0
    while diff != 0:
        spec = adjustable[i % len(adjustable)].obj["spec"]
        if diff > 0:
            spec["replicas"] += 1
            diff -= 1
        elif spec["replicas"] > 1:
            spec["replicas"] -= 1
            diff += 1
        i += 1
        if i > 1000 * len(adjustable):
            raise ValueError(f"cannot reach {total} replicas with {len(plans)} Apps")


def validated(obj: dict[str, Any]) -> dict[str, Any]:
    _, valid = validate_object(obj)
    return valid


async def populate(store: SqliteStore, workload: Workload) -> None:
    """Write the cluster (everything but the Apps)."""
    for node in workload.nodes:
        body = {k: v for k, v in node.items() if k != "status"}
        await store.apply(validated(body))
        await store.update_status("Node", None, node["metadata"]["name"], node["status"])
    for obj in (*workload.groups, *workload.queues, *workload.policies, *workload.overrides):
        await store.apply(validated(obj))


# === measuring ===============================================================================


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"p50": percentile(values, 0.5), "p99": percentile(values, 0.99),
            "max": max(values, default=float("nan")), "n": float(len(values))}


@dataclass
class WriteLog:
    """Writes made through :class:`CountingStore`, when the AppReplica creates ended and
    when each App had all its replicas (``expected``: AppReplicas per App)."""

    calls: Counter[str] = field(default_factory=Counter)
    objects: Counter[str] = field(default_factory=Counter)
    replicas_created: int = 0
    last_create: float = 0.0
    target: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    expected: Mapping[tuple[str, str], int] = field(default_factory=dict)
    per_app: Counter[tuple[str, str]] = field(default_factory=Counter)
    app_placed: dict[tuple[str, str], float] = field(default_factory=dict)

    def created(self, objs: Sequence[Mapping[str, Any]]) -> None:
        replicas = [o for o in objs if o.get("kind") == APP_REPLICA.kind]
        if not replicas:
            return
        now = time.perf_counter()
        for obj in replicas:
            key = (str(dig(obj, "metadata.namespace")), str(dig(obj, "spec.app")))
            self.per_app[key] += 1
            if self.per_app[key] == self.expected.get(key):
                self.app_placed[key] = now
        self.replicas_created += len(replicas)
        self.last_create = now
        if self.replicas_created >= self.target:
            self.done.set()


def app_latencies(written: Mapping[tuple[str, str], float],
                  placed: Mapping[tuple[str, str], float]) -> list[float]:
    """Per App, seconds from its write to its last AppReplica's."""
    return [placed[key] - at for key, at in written.items() if key in placed]


class CountingStore:
    """The store, passed through, counting the writes the controller makes through it
    (Apps are written to the store underneath, as the API server would)."""

    def __init__(self, store: SqliteStore, log: WriteLog) -> None:
        self.inner = store
        self.log = log

    def _count(self, call: str, objects: Counter[str]) -> None:
        self.log.calls[call] += 1
        self.log.objects.update(objects)

    async def apply(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        result = await self.inner.apply(obj)
        self._count("apply", Counter(apply=1))
        return result

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        result = await self.inner.create(obj)
        self._count("create", Counter(create=1))
        self.log.created([result])
        return result

    async def update_status(self, kind: str, namespace: str | None, name: str,
                            status: dict[str, Any], expected_rv: int | None = None
                            ) -> dict[str, Any]:
        result = await self.inner.update_status(kind, namespace, name, status, expected_rv)
        self._count("update_status", Counter(update_status=1))
        return result

    async def delete(self, kind: str, namespace: str | None, name: str,
                     expected_rv: int | None = None) -> dict[str, Any]:
        result = await self.inner.delete(kind, namespace, name, expected_rv)
        self._count("delete", Counter(delete=1))
        return result

    async def write_many(self, writes: Sequence[Write]) -> list[WriteResult]:
        results = await self.inner.write_many(writes)
        self._count("write_many", Counter(type(w).__name__ for w in writes))
        self.log.created([r for w, r in zip(writes, results, strict=True)
                          if isinstance(w, Create) and isinstance(r, dict)])
        return results

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        return await self.inner.get(kind, namespace, name)

    async def list(self, kind: str, namespace: str | None = None,
                   selector: Selector | None = None) -> tuple[list[dict[str, Any]], int]:
        return await self.inner.list(kind, namespace, selector)

    def watch(self, from_rv: int, kinds: frozenset[str] | None = None
              ) -> AsyncIterator[WatchEvent]:
        return self.inner.watch(from_rv, kinds)

    def current_rv(self) -> int:
        return self.inner.current_rv()

    async def close(self) -> None:
        await self.inner.close()


class Meter:
    """This process's CPU time and the garbage collector's pauses over a window (the
    machine is shared: CPU time well below wall time means something else ran)."""

    def __init__(self) -> None:
        self.gc_seconds = [0.0, 0.0, 0.0]
        self.gc_count = [0, 0, 0]
        self._gc_started = 0.0
        self._cpu = self._wall = 0.0

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_seconds[info["generation"]] += time.perf_counter() - self._gc_started
            self.gc_count[info["generation"]] += 1

    def start(self) -> None:
        gc.callbacks.append(self._gc)
        self._cpu, self._wall = time.process_time(), time.perf_counter()

    def stop(self) -> dict[str, float]:
        cpu, wall = time.process_time() - self._cpu, time.perf_counter() - self._wall
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._gc)
        return {"cpu_s": cpu, "wall_s": wall, "cpu_per_wall": cpu / wall if wall else 0.0,
                "gc_s": sum(self.gc_seconds), "gc_full_collections": self.gc_count[2],
                "gc_full_s": self.gc_seconds[2]}


async def write_apps(store: SqliteStore, apps: Sequence[dict[str, Any]],
                     written: dict[tuple[str, str], float]) -> float:
    """Write the Apps one by one, letting the event loop run between them, noting when
    each was written; returns how long that took (the clock starts before the first)."""
    started = time.perf_counter()
    for obj in apps:
        await store.apply(obj)
        written[(str(dig(obj, "metadata.namespace")), str(dig(obj, "metadata.name")))] = \
            time.perf_counter()
        await asyncio.sleep(0)
    return time.perf_counter() - started


async def wait_for(event: asyncio.Event, limit_s: float, what: str) -> None:
    try:
        async with asyncio.timeout(limit_s):
            await event.wait()
    except TimeoutError:
        raise RuntimeError(f"timed out after {limit_s:.0f} s waiting for {what}") from None


# === ours: the apps controller ===============================================================


async def run_controller(workload: Workload, root: Path, limit_s: float,
                         progress: Callable[[str], None]) -> dict[str, Any]:
    store = SqliteStore.open(root / "ours.db")
    try:
        await populate(store, workload)
        apps = [validated(a.obj) for a in workload.apps]
        log = WriteLog(target=workload.expected,
                       expected={a.key: a.expected for a in workload.apps})
        written: dict[tuple[str, str], float] = {}
        rounds: list[RoundStats] = []
        ended: list[float] = []  # when each round ended
        round_done = asyncio.Event()

        def on_round(stats: RoundStats) -> None:
            rounds.append(stats)
            ended.append(time.perf_counter())
            round_done.set()

        counting: Store = CountingStore(store, log)
        controller = AppsController(counting, AppsControllerConfig(), on_round=on_round)
        await controller.start()
        try:
            await settle(rounds, ended, 0.0, round_done, limit_s,
                         "the controller's first rounds")
            progress(f"ours: cluster written ({store.current_rv()} store changes), "
                     f"controller idle after {len(rounds)} rounds")
            warmup_rounds = len(rounds)
            warmup_calls = Counter(log.calls)
            warmup_objects = Counter(log.objects)
            rv_before = store.current_rv()
            meter = Meter()
            meter.start()
            first = time.perf_counter()
            apps_written_s = await write_apps(store, apps, written)
            await wait_for(log.done, limit_s, f"{workload.expected} AppReplicas")
            placed_at = log.last_create
            process = meter.stop()
            progress(f"ours: {log.replicas_created} AppReplicas in "
                     f"{placed_at - first:.2f} s; waiting for the controller to settle")
            await settle(rounds, ended, placed_at, round_done, limit_s,
                         "the controller to settle")
            settled_at = time.perf_counter()
        finally:
            await controller.stop()
        measured = rounds[warmup_rounds:]
        replicas, _ = await store.list(APP_REPLICA.kind)
        app_objs, _ = await store.list(APP.kind)
        checks = verify(workload, replicas, check_groups=True)
        checks["apps_scheduled"] = sum(1 for a in app_objs if _scheduled(a))
        calls = Counter(log.calls)
        calls.subtract(warmup_calls)
        objects = Counter(log.objects)
        objects.subtract(warmup_objects)
        wall = placed_at - first
        busy = [r for r in measured if r.writes]
        return {
            "placer": "apps controller",
            "replicas": log.replicas_created,
            "wall_s": wall,
            "replicas_per_s": log.replicas_created / wall if wall > 0 else 0.0,
            "apps_written_s": apps_written_s,
            "app_latency_s": spread(app_latencies(written, log.app_placed)),
            "settled_s": settled_at - first,
            "rounds": len(measured),
            "rounds_with_writes": len(busy),
            "decision_ms": spread([r.plan_seconds * 1000 for r in measured]),
            "decision_per_app_ms": spread([r.plan_seconds * 1000 / max(1, r.apps)
                                           for r in measured]),
            "write_ms": spread([r.write_seconds * 1000 for r in measured]),
            "decision_total_s": sum(r.plan_seconds for r in measured),
            "write_total_s": sum(r.write_seconds for r in measured),
            "round_log": [{"apps": r.apps, "reused": r.apps_reused,
                           "plan_ms": round(r.plan_seconds * 1000, 1),
                           "write_ms": round(r.write_seconds * 1000, 1), "creates": r.creates,
                           "updates": r.updates, "deletes": r.deletes, "statuses": r.statuses}
                          for r in measured],
            "store_write_calls": dict(+calls),
            "store_objects_written": dict(+objects),
            "store_changes": store.current_rv() - rv_before,
            "process": process,
            "checks": checks,
        }
    finally:
        await store.close()


async def settle(rounds: list[RoundStats], ended: list[float], after: float,
                 round_done: asyncio.Event, limit_s: float, what: str) -> None:
    """Until a round that ended after ``after`` made no write: the controller has caught
    up with everything, its own writes included."""
    try:
        async with asyncio.timeout(limit_s):
            while not rounds or rounds[-1].writes or ended[-1] <= after:
                round_done.clear()
                await round_done.wait()
    except TimeoutError:
        raise RuntimeError(f"timed out after {limit_s:.0f} s waiting for {what}") from None


def _scheduled(app: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Scheduled" and c.get("status") == "True"
               for c in dig(app, "status.conditions") or ())


# === the baseline: first fit =================================================================


@dataclass
class FirstFitNode:
    name: str
    free: Resources
    ready: bool
    labels: Mapping[str, str]


async def run_first_fit(workload: Workload, root: Path, limit_s: float,
                        progress: Callable[[str], None], *, batched: bool = False
                        ) -> dict[str, Any]:
    """The naive placer; ``batched``: its replicas written one App at a time with
    ``write_many`` (the controller's write path) instead of one ``create`` each."""
    label = "first fit, batched" if batched else "first fit"
    store = SqliteStore.open(root / ("first-fit-batched.db" if batched else "first-fit.db"))
    try:
        await populate(store, workload)
        apps = [validated(a.obj) for a in workload.apps]
        expected = {a.key: a.expected for a in workload.apps}
        nodes_list, _ = await store.list("Node")
        nodes = [FirstFitNode(v.name, v.allocatable, v.ready and not v.unschedulable,
                              v.labels) for v in map(node_from_object, nodes_list)]
        nodes.sort(key=lambda n: n.name)
        progress(f"{label}: cluster written ({store.current_rv()} store changes)")
        decisions: list[float] = []
        per_app: list[float] = []
        done = asyncio.Event()
        state = {"created": 0, "last": 0.0, "unplaced": 0, "writes": 0}
        written: dict[tuple[str, str], float] = {}
        placed: dict[tuple[str, str], float] = {}
        rv_before = store.current_rv()

        async def placer() -> None:
            async for event in store.watch(rv_before, frozenset({APP.kind})):
                if event.type is not EventType.ADDED:
                    continue
                app = event.object
                key = (str(dig(app, "metadata.namespace")), str(dig(app, "metadata.name")))
                spec = app.get("spec") or {}
                request = app_request(spec)
                selector: Mapping[str, str] = spec.get("nodeSelector") or {}
                app_time = 0.0
                batch: list[Write] = []
                for index in range(expected[key]):
                    t = time.perf_counter()
                    chosen = first_fit(nodes, request, selector)
                    spent = time.perf_counter() - t
                    decisions.append(spent)
                    app_time += spent
                    if chosen is None:
                        state["unplaced"] += 1
                        continue
                    chosen.free = chosen.free - request
                    obj = rep.build_replica(app, app, index, chosen.name, None, 10)
                    if batched:
                        batch.append(Create(obj))
                        continue
                    await store.create(obj)
                    state["writes"] += 1
                    state["created"] += 1
                    state["last"] = time.perf_counter()
                if batch:
                    results = await store.write_many(batch)
                    state["writes"] += 1
                    state["created"] += sum(1 for r in results if isinstance(r, dict))
                    state["last"] = time.perf_counter()
                placed[key] = time.perf_counter()
                per_app.append(app_time)
                if state["created"] + state["unplaced"] >= workload.expected:
                    done.set()

        task = asyncio.create_task(placer())
        try:
            meter = Meter()
            meter.start()
            first = time.perf_counter()
            apps_written_s = await write_apps(store, apps, written)
            await wait_for(done, limit_s, f"the {label} placer")
            process = meter.stop()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        replicas, _ = await store.list(APP_REPLICA.kind)
        wall = state["last"] - first
        return {
            "placer": label,
            "replicas": state["created"],
            "unplaced": state["unplaced"],
            "wall_s": wall,
            "replicas_per_s": state["created"] / wall if wall > 0 else 0.0,
            "apps_written_s": apps_written_s,
            "app_latency_s": spread(app_latencies(written, placed)),
            "decision_per_replica_ms": spread([d * 1000 for d in decisions]),
            "decision_per_app_ms": spread([d * 1000 for d in per_app]),
            "decision_total_s": sum(decisions),
            "store_write_calls": {"write_many" if batched else "create": state["writes"]},
            "store_objects_written": {"create": state["created"]},
            "store_changes": store.current_rv() - rv_before,
            "process": process,
            "checks": verify(workload, replicas, check_groups=False),
        }
    finally:
        await store.close()


def first_fit(nodes: Sequence[FirstFitNode], request: Resources,
              selector: Mapping[str, str]) -> FirstFitNode | None:
    """The first node in name order that is Ready, matches and has room."""
    for node in nodes:
        if (node.ready and request.fits_in(node.free)
                and all(node.labels.get(k) == v for k, v in selector.items())):
            return node
    return None


# === checks ==================================================================================


def verify(workload: Workload, replicas: Sequence[Mapping[str, Any]], *,
           check_groups: bool) -> dict[str, Any]:
    """Every App has its replicas, no node is over its allocatable, and each replica is
    in a NodeGroup its policy allows."""
    allocatable = {n["metadata"]["name"]: node_from_object(n).allocatable
                   for n in workload.nodes}
    used: dict[str, Resources] = {}
    per_app: Counter[tuple[str, str]] = Counter()
    wrong_group = 0
    plans = {a.key: a for a in workload.apps}
    for obj in replicas:
        if rep.is_terminating(obj):
            continue
        node = rep.node_of(obj)
        used[node] = used.get(node, Resources()) + rep.request_of(obj)
        key = (str(dig(obj, "metadata.namespace")), str(dig(obj, "spec.app")))
        per_app[key] += 1
        plan = plans.get(key)
        if check_groups and plan is not None and plan.allowed is not None:
            if workload.group_of.get(node) not in plan.allowed:
                wrong_group += 1
    over = sorted(n for n, u in used.items() if not u.fits_in(allocatable[n]))
    short = sorted(f"{ns}/{name}" for (ns, name), p in plans.items()
                   if per_app[(ns, name)] != p.expected)
    return {"replicas_live": sum(per_app.values()), "apps_complete": len(plans) - len(short),
            "apps_incomplete": short[:10], "nodes_over_allocatable": len(over),
            "replicas_outside_allowed_groups": wrong_group,
            "nodes_used": len(used)}


# === report ==================================================================================


def _ms(d: Mapping[str, float]) -> str:
    return f"{d['p50']:.1f} / {d['p99']:.1f} / {d['max']:.1f}"


def report(ours: Mapping[str, Any], base: Mapping[str, Any], batched: Mapping[str, Any],
           workload: Workload) -> list[str]:
    kinds = Counter(a.kind for a in workload.apps)
    lines = [
        f"Scheduler benchmark: {len(workload.apps)} Apps ({workload.expected} replicas) onto "
        f"{len(workload.nodes)} nodes in {len(workload.groups)} NodeGroups, "
        f"{len(workload.queues)} Queues, {len(workload.policies)} PropagationPolicies",
        "  Apps by policy kind: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())),
        f"{'':<42}{'apps controller':>22}{'first fit':>18}{'first fit,':>18}",
        f"{'':<42}{'':>22}{'(baseline)':>18}{'batched':>18}",
    ]

    def row(label: str, a: Any, b: Any = "", c: Any = "") -> None:
        lines.append(f"{label:<42}{a!s:>22}{b!s:>18}{c!s:>18}")

    def each(fmt: Callable[[Mapping[str, Any]], Any]) -> tuple[Any, Any, Any]:
        return fmt(ours), fmt(base), fmt(batched)

    ratio = ours["replicas_per_s"] / base["replicas_per_s"] if base["replicas_per_s"] else 0.0
    row("replicas placed", *each(lambda r: r["replicas"]))
    row("first App written -> last AppReplica, s", *each(lambda r: f"{r['wall_s']:.2f}"))
    row("replicas placed per second", *each(lambda r: f"{r['replicas_per_s']:.0f}"))
    row("  ratio ours / first fit (baseline)", f"{ratio:.2f}x")
    row("writing the 1,000 Apps took, s" if len(workload.apps) == 1000
        else "writing the Apps took, s", *each(lambda r: f"{r['apps_written_s']:.2f}"))
    row("App written -> all its replicas p50/p99, s", *each(
        lambda r: f"{r['app_latency_s']['p50']:.2f} / {r['app_latency_s']['p99']:.2f}"))
    row("rounds (with writes)", f"{ours['rounds']} ({ours['rounds_with_writes']})")
    row("decision per round p50/p99/max, ms", _ms(ours["decision_ms"]))
    row("decision per App p50/p99/max, ms", *each(lambda r: _ms(r["decision_per_app_ms"])))
    row("decision per replica p50/p99/max, ms", "", _ms(base["decision_per_replica_ms"]),
        _ms(batched["decision_per_replica_ms"]))
    row("decision time in total, s", *each(lambda r: f"{r['decision_total_s']:.2f}"))
    row("writes per round p50/p99/max, ms", _ms(ours["write_ms"]))
    row("write time in total, s", f"{ours['write_total_s']:.2f}")
    row("store transactions for the replicas", *each(
        lambda r: sum(r["store_write_calls"].values())))
    row("store changes (resourceVersions)", *each(lambda r: r["store_changes"]))
    row("settled: every App Scheduled, idle, s", f"{ours['settled_s']:.2f}")
    row("CPU time / wall time of this process", *each(
        lambda r: f"{r['process']['cpu_per_wall']:.2f}"))
    row("garbage collector: s (full collections)", *each(
        lambda r: f"{r['process']['gc_s']:.2f} ({r['process']['gc_full_collections']})"))
    apps = len(workload.apps)
    row("Apps complete", *each(lambda r: f"{r['checks']['apps_complete']}/{apps}"))
    row("Apps with status Scheduled", f"{ours['checks']['apps_scheduled']}/{apps}")
    row("nodes over allocatable", *each(lambda r: r["checks"]["nodes_over_allocatable"]))
    row("replicas outside their policy's groups",
        ours["checks"]["replicas_outside_allowed_groups"], "n/a", "n/a")
    row("nodes used", *each(lambda r: r["checks"]["nodes_used"]))
    lines.append("  controller store calls: " + ", ".join(
        f"{k} {n}" for k, n in sorted(ours["store_write_calls"].items())) +
        "; objects written: " + ", ".join(
        f"{k} {n}" for k, n in sorted(ours["store_objects_written"].items())))
    oc = ours["checks"]
    complete = (ours["replicas"] == workload.expected and oc["apps_complete"] == apps
                and oc["nodes_over_allocatable"] == 0
                and oc["replicas_outside_allowed_groups"] == 0)
    met = ours["replicas_per_s"] >= GOAL_REPLICAS_PER_S and complete
    lines.append(f"goal >= {GOAL_REPLICAS_PER_S:.0f} replicas/s: "
                 f"{'PASS' if met else 'FAIL'} ({ours['replicas_per_s']:.0f} replicas/s"
                 f"{'' if complete else ', placement incomplete or wrong'})")
    return lines


# === entry ===================================================================================


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench/scheduler",
        description="Place Apps onto simulated nodes with the real apps controller and "
                    "store; a naive first-fit placer is the baseline")
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--apps", type=int, default=1000)
    parser.add_argument("--replicas", type=int, default=10000,
                        help="AppReplicas in total (a Duplicated App counts once per group)")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="give up on a run after this many seconds")
    parser.add_argument("--only", choices=("ours", "first-fit"),
                        help="run one side only (no table, no verdict; first-fit runs both "
                             "of its variants)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 500 nodes, 10 groups, 100 Apps, 1,000 replicas")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.nodes, args.groups, args.apps, args.replicas = 500, 10, 100, 1000
    return args


def _stage(what: str) -> None:
    print(f"{time.monotonic():.3f} {what}", file=sys.stderr, flush=True)


async def measure(args: argparse.Namespace, workload: Workload, root: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if args.only != "first-fit":
        results["ours"] = await run_controller(workload, root, args.timeout, _stage)
    if args.only != "ours":
        results["first_fit"] = await run_first_fit(workload, root, args.timeout, _stage)
        results["first_fit_batched"] = await run_first_fit(workload, root, args.timeout,
                                                           _stage, batched=True)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workload = build_workload(args.nodes, args.groups, args.apps, args.replicas, args.seed)
    _stage(f"workload: {len(workload.nodes)} nodes, {len(workload.apps)} Apps, "
           f"{workload.expected} replicas")
    with tempfile.TemporaryDirectory(prefix="edgefleet-sched-bench-") as tmp:
        results = asyncio.run(measure(args, workload, Path(tmp)))
    machine = {"nproc": os.cpu_count(), "python": platform.python_version(),
               "platform": platform.platform()}
    if "ours" in results and "first_fit" in results:
        for line in report(results["ours"], results["first_fit"], results["first_fit_batched"],
                           workload):
            print(line)
    else:
        print(json.dumps(results, indent=2, default=str))
    print(f"machine: nproc={machine['nproc']} python={machine['python']} {machine['platform']}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": machine, "goal_replicas_per_s": GOAL_REPLICAS_PER_S,
             "nodes": len(workload.nodes), "groups": len(workload.groups),
             "queues": len(workload.queues), "apps": len(workload.apps),
             "replicas_expected": workload.expected, **results}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
