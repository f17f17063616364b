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
device's ``reportToCloud`` properties.  After every resync with the cloud every
device's full status is queued again, so values reported while the cloud was away
arrive (latest per property) and desired values changed meanwhile have already come
down with the resync.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from edgecore.meta import CacheEvent, MetaCache
from edgecore.twin.store import DeviceRecord, TwinStore
from protocol.envelope import ObjectRef
from protocol.events import EventType
from protocol.kinds.devices import device_model_name, device_node
from protocol.resources import make_key
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
    apply_desired_from_cloud,
    apply_edge_update,
    apply_state_update,
    build_delta_message,
    build_document,
    build_get_result,
    desired_from_spec,
    report_request,
    status_twins,
)
from protocol.twin_messages import (
    MembershipDevice,
    MembershipGetResult,
    MembershipUpdated,
    StateUpdateRequest,
    TwinError,
    TwinUpdateRequest,
    device_not_found,
    parse_get_request,
    parse_state_update,
    parse_update_request,
)

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], Awaitable[None]]
Upstream = Callable[[ObjectRef, dict[str, Any]], None]
DeviceListener = Callable[[str, dict[str, Any] | None, dict[str, Any] | None], Awaitable[None]]

DEFAULT_REPORT_CYCLE_MS = 1000


def _key(namespace: str, name: str) -> str:
    return make_key("Device", namespace, name)


def _event_id() -> str:
    return uuid.uuid4().hex


