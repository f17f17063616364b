"""The mapper runtime: everything a protocol driver should not have to write.

A driver implements :class:`Driver` (connect, read, write, close, state) for one
protocol.  The runtime registers with edgecore over DMI, receives its Devices (and
later changes to them), and for every device runs:

* a collect loop per distinct ``collectCycle`` (ms): the properties sharing a cycle are
  read in one ``read`` call, so a driver can coalesce them (Modbus reads contiguous
  registers in one request).  Loops of different devices with the same cycle are
  staggered over the cycle (``mappers.sdk.schedule``) so they do not all poll at once;
  a driver whose devices share media (serial lines, gateways) says which ones do by
  implementing :class:`ScheduleGroups`, and each group is spread on its own;
* a report loop every ``reportCycle`` (the shortest among ``reportToCloud`` properties):
  the latest values go to edgecore with ReportDeviceStatus;
* desired -> write: a property's ``desired.value`` is written when it differs from
  what was last written successfully, and retried every collect cycle until it is; a
  new or updated device writes (and reads) at once rather than at its scheduled time;
* state: ``online`` once a read succeeds, ``offline`` when the device cannot be
  reached (the driver raises :class:`DeviceUnreachable`), reported on change.

Each device runs in its own tasks: one device failing never stops another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from mappers.sdk.dmi import ManagerClient, MapperServer, ModelOp
from mappers.sdk.schedule import next_poll_at, stagger

log = logging.getLogger(__name__)

DEFAULT_CYCLE_MS = 1000


class DeviceUnreachable(Exception):
    """Raised by a driver when the whole device cannot be reached."""


class Driver(Protocol):
    async def connect(self, device: Mapping[str, Any], model: Mapping[str, Any] | None) -> Any:
        """Prepare a device; returns the driver's handle for it.  Raise ValueError (or
        an EdgefleetError) for a device whose configuration is wrong."""
        ...

    async def read(self, handle: Any, properties: Sequence[str]) -> dict[str, str | Exception]:
        """Current values of ``properties`` as twin strings; a failing property maps to
        its exception.  Raise :class:`DeviceUnreachable` if the device did not answer."""
        ...

    async def write(self, handle: Any, prop: str, value: str) -> None: ...

    async def close(self, handle: Any) -> None: ...


@runtime_checkable
class ScheduleGroups(Protocol):
    """Optional for a :class:`Driver`: which devices share a medium.  The collect loops
    of one group (with one cycle) are spread evenly over that cycle; without this, all
    of a mapper's devices form one group."""

    def schedule_group(self, handle: Any) -> Hashable:
        """The medium ``handle``'s device is reached through (e.g. its serial port)."""
        ...


@dataclass
class _DeviceRun:
    device: dict[str, Any]
    handle: Any
    group: Hashable = None
    latest: dict[str, str] = field(default_factory=dict)
    written: dict[str, str] = field(default_factory=dict)
    state: str = "unknown"
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


_Slot = tuple[Hashable, int]  # (schedule group, collect cycle in ms)


@dataclass
class _Lane:
    """The devices of one group polling with one cycle, and the grid they share."""

    epoch: float
    members: list[tuple[str, str]] = field(default_factory=list)
    offsets_ms: dict[tuple[str, str], int] = field(default_factory=dict)


