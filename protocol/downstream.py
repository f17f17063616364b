"""The cloud's per-node downstream queue (pure: no clock, no socket).

It keeps only the newest version of each object addressed to one node — an older
version offered after a newer one is dropped, a newer one replaces what is queued,
a delete is never dropped in favour of an older upsert.  Each queued version is sent,
then waits for the edge's ``ack`` (which the edge sends only once the object is durably
in its sqlite cache); an unacked send is repeated after ``ack_timeout``.  The caller
supplies ``now`` (a monotonic float) so tests drive time by hand.

On reconnect the edge reports what it holds; :func:`resync_diff` computes exactly the
difference against what the node should hold, and :meth:`DownstreamQueue.restart`
forgets everything in flight and takes the holdings as the acked baseline.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocol.envelope import Envelope, ObjectRef, Op, make, new_id
from protocol.resources import ObjectKey, key_of, resource_version


@dataclass
class _Pending:
    ref: ObjectRef
    rv: int
    obj: dict[str, Any] | None  # None: a delete
    envelope_id: str
    sent_at: float | None = None
    sends: int = 0


class DownstreamQueue:
    def __init__(self, *, ack_timeout: float = 5.0, window: int = 256) -> None:
        self.ack_timeout = ack_timeout
        self.window = window
        self._pending: OrderedDict[ObjectKey, _Pending] = OrderedDict()
        self._by_envelope: dict[str, ObjectKey] = {}
        # Newest version the edge has confirmed per key (KubeEdge's ObjectSync), so a
        # duplicate offer of something already delivered is not sent again.
        self._acked: dict[ObjectKey, int] = {}
        self.resends = 0

    # ---- offers ------------------------------------------------------------------

    def offer_upsert(self, obj: Mapping[str, Any]) -> bool:
        key = key_of(obj)
        meta = obj["metadata"]
        ref = ObjectRef(kind=str(obj["kind"]), namespace=meta.get("namespace"), name=meta["name"])
        return self._offer(key, ref, resource_version(obj), dict(obj))

    def offer_delete(self, ref: ObjectRef, rv: int) -> bool:
        return self._offer(ref.key, ref, rv, None)

    def _offer(self, key: ObjectKey, ref: ObjectRef, rv: int, obj: dict[str, Any] | None) -> bool:
        if rv <= self._acked.get(key, 0):
            return False
        current = self._pending.get(key)
        if current is not None:
            if rv <= current.rv:
                return False
            self._by_envelope.pop(current.envelope_id, None)
        entry = _Pending(ref=ref, rv=rv, obj=obj, envelope_id=new_id())
        self._pending[key] = entry
        self._pending.move_to_end(key)
        self._by_envelope[entry.envelope_id] = key
        return True

    # ---- sending -----------------------------------------------------------------

    def due(self, now: float, ts: int) -> list[Envelope]:
        """Envelopes to write now: never-sent entries (up to the in-flight window) and
        entries whose ack is overdue.  Marks them sent at ``now``."""
        out: list[Envelope] = []
        inflight = sum(1 for p in self._pending.values() if p.sent_at is not None)
        for entry in self._pending.values():
            if entry.sent_at is None:
                if inflight >= self.window:
                    continue
                inflight += 1
            elif now - entry.sent_at < self.ack_timeout:
                continue
            else:
                self.resends += 1
            entry.sent_at = now
            entry.sends += 1
            out.append(self._envelope(entry, ts))
        return out

    def _envelope(self, entry: _Pending, ts: int) -> Envelope:
        if entry.obj is None:
            return make(Op.DELETE, ts=ts, ref=entry.ref, rv=entry.rv, id=entry.envelope_id)
        return make(Op.UPSERT, ts=ts, ref=entry.ref, rv=entry.rv, body=entry.obj,
                    id=entry.envelope_id)

    def next_deadline(self) -> float | None:
        """When the earliest in-flight entry becomes due for a resend."""
        times = [p.sent_at for p in self._pending.values() if p.sent_at is not None]
        return min(times) + self.ack_timeout if times else None

    def has_unsent(self) -> bool:
        return any(p.sent_at is None for p in self._pending.values())

    # ---- acks and reconnects --------------------------------------------------------

    def ack(self, envelope_id: str) -> ObjectKey | None:
        """The edge holds the version sent as ``envelope_id``.  An ack for a version
        that has since been superseded changes nothing but the baseline."""
        key = self._by_envelope.pop(envelope_id, None)
        if key is None:
            return None
        entry = self._pending.pop(key)
        self._acked[key] = max(self._acked.get(key, 0), entry.rv)
        return key

    def restart(self, holdings: Mapping[str, int]) -> None:
        """A new session: nothing is in flight any more and the edge's own report of
        what it holds is the baseline."""
        self._pending.clear()
        self._by_envelope.clear()
        self._acked = {ObjectKey(k): int(v) for k, v in holdings.items()}

    def forget(self, key: ObjectKey) -> None:
        """The node dropped out of scope entirely (used when the node is deleted)."""
        entry = self._pending.pop(key, None)
        if entry is not None:
            self._by_envelope.pop(entry.envelope_id, None)
        self._acked.pop(key, None)

    def __len__(self) -> int:
        return len(self._pending)

    def pending_keys(self) -> list[ObjectKey]:
        return list(self._pending)


def resync_diff(
    holdings: Mapping[str, int], desired: Mapping[str, int]
) -> tuple[list[str], list[str]]:
    """Exactly what a node must receive: keys it lacks or holds at an older version
    (to upsert) and keys it holds that it should not (to delete).  Sorted, so the
    result is deterministic."""
    upserts = sorted(k for k, rv in desired.items() if holdings.get(k, -1) < rv)
    deletes = sorted(k for k in holdings if k not in desired)
    return upserts, deletes
