"""edged: runs the App replicas the cloud assigned to this node.

It follows the MetaCache's AppReplica objects (the cache holds exactly what the cloud
addressed to this node) and keeps one :class:`~edgecore.edged.replica.ReplicaRunner`
per replica: a new object starts one, a changed template replaces it (the old process
stops before the new one starts), ``spec.terminating`` stops it and reports
``Terminated``, and a delete stops it silently.

Autonomy: :meth:`Edged.start` starts whatever the cache holds at once, cloud or no cloud.
Processes a previous edgecore left behind (it was killed with -9) are found through their
process records and stopped first, those of replicas still assigned by their runner, the
others on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgecore.config import EdgedSettings
from edgecore.edged.files import FetchArtifact
from edgecore.edged.layout import ReplicaDir, existing_replica_dirs
from edgecore.edged.leftovers import ProcessRecord, clear_record, load_record, stop_leftover
from edgecore.edged.memory import MemoryLimiter
from edgecore.edged.replica import ReplicaRunner, RunContext
from edgecore.edged.reporting import ChangeOnlyReporter, ReportStatus
from edgecore.meta import CacheWatch, MetaCache
from protocol.envelope import ObjectRef
from protocol.errors import EdgefleetError
from protocol.events import EventType
from protocol.kinds.appreplicas import APP_REPLICA, AppReplicaSpec, AppReplicaStatus
from protocol.kinds.apps import ReplicaPhase

log = logging.getLogger(__name__)

INVALID_SPEC = "InvalidSpec"
# How long a process left by an edgecore gone before gets after SIGTERM when its replica
# is no longer here to say (AppReplicaSpec's default).
LEFTOVER_GRACE_SECONDS = 10.0

Key = tuple[str, str]


class Edged:
    def __init__(self, node: str, cache: MetaCache, apps_dir: Path, *,
                 report_status: ReportStatus, mqtt_url: str, dmi_socket: Path,
                 fetch_artifact: FetchArtifact | None = None,
                 settings: EdgedSettings | None = None,
                 limiter: MemoryLimiter | None = None) -> None:
        self._cache = cache
        self._node = node
        self._reporter = ChangeOnlyReporter(report_status)
        self._ctx = RunContext(
            node=node, apps_root=apps_dir, mqtt_url=mqtt_url, dmi_socket=dmi_socket,
            settings=settings or EdgedSettings(), fetch_artifact=fetch_artifact,
            reporter=self._reporter, limiter=limiter or MemoryLimiter(),
            inherited_env=dict(os.environ),
        )
        self._runners: dict[Key, ReplicaRunner] = {}
        self._retiring: dict[Key, asyncio.Task[Any]] = {}
        self._leftovers: dict[Key, ProcessRecord] = {}
        self._seen: set[Key] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def reports_sent(self) -> int:
        return self._reporter.sent

    def runner(self, namespace: str, name: str) -> ReplicaRunner | None:
        return self._runners.get((namespace, name))

    async def start(self) -> None:
        for where in existing_replica_dirs(self._ctx.apps_root):
            record = load_record(where.process_record)
            if record is not None:
                self._leftovers[(where.namespace, where.name)] = record
        watch = self._cache.subscribe(kind=APP_REPLICA.kind)
        self._resync()
        # What is left belongs to replicas that are gone: stop it all the same.
        for key, record in self._leftovers.items():
            self._retiring[key] = asyncio.create_task(self._stop_orphan(key, record))
        self._leftovers.clear()
        log.info("edged: supervising %d replica(s)", len(self._runners))
        self._task = asyncio.create_task(self._follow(watch), name="edged")

    async def stop(self) -> None:
        """Stop following the cache and stop every replica (gracefully: SIGTERM, SIGKILL
        after each one's grace period), without reporting: the node is going down."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        tasks = [runner.stop() for runner in self._runners.values()]
        tasks += self._retiring.values()
        self._runners.clear()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        log.info("edged: stopped")

    # ---- following the cache -------------------------------------------------------------

    async def _follow(self, watch: CacheWatch) -> None:
        while True:
            async for event in watch:
                try:
                    if event.type is EventType.DELETED:
                        self._remove(_key(event.object))
                    else:
                        self._apply(event.object)
                except Exception:  # one bad object must not end supervision
                    log.exception("edged: handling %s failed", event.key)
            if not watch.dropped:
                return  # the cache was closed
            watch = self._cache.subscribe(kind=APP_REPLICA.kind)
            self._resync()

    def _resync(self) -> None:
        present = set()
        for obj in self._cache.list(APP_REPLICA.kind):
            try:
                present.add(_key(obj))
                self._apply(obj)
            except Exception:
                log.exception("edged: handling %s failed", obj.get("metadata"))
        for key in set(self._runners) - present:
            self._remove(key)

    def _apply(self, obj: dict[str, Any]) -> None:
        key = _key(obj)
        ref = ObjectRef(kind=APP_REPLICA.kind, namespace=key[0], name=key[1])
        first_sight = key not in self._seen
        self._seen.add(key)
        self._reporter.seed(ref, obj.get("status"))
        try:
            spec = AppReplicaSpec.model_validate(obj.get("spec"))
        except (ValidationError, EdgefleetError) as exc:
            log.warning("edged: %s has an invalid spec: %s", ref.key, exc)
            self._retire(key)
            self._reporter.report(ref, AppReplicaStatus(
                phase=ReplicaPhase.PENDING, reason=INVALID_SPEC, message=str(exc)[:1000]))
            return
        if spec.nodeName != self._node:
            log.warning("edged: %s is for node %s, not this one; not running it", ref.key,
                        spec.nodeName)
            self._retire(key)
            return
        uid = (obj.get("metadata") or {}).get("uid")
        runner = self._runners.get(key)
        if runner is not None and runner.runs(uid, spec):
            runner.update(spec)
            return
        self._retire(key)
        runner = ReplicaRunner(
            self._ctx, ref, uid, spec,
            # After an edgecore restart the count of restarts goes on; a new template is a
            # new replica.
            status=_cached_status(obj) if first_sight else None,
            after=self._retiring.get(key), leftover=self._leftovers.pop(key, None))
        self._runners[key] = runner
        runner.start()

    def _remove(self, key: Key) -> None:
        self._retire(key)
        self._reporter.forget(ObjectRef(kind=APP_REPLICA.kind, namespace=key[0], name=key[1]))

    def _retire(self, key: Key) -> None:
        """Stop the key's runner, if any; a successor waits for it to be done."""
        runner = self._runners.pop(key, None)
        if runner is None:
            return
        task = runner.stop()
        self._retiring[key] = task

        def forget(done: asyncio.Task[Any]) -> None:
            if self._retiring.get(key) is done:
                del self._retiring[key]

        task.add_done_callback(forget)

    async def _stop_orphan(self, key: Key, record: ProcessRecord) -> None:
        try:
            await stop_leftover(record, LEFTOVER_GRACE_SECONDS, what=f"{key[0]}/{key[1]}")
            clear_record(ReplicaDir(self._ctx.apps_root, *key).process_record)
        finally:
            if self._retiring.get(key) is asyncio.current_task():
                del self._retiring[key]


def _key(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or "default"), str(meta["name"])


def _cached_status(obj: dict[str, Any]) -> AppReplicaStatus | None:
    try:
        return AppReplicaStatus.model_validate(obj.get("status") or {})
    except (ValidationError, EdgefleetError):
        return None
