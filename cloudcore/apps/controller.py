"""The apps controller: the loop that turns Apps into AppReplicas.

It keeps an informer over every kind placement reads, and reconciles - plans a round
with :func:`cloudcore.apps.plan.reconcile` and makes its writes - after changes (a
burst of them gathered for ``debounce_seconds``) and when a deadline falls due
(failover toleration, deleting replicas on lost nodes).  Deadlines are on ``clock``, a
parameter, so tests can move time; while one is pending the clock is read every
``recheck_seconds``.

Before each round the controller waits until its informer has seen the controller's
own last writes, so a round never plans from a copy older than what it just did.  A
round's writes go to the store :data:`WRITE_BATCH` to a transaction
(:meth:`~cloudcore.store.base.Store.write_many`): each object still fails or succeeds
on its own and is its own watch event, but thousands of replicas cost a few commits.
What each round did and cost is reported to ``on_round`` (:class:`RoundStats`).

Usage (the composition root wires it)::

    controller = AppsController(store, AppsControllerConfig())
    await controller.start()
    ...
    await controller.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cloudcore.apps.config import AppsControllerConfig
from cloudcore.apps.informer import Informer
from cloudcore.apps.memo import Memo
from cloudcore.apps.plan import Memory, Plan, Snapshot, reconcile
from cloudcore.store.base import (
    Apply,
    Create,
    Delete,
    Store,
    UpdateStatus,
    Write,
    WriteResult,
)
from protocol.errors import AlreadyExists, Conflict, EdgefleetError, NotFound
from protocol.kinds.appreplicas import APP_REPLICA
from protocol.kinds.apps import APP
from protocol.kinds.core import NODE
from protocol.kinds.nodegroups import NODE_GROUP
from protocol.kinds.policies import OVERRIDE_POLICY, PROPAGATION_POLICY
from protocol.kinds.scheduling import QUEUE
from protocol.resources import dig, resource_version

log = logging.getLogger(__name__)

WATCHED_KINDS = (APP.kind, APP_REPLICA.kind, PROPAGATION_POLICY.kind, OVERRIDE_POLICY.kind,
                 NODE_GROUP.kind, NODE.kind, QUEUE.kind)
RETRY_SECONDS = 1.0
"""Pause after a round that failed unexpectedly, before trying again."""
WRITE_BATCH = 500
"""Writes per store transaction.  A commit costs about as much as a few hundred rows,
so this takes nearly all of the saving; and it keeps each batch far below the watch
queue limit of the store's watchers."""


@dataclass(frozen=True)
class RoundStats:
    """What one reconcile round did and what it cost (for metrics and benchmarks).
    ``plan_seconds``: the pure decision (:func:`reconcile`); ``write_seconds``: making
    its writes; ``apps``: the Apps the round looked at, ``apps_reused`` of them placed
    as the round before left them (nothing they depend on had changed)."""

    number: int
    apps: int
    apps_reused: int
    plan_seconds: float
    write_seconds: float
    creates: int
    updates: int
    deletes: int
    statuses: int

    @property
    def writes(self) -> int:
        return self.creates + self.updates + self.deletes + self.statuses


