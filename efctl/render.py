"""Turning objects into what ``efctl get`` and ``efctl describe`` print."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import yaml

from protocol.resources import KindInfo, dig

NONE = "<none>"


def object_ref(kind: KindInfo, name: str) -> str:
    """kubectl's ``device.devices.kubeedge.io/NAME`` (``node/NAME`` for core kinds)."""
    qualified = f"{kind.kind.lower()}.{kind.group}" if kind.group else kind.kind.lower()
    return f"{qualified}/{name}"


def parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def human_age(seconds: float) -> str:
    """Compact age in kubectl's style: 45s, 5m10s, 3h, 3h20m, 2d, 2d5h, 400d, 3y."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    return f"{d // 365}y"


def age_of(obj: Mapping[str, Any], now: datetime) -> str:
    created = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    return human_age((now - created).total_seconds()) if created else NONE


def node_status(obj: Mapping[str, Any]) -> str:
    """Ready / NotReady / Unknown from the Ready condition, plus SchedulingDisabled."""
    state = "Unknown"
    for cond in dig(obj, "status.conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == "Ready":
            state = {"True": "Ready", "False": "NotReady"}.get(str(cond.get("status")), "Unknown")
    if dig(obj, "spec.unschedulable") is True:
        state += ",SchedulingDisabled"
    return state


# Cells that are computed from the object rather than read at a path.
CELL_RENDERERS: dict[tuple[str, str], Callable[[Mapping[str, Any]], str]] = {
    ("Node", "STATUS"): node_status,
}


def cell(value: Any) -> str:
    if value is None or value == "" or value == [] or value == {}:
        return NONE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def table(
    kind: KindInfo, objects: Sequence[Mapping[str, Any]], *, wide: bool, all_namespaces: bool,
    now: datetime | None = None,
) -> str:
    now = now or datetime.now(UTC)
    columns = [c for c in kind.columns if wide or not c.wide_only]
    header = (["NAMESPACE"] if all_namespaces else []) + ["NAME"]
    header += [c.header for c in columns] + ["AGE"]
    rows = [header]
    for obj in objects:
        meta = obj.get("metadata") or {}
        row = [cell(meta.get("namespace"))] if all_namespaces else []
        row.append(cell(meta.get("name")))
        for col in columns:
            render = CELL_RENDERERS.get((kind.kind, col.header))
            row.append(render(obj) if render else cell(dig(obj, col.path)))
        row.append(age_of(obj, now))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["   ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def replica_table(app: Mapping[str, Any]) -> str:
    """One row per replica of an App (``get app NAME -o wide``): where it runs, how it
    is doing and, when it is not running, why."""
    replicas = (app.get("status") or {}).get("replicas") or []
    if not replicas:
        return ""
    rows = [["REPLICA", "NODE", "PHASE", "RESTARTS", "EXIT", "REASON", "MESSAGE"]]
    for r in sorted(replicas, key=lambda r: int(r.get("index") or 0)):
        rows.append([cell(r.get("index")), cell(r.get("node")), cell(r.get("phase")),
                     cell(r.get("restarts")), cell(r.get("lastExitCode")),
                     cell(r.get("reason")), cell(r.get("message"))])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["   ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def to_yaml(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, allow_unicode=True)


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def _indented(value: Any, indent: str = "  ") -> str:
    text = to_yaml(value).rstrip("\n")
    return "\n".join(indent + line for line in text.splitlines())


def _pairs(label: str, mapping: Any, width: int) -> list[str]:
    if not isinstance(mapping, Mapping) or not mapping:
        return [f"{label:<{width}}{NONE}"]
    items = [f"{k}={v}" for k, v in mapping.items()]
    return [f"{label if i == 0 else '':<{width}}{item}" for i, item in enumerate(items)]


def describe(kind: KindInfo, obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    width = 14
    lines = [f"{'Name:':<{width}}{meta.get('name', '')}"]
    if kind.namespaced:
        lines.append(f"{'Namespace:':<{width}}{meta.get('namespace', '')}")
    lines += _pairs("Labels:", meta.get("labels"), width)
    lines += _pairs("Annotations:", meta.get("annotations"), width)
    lines.append(f"{'API Version:':<{width}}{obj.get('apiVersion', '')}")
    lines.append(f"{'Kind:':<{width}}{obj.get('kind', '')}")
    system = {
        "Creation Timestamp": meta.get("creationTimestamp"),
        "Generation": meta.get("generation"),
        "Resource Version": meta.get("resourceVersion"),
        "UID": meta.get("uid"),
    }
    lines.append("Metadata:")
    lines += [f"  {k + ':':<{width + 6}}{cell(v)}" for k, v in system.items() if v is not None]
    for section in ("spec", "status"):
        value = obj.get(section)
        title = section.capitalize() + ":"
        if value in (None, {}, []):
            lines.append(f"{title:<{width}}{NONE}")
        else:
            lines.append(title)
            lines.append(_indented(value))
    return "\n".join(lines) + "\n"
