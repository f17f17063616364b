"""DeviceTwin on the edge: the KubeEdge MQTT topics, DMI reports, desired values from
the cloud and reported values to it.

Sources of change, all funnelled through the pure algebra in :mod:`protocol.twin`:

* the cloud: a Device in the meta cache carries ``spec.properties[].desired`` (cloud
  wins for desired values) — applied on every cache event and once at start;
* device apps on MQTT: ``$hw/events/device/<ns>/<name>/twin/update`` and friends, each
  answered on its ``/result`` topic, with ``/delta`` and ``/document`` as KubeEdge does;
* mappers over DMI: ReportDeviceStatus / ReportDeviceStates.

Every accepted change is written to sqlite before it is answered.  Reported values and
the device state go up as the Device's ``status`` through the outbox (coalesced per
device, so only the latest leaves), paced by the shortest ``reportCycle`` of the
device's ``reportToCloud`` properties.  A device that has not reported for a cycle
reports its first change at once; a busy one waits out its cycle, rounded up to the
next ``REPORT_TICK``, so busy devices come due together and their statuses go up in one
outbox transaction and one ``statuses`` frame.  After every resync with the cloud every
device's full status is queued again, so values reported while the cloud was away
arrive (latest per property) and desired values changed meanwhile have already come
down with the resync.

MQTT requests are queued (at most ``max_queued``; a full queue makes the bus wait, which
backs the broker up until it sheds or holds back publishers) and handled a batch at a
time by one worker, in arrival order: every request of the batch is applied, the
changed devices are written in one sqlite transaction, and only then are the replies
published, result first, then document and delta, as before.  A reply topic nobody
subscribes to (``listened``) is not even serialised.  This node's Devices are indexed
in memory from the cache's events, so a request costs no cache read.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple

from edgecore.meta import CacheEvent, MetaCache
from edgecore.twin.store import DeviceRecord, TwinStore
from protocol.envelope import ObjectRef
from protocol.errors import StoreFull
from protocol.events import EventType
from protocol.kinds.devices import device_model_name, device_node
from protocol.resources import make_key
from protocol.routes import UPLOAD_FILTER
from protocol.topics import (
    SUBSCRIPTIONS,
    TopicAction,
    TopicMatch,
    device_topic,
    node_topic,
    parse_topic,
    reply_topic,
)
from protocol.twin import (
    StateOutcome,
    UpdateOutcome,
    apply_desired_from_cloud,
    apply_edge_update,
    apply_state_update,
    build_get_result,
    delta_payload,
    desired_from_spec,
    document_payload,
    report_request,
    status_twins,
)
from protocol.twin_messages import (
    MembershipDevice,
    MembershipGetResult,
    MembershipUpdated,
    StateUpdateRequest,
    TwinError,
    TwinErrorCode,
    TwinUpdateRequest,
    device_not_found,
    parse_get_request,
    parse_state_update,
    parse_update_request,
)

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], Awaitable[None]]
Upstream = Callable[[list[tuple[ObjectRef, dict[str, Any]]]], None]
"""Queues the statuses of several Devices for the cloud, all or none."""
DeviceListener = Callable[[str, dict[str, Any] | None, dict[str, Any] | None], Awaitable[None]]
Listened = Callable[[str], bool]

DEFAULT_REPORT_CYCLE_MS = 1000
REPORT_TICK = 0.05
"""Seconds: busy devices' uploads are due on multiples of this (or of their reportCycle
when it is shorter).  Per status, a frame, an ack and a cloud commit of their own cost
more than the status itself (docs/benchmarks.md, Twin pipeline); the tick adds at most
50 ms to a value that has already waited out a reportCycle."""
_TOPIC_CACHE_LIMIT = 4096  # request topics whose parse is remembered (a few per device)
DEFAULT_MAX_QUEUED = 16
MAX_BATCH = 16
STORE_FAILED = "the twin store could not save the change"

class _RequestTopic(NamedTuple):
    """A request topic, parsed once: what it asks, where it is answered, which device."""

    match: TopicMatch
    reply_to: str
    key: str


# A request's answer before it is published: a ready payload, or an update/state outcome
# whose success depends on the batch's commit.
_Answer = bytes | UpdateOutcome | StateOutcome


def _key(namespace: str, name: str) -> str:
    return make_key("Device", namespace, name)


def _event_id() -> str:
    return uuid.uuid4().hex


def _reported_properties(device: Mapping[str, Any]) -> set[str]:
    """The properties whose values go up in the Device's status (``reportToCloud``)."""
    return {p["name"] for p in (device.get("spec") or {}).get("properties") or []
            if p.get("reportToCloud", True) is not False}