def _wall() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class AppsController:
    def __init__(self, store: Store, config: AppsControllerConfig | None = None, *,
                 clock: Callable[[], float] | None = None,
                 on_round: Callable[[RoundStats], None] | None = None) -> None:
        self._store = store
        self._on_round = on_round
        self.config = config or AppsControllerConfig()
        self._clock = clock or time.monotonic
        self._informer = Informer(store, WATCHED_KINDS, self.trigger)
        self._memo = Memo()
        self._memory = Memory()
        self._deadline: float | None = None
        self._last_round_seconds = 0.0
        self._written_rv = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._round_lock = asyncio.Lock()
        self.rounds = 0
        """Reconcile rounds completed, writes included (for metrics and tests)."""

    async def start(self) -> None:
        """List everything, then reconcile in the background until :meth:`stop`."""
        await self._informer.start()
        self._task = asyncio.create_task(self._run(), name="apps-controller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._informer.stop()

    def trigger(self) -> None:
        """Ask for a round soon (the informer calls this on every change)."""
        self._wake.set()

    # ---- the loop --------------------------------------------------------------------

    def _sleep_for(self) -> float | None:
        if self._deadline is None:
            return None
        return min(self.config.recheck_seconds, max(0.0, self._deadline - self._clock()))

    def _gather_seconds(self) -> float:
        config = self.config
        return max(config.debounce_seconds,
                   min(self._last_round_seconds, config.max_debounce_seconds))

    def _deadline_due(self) -> bool:
        return self._deadline is not None and self._clock() >= self._deadline

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._sleep_for())
            if self._wake.is_set():
                # Let the rest of a burst (a big apply, a node flapping) land first - the
                # longer, the longer the last round took (see AppsControllerConfig).
                await asyncio.sleep(self._gather_seconds())
                self._wake.clear()
            elif not self._deadline_due():
                continue
            try:
                await self.reconcile_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("apps reconcile failed; retrying in %.0f s", RETRY_SECONDS)
                await asyncio.sleep(RETRY_SECONDS)
                self._wake.set()

    async def reconcile_once(self) -> None:
        """Plan one round from the informer's copy and make its writes (rounds never
        overlap, however this is called)."""
        async with self._round_lock:
            await self._round()

    async def _round(self) -> None:
        try:
            async with asyncio.timeout(self.config.sync_timeout_seconds):
                await self._informer.wait_for(self._written_rv)
        except TimeoutError:
            log.warning("apps informer has not seen rv %d yet; planning from an older copy",
                        self._written_rv)
        informer = self._informer
        snapshot = Snapshot(
            apps=informer.objects(APP.kind),
            replicas=informer.objects(APP_REPLICA.kind),
            propagation_policies=informer.objects(PROPAGATION_POLICY.kind),
            override_policies=informer.objects(OVERRIDE_POLICY.kind),
            node_groups=informer.objects(NODE_GROUP.kind),
            nodes=informer.objects(NODE.kind),
            queues=informer.objects(QUEUE.kind),
        )
        started = time.perf_counter()
        plan = reconcile(snapshot, self._memory, self._clock(), self.config, self._memo,
                         _wall())
        planned = time.perf_counter()
        self._memory = plan.memory
        self._deadline = plan.next_deadline
        await self._execute(plan)
        self._last_round_seconds = time.perf_counter() - started
        self.rounds += 1
        stats = RoundStats(self.rounds, len(snapshot.apps), plan.reused, planned - started,
                           time.perf_counter() - planned, len(plan.creates),
                           len(plan.updates), len(plan.deletes), len(plan.statuses))
        log.debug("apps round %d: %d created, %d updated, %d deleted, %d statuses; "
                  "planned in %.1f ms, written in %.1f ms", stats.number, stats.creates,
                  stats.updates, stats.deletes, stats.statuses, stats.plan_seconds * 1000,
                  stats.write_seconds * 1000)
        if self._on_round is not None:
            self._on_round(stats)

    # ---- writes ----------------------------------------------------------------------

    def _wrote(self, obj: dict[str, Any]) -> None:
        self._written_rv = max(self._written_rv, resource_version(obj))

    async def _execute(self, plan: Plan) -> None:
        """The plan's writes, in its order, :data:`WRITE_BATCH` to a transaction (one
        durable commit each instead of one per object); the event loop runs between
        batches, so watchers - this controller's informer among them - keep up."""
        writes: list[Write] = [
            *(Delete(APP_REPLICA.kind, dig(o, "metadata.namespace"), str(dig(o, "metadata.name")))
              for o in plan.deletes),
            *(Apply(o) for o in plan.updates),
            *(Create(o) for o in plan.creates),
            *(UpdateStatus(w.kind, w.namespace, w.name, w.status) for w in plan.statuses),
        ]
        for start in range(0, len(writes), WRITE_BATCH):
            if start:
                await asyncio.sleep(0)
            batch = writes[start:start + WRITE_BATCH]
            try:
                results = await self._store.write_many(batch)
            except EdgefleetError as exc:
                # The store as a whole refused (full, failing): none of these were made;
                # the next round plans them again.
                log.error("could not write %d objects: %s", len(batch), exc)
                continue
            for write, result in zip(batch, results, strict=True):
                self._outcome(write, result)

    def _outcome(self, write: Write, result: WriteResult) -> None:
        if not isinstance(result, EdgefleetError):
            self._wrote(result)
            return
        what, kind, name = _describe(write)
        if isinstance(result, NotFound | AlreadyExists | Conflict):
            # Someone else moved first (the edge, a user, a deletion): plan again.
            log.debug("%s %s %s raced: %s", what, kind, name, result)
            self.trigger()
            return
        log.error("could not %s %s %s: %s", what, kind, name, result)


def _describe(write: Write) -> tuple[str, str, str]:
    """(what, kind, name) of a write, for logs."""
    if isinstance(write, Create | Apply):
        verb = "create" if isinstance(write, Create) else "update"
        return verb, str(write.obj.get("kind")), str(dig(write.obj, "metadata.name"))
    verb = "delete" if isinstance(write, Delete) else "write the status of"
    return verb, write.kind, write.name
