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
    # A delete because the object left this node's scope while it still exists: the
    # edge drops it without a tombstone, so the same version may come back later.
    evict: bool = False
    sent_at: float | None = None
    sends: int = 0


class DownstreamQueue:
    """Every operation is O(1) or O(entries it sends): a node resyncing thousands of
    objects must not cost a walk of the whole queue per ack."""

    def __init__(self, *, ack_timeout: float = 5.0, window: int = 256) -> None:
        self.ack_timeout = ack_timeout
        self.window = window
        self._pending: dict[ObjectKey, _Pending] = {}
        # Keys waiting for their first send, in the order they were offered.
        self._unsent: OrderedDict[ObjectKey, None] = OrderedDict()
        # Keys sent and not yet acked, oldest send first (the ack timeout is constant,
        # so the front is always the first one due for a resend).
        self._inflight: OrderedDict[ObjectKey, None] = OrderedDict()
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
        """The object was deleted at ``rv``: nothing older may reach the edge again."""
        return self._offer(ref.key, ref, rv, None)

    def offer_evict(self, ref: ObjectRef, rv: int) -> bool:
        """The object (still existing) left this node's scope.  Unlike a delete, it
        may come back at the very version the edge held before — a Device moved away
        and back, a DeviceModel or RuleEndpoint needed again — so once the eviction is
        offered the edge is no longer assumed to hold any version of it."""
        key = ref.key
        current = self._pending.get(key)
        if current is not None and current.obj is None:
            return False  # a delete or eviction is already on its way
        self._acked.pop(key, None)
        return self._offer(key, ref, rv, None, evict=True)

    def _offer(self, key: ObjectKey, ref: ObjectRef, rv: int, obj: dict[str, Any] | None,
               *, evict: bool = False) -> bool:
        if rv <= self._acked.get(key, 0):
            return False
        current = self._pending.get(key)
        if current is not None:
            # An object re-entering scope replaces its pending eviction, whatever the
            # versions say.
            if rv <= current.rv and not (current.evict and obj is not None):
                return False
            self._drop(key, current)
        entry = _Pending(ref=ref, rv=rv, obj=obj, envelope_id=new_id(), evict=evict)
        self._pending[key] = entry
        self._unsent[key] = None
        self._by_envelope[entry.envelope_id] = key
        return True

    def _drop(self, key: ObjectKey, entry: _Pending) -> None:
        self._by_envelope.pop(entry.envelope_id, None)
        self._unsent.pop(key, None)
        self._inflight.pop(key, None)
        del self._pending[key]

    # ---- sending -----------------------------------------------------------------

    def due(self, now: float, ts: int) -> list[Envelope]:
        """Envelopes to write now: entries whose ack is overdue, then never-sent
        entries up to the in-flight window.  Marks them sent at ``now``."""
        out: list[Envelope] = []
        overdue: list[ObjectKey] = []
        for key in self._inflight:
            sent_at = self._pending[key].sent_at
            if sent_at is None or now - sent_at < self.ack_timeout:
                break
            overdue.append(key)
        for key in overdue:
            self.resends += 1
            out.append(self._send(key, now, ts))
        while self._unsent and len(self._inflight) < self.window:
            key, _ = self._unsent.popitem(last=False)
            out.append(self._send(key, now, ts))
        return out

    def _send(self, key: ObjectKey, now: float, ts: int) -> Envelope:
        entry = self._pending[key]
        entry.sent_at = now
        entry.sends += 1
        self._inflight[key] = None
        self._inflight.move_to_end(key)
        if entry.obj is None:
            return make(Op.DELETE, ts=ts, ref=entry.ref, rv=entry.rv, id=entry.envelope_id,
                        body={"evict": True} if entry.evict else None)
        return make(Op.UPSERT, ts=ts, ref=entry.ref, rv=entry.rv, body=entry.obj,
                    id=entry.envelope_id)

    def next_deadline(self) -> float | None:
        """When the earliest in-flight entry becomes due for a resend."""
        for key in self._inflight:
            sent_at = self._pending[key].sent_at
            return None if sent_at is None else sent_at + self.ack_timeout
        return None

    def has_unsent(self) -> bool:
        return bool(self._unsent)

    # ---- acks and reconnects --------------------------------------------------------

    def ack(self, envelope_id: str) -> ObjectKey | None:
        """The edge holds the version sent as ``envelope_id``.  An ack for a version
        that has since been superseded changes nothing."""
        key = self._by_envelope.get(envelope_id)
        if key is None:
            return None
        entry = self._pending[key]
        self._drop(key, entry)
        if entry.evict:
            self._acked.pop(key, None)  # the edge holds nothing of it now
        else:
            self._acked[key] = max(self._acked.get(key, 0), entry.rv)
        return key

    def restart(self, holdings: Mapping[str, int]) -> None:
        """A new session: nothing is in flight any more and the edge's own report of
        what it holds is the baseline."""
        self._pending.clear()
        self._unsent.clear()
        self._inflight.clear()
        self._by_envelope.clear()
        self._acked = {ObjectKey(k): int(v) for k, v in holdings.items()}

    def forget(self, key: ObjectKey) -> None:
        """The node dropped out of scope entirely (used when the node is deleted)."""
        entry = self._pending.get(key)
        if entry is not None:
            self._drop(key, entry)
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
