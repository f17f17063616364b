"""The apps controller: the loop that turns Apps into AppReplicas.

It keeps an informer over every kind placement reads, and reconciles - plans a round
with :func:`cloudcore.apps.plan.reconcile` and makes its writes - after changes (a
burst of them gathered for ``debounce_seconds``) and when a deadline falls due
(failover toleration, deleting replicas on lost nodes).  Deadlines are on ``clock``, a
parameter, so tests can move time; while one is pending the clock is read every
``recheck_seconds``.

Before each round the controller waits until its informer has seen the controller's
own last writes, so a round never plans from a copy older than what it just did.

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
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from cloudcore.apps.config import AppsControllerConfig
from cloudcore.apps.informer import Informer
from cloudcore.apps.plan import Memory, Plan, Snapshot, reconcile
from cloudcore.apps.policies import PolicyBook
from cloudcore.store.base import Store
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


def _wall() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class AppsController:
    def __init__(self, store: Store, config: AppsControllerConfig | None = None, *,
                 clock: Callable[[], float] | None = None) -> None:
        self._store = store
        self.config = config or AppsControllerConfig()
        self._clock = clock or time.monotonic
        self._informer = Informer(store, WATCHED_KINDS, self.trigger)
        self._policies = PolicyBook()
        self._memory = Memory()
        self._deadline: float | None = None
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

    def _deadline_due(self) -> bool:
        return self._deadline is not None and self._clock() >= self._deadline

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._sleep_for())
            if self._wake.is_set():
                # Let the rest of a burst (a big apply, a node flapping) land first.
                await asyncio.sleep(self.config.debounce_seconds)
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
        plan = reconcile(snapshot, self._memory, self._clock(), self.config, self._policies,
                         _wall())
        self._memory = plan.memory
        self._deadline = plan.next_deadline
        await self._execute(plan)
        self.rounds += 1
        log.debug("apps round %d: %d created, %d updated, %d deleted, %d statuses in %.1f ms",
                  self.rounds, len(plan.creates), len(plan.updates), len(plan.deletes),
                  len(plan.statuses), (time.perf_counter() - started) * 1000)

    # ---- writes ----------------------------------------------------------------------

    def _wrote(self, obj: dict[str, Any]) -> None:
        self._written_rv = max(self._written_rv, resource_version(obj))

    async def _execute(self, plan: Plan) -> None:
        for obj in plan.deletes:
            await self._attempt("delete", obj, self._store.delete(
                APP_REPLICA.kind, dig(obj, "metadata.namespace"), str(dig(obj, "metadata.name"))))
        for obj in plan.updates:
            await self._attempt("update", obj, self._apply(obj))
        for obj in plan.creates:
            await self._attempt("create", obj, self._store.create(obj))
        for write in plan.statuses:
            name = {"metadata": {"namespace": write.namespace, "name": write.name},
                    "kind": write.kind}
            await self._attempt("status of", name, self._store.update_status(
                write.kind, write.namespace, write.name, write.status))

    async def _apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        stored, _ = await self._store.apply(obj)
        return stored

    async def _attempt(self, what: str, obj: dict[str, Any],
                       write: Awaitable[dict[str, Any]]) -> None:
        try:
            stored = await write
        except (NotFound, AlreadyExists, Conflict) as exc:
            # Someone else moved first (the edge, a user, a deletion): plan again.
            log.debug("%s %s %s raced: %s", what, obj.get("kind"),
                      dig(obj, "metadata.name"), exc)
            self.trigger()
            return
        except EdgefleetError as exc:
            log.error("could not %s %s %s: %s", what, obj.get("kind"),
                      dig(obj, "metadata.name"), exc)
            return
        self._wrote(stored)
