"""Replica status upstream, only when it changed.

Each report is a write to the durable outbox and then to the cloud's store: a replica
that is simply running says so once.  The comparison starts from the status the cache
already holds for the object (what the cloud last accepted from us), so an edgecore
restart does not resend what nothing changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from protocol.envelope import ObjectRef
from protocol.errors import StoreFull
from protocol.kinds.appreplicas import AppReplicaStatus

log = logging.getLogger(__name__)

ReportStatus = Callable[[ObjectRef, dict[str, Any]], None]
"""``report_status(ref, status)``: queue an object's latest status for the cloud
(:meth:`edgecore.hub.HubClient.report_status`)."""


def status_body(status: AppReplicaStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", exclude_none=True)


class ChangeOnlyReporter:
    def __init__(self, report: ReportStatus) -> None:
        self._report = report
        self._last: dict[str, dict[str, Any]] = {}
        self.sent = 0

    def seed(self, ref: ObjectRef, status: Any) -> None:
        """What the cloud holds already, unless we have reported since."""
        if ref.key not in self._last and isinstance(status, dict):
            self._last[ref.key] = status

    def report(self, ref: ObjectRef, status: AppReplicaStatus) -> bool:
        """Send ``status`` if it differs from the last one; returns whether it was sent."""
        body = status_body(status)
        if self._last.get(ref.key) == body:
            return False
        try:
            self._report(ref, body)
        except StoreFull as exc:
            # Not remembered: the next report of this object sends it again.  Raising
            # would break the replica's supervision over a status message.
            log.warning("edged: the status of %s was not queued: %s", ref.key, exc)
            return False
        self._last[ref.key] = body
        self.sent += 1
        return True

    def forget(self, ref: ObjectRef) -> None:
        self._last.pop(ref.key, None)
