"""Rule status: success and failure counts and the latest errors.

Deliveries only bump in-memory deltas; a flush every ``interval`` seconds adds them to
the Rule's stored ``status`` in one write per rule, so a message burst costs a handful
of store writes rather than one per message.  A rule deleted meanwhile loses its
deltas quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from cloudcore.store.base import Store
from protocol.errors import Conflict, NotFound
from protocol.resources import resource_version

log = logging.getLogger(__name__)

MAX_ERRORS = 10

Name = tuple[str, str]


@dataclass
class _Delta:
    success: int = 0
    fail: int = 0
    errors: list[str] = field(default_factory=list)
    # The rule's current resolution error (None: resolvable); replaces the stored one.
    route_error: str | None = None
    route_error_changed: bool = False


class RuleCounters:
    def __init__(self, store: Store, interval: float = 1.0) -> None:
        self._store = store
        self._interval = interval
        self._pending: dict[Name, _Delta] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def success(self, rule: Name) -> None:
        self._delta(rule).success += 1

    def failure(self, rule: Name, error: str) -> None:
        delta = self._delta(rule)
        delta.fail += 1
        delta.errors = [*delta.errors, error][-MAX_ERRORS:]

    def route_error(self, rule: Name, error: str | None) -> None:
        """The rule became unusable (``error``) or usable again (None)."""
        delta = self._delta(rule)
        delta.route_error, delta.route_error_changed = error, True

    def _delta(self, rule: Name) -> _Delta:
        self._wake.set()
        return self._pending.setdefault(rule, _Delta())

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="rule-status")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()  # what was counted before a clean stop is kept

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()
            await asyncio.sleep(self._interval)

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for (ns, name), delta in pending.items():
            try:
                await self._write(ns, name, delta)
            except NotFound:
                pass
            except Exception:
                log.exception("could not update the status of rule %s/%s", ns, name)

    async def _write(self, ns: str, name: str, delta: _Delta) -> None:
        for _ in range(5):  # read-modify-write guarded by the version read; retry a race
            obj = await self._store.get("Rule", ns, name)
            status = dict(obj.get("status") or {})
            status["successMessages"] = int(status.get("successMessages") or 0) + delta.success
            status["failMessages"] = int(status.get("failMessages") or 0) + delta.fail
            errors = list(status.get("errors") or [])
            if delta.route_error_changed:
                errors = [e for e in errors if not e.startswith(ROUTE_PREFIX)]
                if delta.route_error:
                    errors.append(ROUTE_PREFIX + delta.route_error)
            errors = [*errors, *delta.errors][-MAX_ERRORS:]
            status["errors"] = errors
            try:
                await self._store.update_status("Rule", ns, name, status,
                                                expected_rv=resource_version(obj))
                return
            except Conflict:
                continue


# Marks the error that says why a rule cannot route at all, as opposed to a delivery
# failure; it is replaced (or removed) when the rule or its endpoints change.
ROUTE_PREFIX = "invalid rule: "