class DeviceTwins:
    def __init__(self, node: str, cache: MetaCache, store: TwinStore, *,
                 publish: Publish, upstream: Upstream,
                 clock: Callable[[], float] = time.time,
                 listened: Listened | None = None,
                 max_queued: int = DEFAULT_MAX_QUEUED) -> None:
        if max_queued < 1:
            raise ValueError("max_queued must be at least 1")
        self.node = node
        self._cache = cache
        self._store = store
        self._publish = publish
        self._upstream = upstream
        self._clock = clock
        # Whether anyone subscribes to a topic; messages to nobody are not built.
        self._listened: Listened = listened or (lambda _topic: True)
        self._records: dict[str, DeviceRecord] = store.load()
        # This node's Devices as the cache's events left them, by key, and the names of
        # their reportToCloud properties.
        self._devices: dict[str, dict[str, Any]] = {}
        self._reported: dict[str, set[str]] = {}
        self._last_upload: dict[str, float] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._uploads: list[tuple[str, ObjectRef, dict[str, Any]]] = []  # due this turn
        self._upload_due: set[str] = set()  # changed for the cloud, not yet committed
        self._task: asyncio.Task[None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._requests: deque[tuple[_RequestTopic, bytes]] = deque()
        # Per request topic: its parse, reply topic and device key; per device: its
        # document and delta topics.  Every request used to parse and format them again.
        self._request_topics: dict[str, _RequestTopic | None] = {}
        self._follow_up_topics: dict[tuple[str, str], tuple[str, str]] = {}
        self._max_queued = max_queued
        self._has_requests = asyncio.Event()
        self._request_room = asyncio.Event()
        self._stopped = False
        # Called with (protocol, old device, new device) when a device appears, changes
        # or goes; the DMI side uses it to tell the mapper.
        self.device_listeners: list[DeviceListener] = []

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        watch = self._cache.subscribe()
        await self._relist(prune_store=True)
        self._task = asyncio.create_task(self._follow(watch), name="twin-cache-watch")
        self._worker = asyncio.create_task(self._work(), name="twin-requests")

    async def stop(self) -> None:
        self._stopped = True
        self._request_room.set()
        for task in (self._task, self._worker):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for timer in self._timers.values():
            timer.cancel()
        if self._requests:
            log.warning("twin: stopped with %d MQTT requests unanswered", len(self._requests))

    def subscriptions(self) -> list[str]:
        # Uploads are the router's (edgecore/router.py): a bus keeps one handler per
        # filter, so the twin subscribing too would only be silently replaced.
        return [f for f in SUBSCRIPTIONS if f != UPLOAD_FILTER]

    async def _follow(self, watch: Any) -> None:
        while True:
            async for event in watch:
                try:
                    await self._on_cache_event(event)
                except Exception:
                    log.exception("twin: handling %s %s failed", event.type, event.key)
            if not watch.dropped:
                return  # the cache was closed
            # The cache dropped us for falling behind (a flood): read everything again.
            log.warning("twin: fell behind the cache's events; reading every Device again")
            watch = self._cache.subscribe()
            try:
                await self._relist(prune_store=False)
            except Exception:
                log.exception("twin: re-reading the Devices failed")

    async def _relist(self, *, prune_store: bool) -> None:
        """Bring the index, records and listeners in line with the cache's Devices."""
        seen: set[str] = set()
        for device in self._cache.list("Device"):
            key = _key(device["metadata"]["namespace"], device["metadata"]["name"])
            seen.add(key)
            await self._on_device(self._devices.get(key), device)
        for key in [k for k in self._devices if k not in seen]:
            await self._on_device_gone(self._devices[key])
        if prune_store:
            for stale in [k for k in self._records if k not in seen]:
                self._records.pop(stale)
                self._store.drop(stale)

    # ---- the cloud's side: Devices and their desired values -------------------------------

    def _device(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._devices.get(_key(namespace, name))

    def _model_spec(self, device: Mapping[str, Any]) -> Mapping[str, Any] | None:
        model = device_model_name(device)
        if not model:
            return None
        found = self._cache.get("DeviceModel", device["metadata"]["namespace"], model)
        return found.get("spec") if found else None

    async def _on_cache_event(self, event: CacheEvent) -> None:
        kind = event.object.get("kind")
        if kind == "Device":
            if event.type is EventType.DELETED:
                await self._on_device_gone(event.object)
            else:
                await self._on_device(event.previous, event.object)
        elif kind == "DeviceModel" and event.type is not EventType.DELETED:
            ns = event.object["metadata"]["namespace"]
            for device in self._cache.list("Device", ns):
                if device_model_name(device) == event.object["metadata"]["name"]:
                    await self._on_device(device, device)

    async def _on_device(self, previous: dict[str, Any] | None, device: dict[str, Any]) -> None:
        ns, name = device["metadata"]["namespace"], device["metadata"]["name"]
        key = _key(ns, name)
        if device_node(device) == self.node:
            self._devices[key] = device
            self._reported[key] = _reported_properties(device)
        else:
            self._devices.pop(key, None)
            self._reported.pop(key, None)
        record = self._records.get(key)
        added = record is None
        if record is None:
            record = DeviceRecord(twin={})
        desired = desired_from_spec(device.get("spec") or {}, self._model_spec(device))
        now = self.now_ms()
        before = record.twin
        after, changed = apply_desired_from_cloud(before, desired, now)
        if changed or added:
            record = DeviceRecord(after, record.state, record.last_online)
            self._records[key] = record
            self._store.save(key, record)
        if changed:
            topic = device_topic(ns, name, TopicAction.TWIN_UPDATE_DOCUMENT)
            if self._listened(topic):
                document = document_payload(before, after, sorted(changed),
                                            event_id=_event_id(), now_ms=now)
                if document is not None:
                    await self._publish(topic, document)
            topic = device_topic(ns, name, TopicAction.TWIN_UPDATE_DELTA)
            if self._listened(topic):
                delta = delta_payload(after, event_id=_event_id(), now_ms=now)
                if delta is not None:
                    await self._publish(topic, delta)
            self._schedule_upload(key)
        if added:
            await self._publish(node_topic(self.node, TopicAction.MEMBERSHIP_UPDATED),
                                MembershipUpdated(event_id=_event_id(), timestamp=now,
                                                  added_devices=[self._member(device)]).to_json())
        for listener in self.device_listeners:
            await listener(key, previous, device)

    async def _on_device_gone(self, device: dict[str, Any]) -> None:
        ns, name = device["metadata"]["namespace"], device["metadata"]["name"]
        key = _key(ns, name)
        self._devices.pop(key, None)
        self._reported.pop(key, None)
        if self._records.pop(key, None) is None:
            return
        self._store.drop(key)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        await self._publish(node_topic(self.node, TopicAction.MEMBERSHIP_UPDATED),
                            MembershipUpdated(event_id=_event_id(), timestamp=self.now_ms(),
                                              removed_devices=[self._member(device)]).to_json())
        for listener in self.device_listeners:
            await listener(key, device, None)

    def _member(self, device: Mapping[str, Any]) -> MembershipDevice:
        meta = device["metadata"]
        record = self._records.get(_key(meta["namespace"], meta["name"]))
        return MembershipDevice(
            id=f"{meta['namespace']}/{meta['name']}", name=meta["name"],
            description=(meta.get("labels") or {}).get("description"),
            state=record.state if record else None,
            last_online=record.last_online if record else None,
        )

    # ---- edge updates: MQTT and DMI ----------------------------------------------------

    def _apply_update(self, namespace: str, name: str, request: TwinUpdateRequest,
                      *, parsed: bool = False) -> tuple[UpdateOutcome, str | None]:
        """Apply one twin update in memory; returns the outcome and the device's key if
        its record changed (to be stored before anyone is told).  ``parsed``: the request
        comes from parse_update_request (its charset is checked)."""
        key = _key(namespace, name)
        device = self._devices.get(key)
        record = self._records.get(key) if device is not None else None
        outcome = apply_edge_update(record.twin if record else None, request, self.now_ms(),
                                    charset_checked=parsed)
        if outcome.error is None and record is not None and device is not None:
            self._records[key] = DeviceRecord(outcome.twin, record.state, record.last_online)
            if outcome.changed:
                # The cloud's status carries only reportToCloud properties: a change to
                # others is stored, and not uploaded.
                if not outcome.changed.isdisjoint(self._reported.get(key, ())):
                    self._upload_due.add(key)
                return outcome, key
        return outcome, None

    def _apply_state(self, namespace: str, name: str,
                     request: StateUpdateRequest) -> tuple[StateOutcome, str | None]:
        key = _key(namespace, name)
        record = self._records.get(key) if key in self._devices else None
        outcome = apply_state_update(name if record else None, request, self.now_ms())
        # Only a change of state is stored and reported: a mapper repeating "online"
        # every cycle must not become a disk write and an upload every cycle.
        if outcome.error is None and record is not None and outcome.state != record.state:
            self._records[key] = DeviceRecord(record.twin, outcome.state or record.state,
                                              outcome.last_online or "")
            self._upload_due.add(key)
            return outcome, key
        return outcome, None

    def _commit(self, prior: Mapping[str, DeviceRecord | None]) -> TwinError | None:
        """Store the records of the keys in ``prior`` (their state before the change) in
        one transaction and schedule the uploads that are due.  On failure the records
        go back to ``prior``, nothing is uploaded, and the error to answer is returned
        (507 with the cap when the store is full)."""
        if not prior:
            return None
        try:
            self._store.save_many([(key, self._records[key]) for key in prior])
        except Exception as exc:
            if isinstance(exc, StoreFull):
                log.warning("twin: %s; %d devices' changes refused", exc, len(prior))
                failure = TwinError(TwinErrorCode.STORE_FULL, exc.message)
            else:
                log.exception("twin: storing %d devices failed; their changes are undone",
                              len(prior))
                failure = TwinError(TwinErrorCode.INTERNAL, STORE_FAILED)
            for key, record in prior.items():
                self._upload_due.discard(key)
                if record is None:
                    self._records.pop(key, None)
                else:
                    self._records[key] = record
            return failure
        for key in prior:
            if key in self._upload_due:
                self._upload_due.discard(key)
                self._schedule_upload(key)
        return None

    def edge_update(self, namespace: str, name: str, request: TwinUpdateRequest) -> Any:
        """Apply one twin update (from a mapper); returns the outcome, already persisted
        when accepted (raises if it cannot be)."""
        prior = self._records.get(_key(namespace, name))
        outcome, changed = self._apply_update(namespace, name, request)
        failure = self._commit({changed: prior}) if changed is not None else None
        if failure is not None:
            raise failure.to_exception()
        return outcome

    async def report_status(self, namespace: str, name: str,
                            twins: list[dict[str, Any]]) -> None:
        """DMI ReportDeviceStatus: the mapper's reported values (its observedDesired is
        not trusted as desired: it may be stale)."""
        reported = {
            str(t["propertyName"]): str((t.get("reported") or {}).get("value", ""))
            for t in twins if t.get("propertyName") and (t.get("reported") or {}).get("value")
            not in (None, "")
        }
        if not reported:
            raise TwinError(400, "the report carries no reported value").to_exception()
        outcome = self.edge_update(namespace, name, report_request(
            reported, event_id=_event_id(), timestamp=self.now_ms()))
        if outcome.error is not None:
            raise outcome.error.to_exception()
        for topic, payload in self._follow_ups(namespace, name, outcome):
            await self._publish(topic, payload)

    async def report_state(self, namespace: str, name: str, state: str) -> None:
        prior = self._records.get(_key(namespace, name))
        outcome, changed = self._apply_state(
            namespace, name, StateUpdateRequest(event_id=_event_id(), timestamp=0, state=state))
        if outcome.error is not None:
            raise outcome.error.to_exception()
        failure = self._commit({changed: prior}) if changed is not None else None
        if failure is not None:
            raise failure.to_exception()

    def _follow_ups(self, namespace: str, name: str,
                    outcome: UpdateOutcome) -> list[tuple[str, bytes]]:
        """The document and delta an accepted update publishes, in that order."""
        out: list[tuple[str, bytes]] = []
        topics = self._follow_up_topics.get((namespace, name))
        if topics is None:
            if len(self._follow_up_topics) >= _TOPIC_CACHE_LIMIT:
                self._follow_up_topics.clear()
            topics = self._follow_up_topics[namespace, name] = (
                device_topic(namespace, name, TopicAction.TWIN_UPDATE_DOCUMENT),
                device_topic(namespace, name, TopicAction.TWIN_UPDATE_DELTA))
        topic = topics[0]
        if self._listened(topic):
            document = outcome.document_payload()
            if document is not None:
                out.append((topic, document))
        topic = topics[1]
        if self._listened(topic):
            delta = outcome.delta_payload()
            if delta is not None:
                out.append((topic, delta))
        return out

    # ---- MQTT requests: queued, then answered a batch at a time -------------------------

    async def on_mqtt(self, topic: str, payload: bytes) -> None:
        """The bus handler: queue a request (waiting while the queue is full)."""
        request = self._request_topic(topic)
        if request is None:
            return  # not a request, or another node's membership
        while len(self._requests) >= self._max_queued and not self._stopped:
            self._request_room.clear()
            await self._request_room.wait()
        if self._stopped:
            return
        self._requests.append((request, payload))
        self._has_requests.set()

    def _request_topic(self, topic: str) -> _RequestTopic | None:
        """A request topic's parse, where it is answered and its device's key; None for a
        topic that is not a request of this node's."""
        try:
            return self._request_topics[topic]
        except KeyError:
            pass
        match = parse_topic(topic)
        reply_to = None if match is None else reply_topic(match)
        found = None
        if (match is not None and reply_to is not None
                and (match.node is None or match.node == self.node)):
            found = _RequestTopic(match, reply_to, _key(match.namespace or "", match.name or ""))
        if len(self._request_topics) >= _TOPIC_CACHE_LIMIT:
            self._request_topics.clear()
        self._request_topics[topic] = found
        return found

    async def _work(self) -> None:
        requests = self._requests
        while True:
            if not requests:
                self._has_requests.clear()
                await self._has_requests.wait()
                continue
            batch = [requests.popleft() for _ in range(min(len(requests), MAX_BATCH))]
            self._request_room.set()
            try:
                replies = self._answer_batch(batch)
            except Exception:
                log.exception("twin: a batch of %d MQTT requests failed", len(batch))
                continue
            for topic, payload in replies:
                try:
                    await self._publish(topic, payload)
                except Exception:
                    log.exception("twin: publishing to %s failed", topic)

    def _answer_batch(self, batch: list[tuple[_RequestTopic, bytes]]) -> list[tuple[str, bytes]]:
        """Apply every request, store what changed in one transaction, then return the
        replies to publish (nothing is answered before the commit)."""
        answers: list[tuple[TopicMatch, str, _Answer, str]] = []
        prior: dict[str, DeviceRecord | None] = {}
        for (match, reply_to, key), payload in batch:
            try:
                before = self._records.get(key)
                answer, changed = self._answer(match, payload)
                if changed is not None and changed not in prior:
                    prior[changed] = before
                answers.append((match, reply_to, answer, key))
            except Exception:
                log.exception("twin: handling a request on %s failed", match.action)
        failure = self._commit(prior)
        replies: list[tuple[str, bytes]] = []
        for match, reply_to, answer, key in answers:
            if isinstance(answer, bytes):
                if self._listened(reply_to):
                    replies.append((reply_to, answer))
                continue
            if failure is not None and key in prior:
                # Its device's changes in this batch were undone: none is acknowledged.
                error = TwinError(failure.code, failure.reason, answer.result.event_id)
                replies.append((reply_to, error.to_result(self.now_ms()).to_json()))
                continue
            if self._listened(reply_to):
                replies.append((reply_to, answer.result_payload()
                                if isinstance(answer, UpdateOutcome)
                                else answer.result.to_json()))
            if isinstance(answer, UpdateOutcome) and answer.error is None:
                replies.extend(self._follow_ups(match.namespace or "", match.name or "",
                                                answer))
        return replies

    def _answer(self, match: TopicMatch, payload: bytes) -> tuple[_Answer, str | None]:
        """One request's answer, applied in memory, and the key of the device record it
        changed (None if none)."""
        ns, name = match.namespace or "", match.name or ""
        if match.action is TopicAction.TWIN_UPDATE:
            request = parse_update_request(payload)
            if isinstance(request, TwinError):
                return request.to_result(self.now_ms()).to_json(), None
            return self._apply_update(ns, name, request, parsed=True)
        if match.action is TopicAction.STATE_UPDATE:
            state = parse_state_update(payload)
            if isinstance(state, TwinError):
                return state.to_result(self.now_ms()).to_json(), None
            return self._apply_state(ns, name, state)
        get = parse_get_request(payload)  # twin/get and membership/get
        if isinstance(get, TwinError):
            return get.to_result(self.now_ms()).to_json(), None
        if match.action is TopicAction.MEMBERSHIP_GET:
            devices = [self._member(d) for d in sorted(
                self._devices.values(),
                key=lambda d: (d["metadata"]["namespace"], d["metadata"]["name"]))]
            return MembershipGetResult(event_id=get.event_id, timestamp=self.now_ms(),
                                       devices=devices).to_json(), None
        record = self._records.get(_key(ns, name)) if self._device(ns, name) else None
        if record is None:
            return (device_not_found(f"{ns}/{name}", get.event_id)
                    .to_result(self.now_ms()).to_json()), None
        return build_get_result(record.twin, event_id=get.event_id,
                                now_ms=self.now_ms()).to_json(), None

    # ---- reported values to the cloud ---------------------------------------------------

    def _report_cycle(self, device: Mapping[str, Any]) -> float:
        cycles = [
            int(p.get("reportCycle") or DEFAULT_REPORT_CYCLE_MS)
            for p in (device.get("spec") or {}).get("properties") or []
            if p.get("reportToCloud", True) is not False
        ]
        return (min(cycles) if cycles else DEFAULT_REPORT_CYCLE_MS) / 1000

    def _schedule_upload(self, key: str) -> None:
        device = self._devices.get(key)
        if device is None or key in self._timers:
            return  # gone, or an upload is already due; it will carry the latest values
        cycle = self._report_cycle(device)
        wait = max(0.0, self._last_upload.get(key, float("-inf")) + cycle - self._clock())
        loop = asyncio.get_running_loop()
        if wait <= 0:
            self._timers[key] = loop.call_later(0, self._upload, key)
            return
        tick = min(REPORT_TICK, cycle)
        due = math.ceil((loop.time() + wait) / tick) * tick
        self._timers[key] = loop.call_at(due, self._upload, key)

    def _upload(self, key: str) -> None:
        """Build the device's status now; it is queued with the others due this turn
        of the event loop (timers due at the same tick run in the same turn)."""
        self._timers.pop(key, None)
        record = self._records.get(key)
        device = self._devices.get(key)
        if record is None or device is None:
            return
        _, ns, name = key.split("/", 2)
        reported = self._reported.get(key)
        if reported is None:
            reported = _reported_properties(device)
        status: dict[str, Any] = {"twins": status_twins(record.twin, names=reported)}
        if record.state and record.state != "unknown":
            status["state"] = record.state
        if record.last_online:
            status["lastOnlineTime"] = record.last_online
        self._last_upload[key] = self._clock()
        if not self._uploads:
            asyncio.get_running_loop().call_soon(self._queue_uploads)
        self._uploads.append((key, ObjectRef(kind="Device", namespace=ns, name=name), status))

    def _queue_uploads(self) -> None:
        uploads, self._uploads = self._uploads, []
        if not uploads:
            return
        try:
            self._upstream([(ref, status) for _, ref, status in uploads])
        except StoreFull as exc:
            # The values are safe in the twin store; try again a report cycle later (the
            # outbox drains as the cloud acks, and every resync queues them anyway).
            log.warning("twin: the statuses of %d device(s) wait: %s", len(uploads), exc)
            for key, _, _ in uploads:
                self._schedule_upload(key)

    def resync_all(self) -> None:
        """After a resync with the cloud: queue every device's full status again."""
        for key in list(self._records):
            self._schedule_upload(key)

    # ---- DMI backend ---------------------------------------------------------------

    def devices_for_protocol(self, protocol: str) -> tuple[list[dict[str, Any]],
                                                           list[dict[str, Any]]]:
        devices = [d for d in self._cache.list("Device") if device_node(d) == self.node
                   and ((d.get("spec") or {}).get("protocol") or {}).get("protocolName")
                   == protocol]
        models: dict[str, dict[str, Any]] = {}
        for device in devices:
            model = device_model_name(device)
            ns = device["metadata"]["namespace"]
            found = self._cache.get("DeviceModel", ns, model) if model else None
            if found is not None:
                models[f"{ns}/{model}"] = found
        return devices, list(models.values())

    def register_mapper(self, info: dict[str, Any]) -> None:
        self._store.save_mapper({k: (v.decode() if isinstance(v, bytes) else v)
                                 for k, v in info.items()})
