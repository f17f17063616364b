"""``efctl twin set DEVICE PROP=VALUE... [-n NS]``: change desired values.

A desired value lives in the Device's ``spec.properties[].desired.value`` (KubeEdge
v1beta1), so setting one is a read-modify-write of the Device with its
resourceVersion as a precondition; a concurrent change makes the write fail with 409
and it is retried on the fresh object.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from efctl.client import ApiClient
from efctl.commands import CommandError
from protocol.errors import Conflict, EdgefleetError
from protocol.kinds.devices import DEVICE

RETRIES = 5


def parse_assignments(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        prop, sep, value = item.partition("=")
        if not sep or not prop:
            raise CommandError(f"{item!r} is not PROPERTY=VALUE")
        if not value:
            raise CommandError(f"{prop}: a desired value cannot be empty")
        out[prop] = value
    if not out:
        raise CommandError("twin set needs at least one PROPERTY=VALUE")
    return out


def with_desired(device: dict[str, Any], values: dict[str, str]) -> dict[str, Any]:
    """The device with each named property's desired value replaced (pure)."""
    props = device.get("spec", {}).get("properties") or []
    names = [p.get("name") for p in props]
    unknown = [name for name in values if name not in names]
    if unknown:
        raise CommandError(
            f"device {device['metadata']['name']} has no property {', '.join(unknown)} "
            f"(its properties: {', '.join(str(n) for n in names) or 'none'})")
    new_props = []
    for prop in props:
        if prop.get("name") in values:
            desired = dict(prop.get("desired") or {})
            desired["value"] = values[prop["name"]]
            prop = {**prop, "desired": desired}
        new_props.append(prop)
    return {**device, "spec": {**device["spec"], "properties": new_props}}


def twin_set(client: ApiClient, name: str, items: list[str], *, namespace: str | None,
             out: TextIO = sys.stdout) -> None:
    values = parse_assignments(items)
    path = DEVICE.object_path(namespace or "default", name)
    for _attempt in range(RETRIES):
        try:
            current = client.get(path)
            updated = with_desired(current, values)
            updated.pop("status", None)
            client.put(path, updated)
        except Conflict:
            continue  # changed under us: read again and re-apply the same values
        except EdgefleetError as exc:
            raise CommandError(f"device {name}: {exc}") from None
        settings = " ".join(f"{k}={v}" for k, v in values.items())
        out.write(f"device.devices.kubeedge.io/{name} twin set: {settings}\n")
        return
    raise CommandError(f"device {name} kept changing; gave up after {RETRIES} attempts")