class DeviceTwins:
    def __init__(self, node: str, cache: MetaCache, store: TwinStore, *,
                 publish: Publish, upstream: Upstream,
                 clock: Callable[[], float] = time.time) -> None:
        self.node = node
        self._cache = cache
        self._store = store
        self._publish = publish
        self._upstream = upstream
        self._clock = clock
        self._records: dict[str, DeviceRecord] = store.load()
        self._last_upload: dict[str, float] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._task: asyncio.Task[None] | None = None
        # Called with (protocol, old device, new device) when a device appears, changes
        # or goes; the DMI side uses it to tell the mapper.
        self.device_listeners: list[DeviceListener] = []

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        watch = self._cache.subscribe()
        for device in self._cache.list("Device"):
            await self._on_device(None, device)
        known = {_key(d["metadata"]["namespace"], d["metadata"]["name"])
                 for d in self._cache.list("Device")}
        for stale in [k for k in self._records if k not in known]:
            self._records.pop(stale)
            self._store.drop(stale)
        self._task = asyncio.create_task(self._follow(watch), name="twin-cache-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for timer in self._timers.values():
            timer.cancel()

    def subscriptions(self) -> list[str]:
        return list(SUBSCRIPTIONS)

    async def _follow(self, watch: Any) -> None:
        async for event in watch:
            try:
                await self._on_cache_event(event)
            except Exception:
                log.exception("twin: handling %s %s failed", event.type, event.key)

    # ---- the cloud's side: Devices and their desired values -------------------------------

    def _device(self, namespace: str, name: str) -> dict[str, Any] | None:
        device = self._cache.get("Device", namespace, name)
        if device is None or device_node(device) != self.node:
            return None
        return device

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
            document = build_document(before, after, sorted(changed), event_id=_event_id(),
                                      now_ms=now)
            if document is not None:
                await self._publish(device_topic(ns, name, TopicAction.TWIN_UPDATE_DOCUMENT),
                                    document.to_json())
            delta = build_delta_message(after, event_id=_event_id(), now_ms=now)
            if delta is not None:
                await self._publish(device_topic(ns, name, TopicAction.TWIN_UPDATE_DELTA),
                                    delta.to_json())
            self._schedule_upload(key, device)
        if added:
            await self._publish(node_topic(self.node, TopicAction.MEMBERSHIP_UPDATED),
                                MembershipUpdated(event_id=_event_id(), timestamp=now,
                                                  added_devices=[self._member(device)]).to_json())
        for listener in self.device_listeners:
            await listener(key, previous, device)

    async def _on_device_gone(self, device: dict[str, Any]) -> None:
        ns, name = device["metadata"]["namespace"], device["metadata"]["name"]
        key = _key(ns, name)
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

    def edge_update(self, namespace: str, name: str, request: TwinUpdateRequest) -> Any:
        """Apply one twin update (from MQTT or a mapper); returns the outcome, already
        persisted when accepted."""
        key = _key(namespace, name)
        device = self._device(namespace, name)
        record = self._records.get(key) if device is not None else None
        outcome = apply_edge_update(record.twin if record else None, request, self.now_ms())
        if outcome.error is None and record is not None and device is not None:
            record = DeviceRecord(outcome.twin, record.state, record.last_online)
            self._records[key] = record
            if outcome.changed:
                self._store.save(key, record)
                self._schedule_upload(key, device)
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
        await self._after_update(namespace, name, outcome)

    async def report_state(self, namespace: str, name: str, state: str) -> None:
        outcome = self._state(namespace, name,
                              StateUpdateRequest(event_id=_event_id(), timestamp=0, state=state))
        if outcome.error is not None:
            raise outcome.error.to_exception()

    def _state(self, namespace: str, name: str, request: Any) -> Any:
        key = _key(namespace, name)
        device = self._device(namespace, name)
        record = self._records.get(key) if device is not None else None
        outcome = apply_state_update(name if record else None, request, self.now_ms())
        if outcome.error is None and record is not None and device is not None:
            # Only a change of state is stored and reported: a mapper repeating "online"
            # every cycle must not become a disk write and an upload every cycle.
            if outcome.state != record.state:
                record = DeviceRecord(record.twin, outcome.state or record.state,
                                      outcome.last_online or "")
                self._records[key] = record
                self._store.save(key, record)
                self._schedule_upload(key, device)
        return outcome

    async def _after_update(self, namespace: str, name: str, outcome: Any) -> None:
        if outcome.document is not None:
            await self._publish(device_topic(namespace, name, TopicAction.TWIN_UPDATE_DOCUMENT),
                                outcome.document.to_json())
        if outcome.delta is not None:
            await self._publish(device_topic(namespace, name, TopicAction.TWIN_UPDATE_DELTA),
                                outcome.delta.to_json())

    async def on_mqtt(self, topic: str, payload: bytes) -> None:
        match = parse_topic(topic)
        if match is None:
            return
        try:
            await self._dispatch(match, payload)
        except Exception:
            log.exception("twin: handling %s failed", topic)

    async def _dispatch(self, match: TopicMatch, payload: bytes) -> None:
        reply_to = reply_topic(match)
        if reply_to is None or (match.node is not None and match.node != self.node):
            return  # not a request, or another node's membership
        answer, outcome = self._answer(match, payload)
        if isinstance(answer, TwinError):
            answer = answer.to_result(self.now_ms())
        await self._publish(reply_to, answer.to_json())
        if outcome is not None and outcome.error is None:
            await self._after_update(match.namespace or "", match.name or "", outcome)

    def _answer(self, match: TopicMatch, payload: bytes) -> tuple[Any, Any]:
        """The reply to one request (a result model or a TwinError) and, for an
        accepted twin update, its outcome (whose delta and document follow the reply)."""
        ns, name = match.namespace or "", match.name or ""
        if match.action is TopicAction.TWIN_UPDATE:
            request = parse_update_request(payload)
            if isinstance(request, TwinError):
                return request, None
            outcome = self.edge_update(ns, name, request)
            return outcome.result, outcome
        if match.action is TopicAction.STATE_UPDATE:
            state = parse_state_update(payload)
            return (state if isinstance(state, TwinError)
                    else self._state(ns, name, state).result), None
        get = parse_get_request(payload)  # twin/get and membership/get
        if isinstance(get, TwinError):
            return get, None
        if match.action is TopicAction.MEMBERSHIP_GET:
            devices = [self._member(d) for d in self._cache.list("Device")
                       if device_node(d) == self.node]
            return MembershipGetResult(event_id=get.event_id, timestamp=self.now_ms(),
                                       devices=devices), None
        record = self._records.get(_key(ns, name)) if self._device(ns, name) else None
        if record is None:
            return device_not_found(f"{ns}/{name}", get.event_id), None
        return build_get_result(record.twin, event_id=get.event_id, now_ms=self.now_ms()), None

    # ---- reported values to the cloud ---------------------------------------------------

    def _report_cycle(self, device: Mapping[str, Any]) -> float:
        cycles = [
            int(p.get("reportCycle") or DEFAULT_REPORT_CYCLE_MS)
            for p in (device.get("spec") or {}).get("properties") or []
            if p.get("reportToCloud", True) is not False
        ]
        return (min(cycles) if cycles else DEFAULT_REPORT_CYCLE_MS) / 1000

    def _schedule_upload(self, key: str, device: Mapping[str, Any]) -> None:
        if key in self._timers:
            return  # an upload is already due; it will carry the latest values
        cycle = self._report_cycle(device)
        wait = max(0.0, self._last_upload.get(key, float("-inf")) + cycle - self._clock())
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(wait, self._upload, key)

    def _upload(self, key: str) -> None:
        self._timers.pop(key, None)
        record = self._records.get(key)
        _, ns, name = key.split("/", 2)
        device = self._device(ns, name)
        if record is None or device is None:
            return
        reported_props = {
            p["name"] for p in (device.get("spec") or {}).get("properties") or []
            if p.get("reportToCloud", True) is not False
        }
        status: dict[str, Any] = {"twins": status_twins(record.twin, names=reported_props)}
        if record.state and record.state != "unknown":
            status["state"] = record.state
        if record.last_online:
            status["lastOnlineTime"] = record.last_online
        self._upstream(ObjectRef(kind="Device", namespace=ns, name=name), status)
        self._last_upload[key] = self._clock()

    def resync_all(self) -> None:
        """After a resync with the cloud: queue every device's full status again."""
        for key in list(self._records):
            _, ns, name = key.split("/", 2)
            device = self._device(ns, name)
            if device is not None:
                self._schedule_upload(key, device)

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