def _props(device: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list((device.get("spec") or {}).get("properties") or [])


def _key(device: Mapping[str, Any]) -> tuple[str, str]:
    meta = device["metadata"]
    return meta.get("namespace") or "default", meta["name"]


class MapperRuntime:
    def __init__(self, driver: Driver, manager: ManagerClient) -> None:
        self._driver = driver
        self._manager = manager
        self._models: dict[tuple[str, str], dict[str, Any]] = {}
        self._runs: dict[tuple[str, str], _DeviceRun] = {}
        self._lanes: dict[_Slot, _Lane] = {}
        self._lock = asyncio.Lock()

    # ---- lifecycle -----------------------------------------------------------------

    async def start(self, server: MapperServer) -> None:
        await server.start()
        devices, models = await self._manager.register(with_data=True)
        for model in models:
            meta = model["metadata"]
            self._models[(meta.get("namespace") or "default", meta["name"])] = model
        for device in devices:
            await self.on_register_device(device)

    async def stop(self) -> None:
        for key in list(self._runs):
            await self._stop_device(key)

    # ---- DeviceHandler (edgecore -> mapper) -------------------------------------------

    async def on_register_device(self, device: dict[str, Any]) -> None:
        async with self._lock:
            key = _key(device)
            model_name = ((device.get("spec") or {}).get("deviceModelRef") or {}).get("name")
            model = self._models.get((key[0], model_name)) if model_name else None
            try:
                # Connect before stopping the device's old run, so that a connection the
                # driver shares between devices (a serial line) stays open across an
                # update instead of being closed and reopened for every desired value.
                handle = await self._driver.connect(device, model)
            except Exception:
                if key not in self._runs:
                    raise
                # The old run may be what stands in the way (e.g. it holds the serial
                # line open with other settings): without it, try once more.
                await self._stop_device(key)
                handle = await self._driver.connect(device, model)
            else:
                await self._stop_device(key, keep_lanes=True)
            run = _DeviceRun(device=device, handle=handle)
            if isinstance(self._driver, ScheduleGroups):
                try:
                    run.group = self._driver.schedule_group(handle)
                except Exception:
                    with contextlib.suppress(Exception):
                        await self._driver.close(handle)
                    self._set_lanes(key, set())
                    raise
            self._runs[key] = run
            self._start_loops(key, run)
            log.info("device %s/%s: polling %d properties", *key, len(_props(device)))

    async def on_update_device(self, device: dict[str, Any]) -> None:
        await self.on_register_device(device)

    async def on_remove_device(self, namespace: str, name: str) -> None:
        async with self._lock:
            await self._stop_device((namespace, name))

    async def on_model(self, op: ModelOp, namespace: str, name: str,
                       model: dict[str, Any] | None) -> None:
        if model is None:
            self._models.pop((namespace, name), None)
        else:
            self._models[(namespace, name)] = model

    def get_device(self, namespace: str, name: str) -> dict[str, Any] | None:
        run = self._runs.get((namespace, name))
        return run.device if run else None

    async def _stop_device(self, key: tuple[str, str], *, keep_lanes: bool = False) -> None:
        """Stop a device's loops and close its handle; ``keep_lanes`` keeps its places in
        the poll schedule for the run that replaces it."""
        run = self._runs.pop(key, None)
        if run is None:
            return
        for task in run.tasks:
            task.cancel()
        await asyncio.gather(*run.tasks, return_exceptions=True)
        if not keep_lanes:
            self._set_lanes(key, set())
        with contextlib.suppress(Exception):
            await self._driver.close(run.handle)

    # ---- the schedule ----------------------------------------------------------------

    def _set_lanes(self, key: tuple[str, str], slots: set[_Slot], now: float = 0.0) -> None:
        """Make ``key`` a member of exactly the lanes ``slots`` and re-spread the lanes it
        joins or leaves (a lane created now starts its grid at ``now``).  A device keeps
        its place in a lane it stays in."""
        for slot, lane in list(self._lanes.items()):
            if slot in slots or key not in lane.members:
                continue
            lane.members.remove(key)
            if lane.members:
                lane.offsets_ms = stagger(lane.members, slot[1])
            else:
                del self._lanes[slot]
        for slot in slots:
            if slot not in self._lanes:
                self._lanes[slot] = _Lane(epoch=now)
            lane = self._lanes[slot]
            if key not in lane.members:
                lane.members.append(key)
                lane.offsets_ms = stagger(lane.members, slot[1])

    def _next_poll(self, key: tuple[str, str], slot: _Slot, now: float,
                   last: float | None) -> float:
        lane = self._lanes.get(slot)
        if lane is None:  # not expected while the loop runs; poll on a grid of its own
            lane = _Lane(epoch=now if last is None else last)
        return next_poll_at(now, epoch=lane.epoch, offset=lane.offsets_ms.get(key, 0) / 1000,
                            period=slot[1] / 1000, last=last)

    # ---- the loops -----------------------------------------------------------------

    def _start_loops(self, key: tuple[str, str], run: _DeviceRun) -> None:
        groups: dict[int, list[str]] = {}
        for prop in _props(run.device):
            cycle = int(prop.get("collectCycle") or DEFAULT_CYCLE_MS)
            if cycle <= 0:
                cycle = DEFAULT_CYCLE_MS
            groups.setdefault(cycle, []).append(prop["name"])
        # The first device of a lane has offset 0 on a grid starting now: it polls at
        # once.  Later ones wait for their place, at most one cycle.
        joined = asyncio.get_running_loop().time()
        self._set_lanes(key, {(run.group, cycle) for cycle in groups}, joined)
        for cycle, names in groups.items():
            run.tasks.append(asyncio.create_task(
                self._collect(key, run, (run.group, cycle), names, joined)))
        reporting = [p for p in _props(run.device) if p.get("reportToCloud")]
        if reporting:
            cycle = min(int(p.get("reportCycle") or DEFAULT_CYCLE_MS) for p in reporting)
            run.tasks.append(asyncio.create_task(
                self._report(key, run, cycle, [p["name"] for p in reporting])))

    async def _collect(self, key: tuple[str, str], run: _DeviceRun, slot: _Slot,
                       names: list[str], joined: float) -> None:
        loop = asyncio.get_running_loop()
        last: float | None = None
        if self._pending_desired(run, names):
            # A desired value (a new device's, or one just changed) is not kept waiting
            # for the device's place in the schedule: write it, and read, now.
            last = loop.time()
            await self._poll(key, run, names)
        while True:
            # The schedule is looked up every time: offsets move as devices come and go.
            at = self._next_poll(key, slot, joined if last is None else loop.time(), last)
            await asyncio.sleep(max(0.0, at - loop.time()))
            last = at
            await self._poll(key, run, names)

    async def _poll(self, key: tuple[str, str], run: _DeviceRun, names: list[str]) -> None:
        """Write pending desired values, then read ``names``."""
        try:
            await self._write_desired(key, run, names)
            values = await self._driver.read(run.handle, names)
            for name, value in values.items():
                if isinstance(value, Exception):
                    log.warning("device %s/%s property %s: %s", *key, name, value)
                else:
                    run.latest[name] = value
            await self._set_state(key, run, "online")
        except DeviceUnreachable as exc:
            log.warning("device %s/%s unreachable: %s", *key, exc)
            await self._set_state(key, run, "offline")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("device %s/%s: collect failed", *key)

    @staticmethod
    def _pending_desired(run: _DeviceRun, names: list[str]) -> list[tuple[str, str]]:
        """(property, desired value) of ``names`` not yet written as desired."""
        pending = []
        for prop in _props(run.device):
            name, desired = prop["name"], (prop.get("desired") or {}).get("value")
            if name not in names or desired in (None, ""):
                continue
            if run.written.get(name) != str(desired):
                pending.append((name, str(desired)))
        return pending

    async def _write_desired(self, key: tuple[str, str], run: _DeviceRun,
                             names: list[str]) -> None:
        for name, desired in self._pending_desired(run, names):
            try:
                await self._driver.write(run.handle, name, desired)
            except DeviceUnreachable:
                raise
            except Exception as exc:
                log.warning("device %s/%s: writing %s=%s failed: %s", *key, name, desired, exc)
                continue
            run.written[name] = desired
            log.info("device %s/%s: wrote desired %s=%s", *key, name, desired)

    async def _report(self, key: tuple[str, str], run: _DeviceRun, cycle_ms: int,
                      names: list[str]) -> None:
        desired = {p["name"]: (p.get("desired") or {}).get("value") for p in _props(run.device)}
        while True:
            await asyncio.sleep(cycle_ms / 1000)
            twins = []
            for name in names:
                if name not in run.latest:
                    continue
                twin: dict[str, Any] = {"propertyName": name,
                                        "reported": {"value": run.latest[name], "metadata": {}}}
                if desired.get(name):
                    twin["observedDesired"] = {"value": desired[name], "metadata": {}}
                twins.append(twin)
            if not twins:
                continue
            try:
                await self._manager.report_status(key[0], key[1], twins)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("device %s/%s: report to edgecore failed: %s", *key, exc)

    async def _set_state(self, key: tuple[str, str], run: _DeviceRun, state: str) -> None:
        if run.state == state:
            return
        try:
            await self._manager.report_state(key[0], key[1], state)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("device %s/%s: state report failed: %s", *key, exc)
            return
        run.state = state
        log.info("device %s/%s is %s", *key, state)
