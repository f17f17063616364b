"""Read and write a device's properties through its ``Bus``.

A poll reads the device's properties with as few requests as ``plan`` allows and
decodes each property on its own, so every property gets either a value or the error
that concerns it:

- a Modbus exception to a coalesced read (e.g. a gap holds an address the device does
  not implement) is retried one property per request, so only the bad property fails;
- a device that does not answer fails the rest of this poll at once with the same
  error, rather than holding the shared bus for one timeout per request.
"""

from __future__ import annotations

from collections.abc import Sequence

from mappers.modbus.bus import Bus, BusError, DeviceUnavailable, ExceptionReply
from mappers.modbus.codec import CodecError, RegisterKind, Value, decode, encode
from mappers.modbus.config import PropertyConfig
from mappers.modbus.plan import DEFAULT_MAX_GAP, Point, Read, plan_reads
from protocol.errors import Forbidden

Outcome = Value | BusError | CodecError
"""A property's reading: its value, or why it has none."""


class ReadOnlyProperty(Forbidden):
    """A write to a property that lives in a read-only table or is ReadOnly in its model."""


def points_of(props: Sequence[PropertyConfig]) -> list[Point]:
    return [Point(p.name, p.kind, p.offset, p.count) for p in props]


async def read_properties(bus: Bus, device_id: int, props: Sequence[PropertyConfig], *,
                          max_gap: int = DEFAULT_MAX_GAP) -> dict[str, Outcome]:
    """Every property of ``props`` (names unique) → its decoded value or its error."""
    by_name = {p.name: p for p in props}
    raw: dict[str, list[int] | BusError] = {}
    offline: DeviceUnavailable | None = None
    for read in plan_reads(points_of(props), max_gap=max_gap):
        if offline is not None:
            raw.update((p.key, offline) for p in read.points)
            continue
        try:
            raw.update(await _read(bus, device_id, read))
        except DeviceUnavailable as exc:
            offline = exc
            raw.update((p.key, exc) for p in read.points)
    results: dict[str, Outcome] = {}
    for name, values in raw.items():
        if isinstance(values, BusError):
            results[name] = values
            continue
        try:
            results[name] = decode(values, by_name[name].spec)
        except CodecError as exc:
            exc.field = exc.field or name
            results[name] = exc
    return results


async def _read(bus: Bus, device_id: int, read: Read) -> dict[str, list[int] | BusError]:
    """One planned read, sliced per property; a refused coalesced read is retried one
    property at a time.  ``DeviceUnavailable`` propagates: the device is gone."""
    try:
        return dict(read.split(await bus.read(device_id, read.kind, read.offset, read.count)))
    except DeviceUnavailable:
        raise
    except ExceptionReply as exc:
        if len(read.points) == 1:
            return {read.points[0].key: exc}
    except BusError as exc:
        return {p.key: exc for p in read.points}
    out: dict[str, list[int] | BusError] = {}
    for single in read.singles():
        try:
            values = await bus.read(device_id, single.kind, single.offset, single.count)
            out.update(single.split(values))
        except DeviceUnavailable:
            raise
        except BusError as exc:
            out[single.points[0].key] = exc
    return out


async def write_property(bus: Bus, device_id: int, prop: PropertyConfig, value: str) -> None:
    """Encode ``value`` (a twin's string form) and write it; ``CodecError`` if it does not
    fit the property, ``ReadOnlyProperty`` if the property cannot be written, ``BusError``
    if the device refused or did not answer."""
    if not prop.writable:
        why = ("its DeviceModel accessMode is ReadOnly" if prop.kind.is_writable
               else f"{prop.kind.value} is a read-only table")
        raise ReadOnlyProperty(f"property {prop.name!r} cannot be written: {why}",
                               field=prop.name)
    try:
        registers = encode(value, prop.spec)
    except CodecError as exc:
        exc.field = exc.field or prop.name
        raise
    if prop.kind is RegisterKind.COIL:
        await bus.write_coil(device_id, prop.offset, registers[0] != 0)
    else:
        await bus.write_registers(device_id, prop.offset, registers)
