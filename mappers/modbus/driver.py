"""The Modbus driver behind the mapper runtime: one shared :class:`Bus` per physical
bus (TCP endpoint or serial port), coalesced reads per device, typed writes."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mappers.modbus.bus import Bus, BusError, BusPool, DeviceUnavailable
from mappers.modbus.codec import to_twin
from mappers.modbus.config import DeviceConfig, parse_device
from mappers.modbus.points import read_properties, write_property
from mappers.sdk.runtime import DeviceUnreachable


@dataclass
class ModbusHandle:
    config: DeviceConfig
    bus: Bus


class ModbusDriver:
    def __init__(self, pool: BusPool | None = None) -> None:
        self.pool = pool or BusPool()

    async def connect(self, device: Mapping[str, Any],
                      model: Mapping[str, Any] | None) -> ModbusHandle:
        config = parse_device(device.get("spec") or {}, (model or {}).get("spec"))
        return ModbusHandle(config, self.pool.acquire(config.protocol))

    def schedule_group(self, handle: ModbusHandle) -> Hashable:
        """Devices on one bus are polled staggered over their cycle (``ScheduleGroups``)."""
        return self.pool.key(handle.config.protocol)

    async def read(self, handle: ModbusHandle,
                   properties: Sequence[str]) -> dict[str, str | Exception]:
        props = [p for p in handle.config.properties if p.name in properties]
        outcomes = await read_properties(handle.bus, handle.config.protocol.slave_id, props)
        out: dict[str, str | Exception] = {}
        unreachable: DeviceUnavailable | None = None
        for name, outcome in outcomes.items():
            if isinstance(outcome, DeviceUnavailable):
                unreachable = outcome
            elif isinstance(outcome, Exception):
                out[name] = outcome  # this property fails (e.g. an illegal address)
            else:
                out[name] = to_twin(outcome)
        if unreachable is not None and not any(isinstance(v, str) for v in out.values()):
            raise DeviceUnreachable(str(unreachable))
        return out

    async def write(self, handle: ModbusHandle, prop: str, value: str) -> None:
        try:
            await write_property(handle.bus, handle.config.protocol.slave_id,
                                 handle.config.prop(prop), value)
        except DeviceUnavailable as exc:
            raise DeviceUnreachable(str(exc)) from exc
        except BusError:
            raise

    async def close(self, handle: ModbusHandle) -> None:
        await self.pool.release(handle.config.protocol)
