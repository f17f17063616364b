"""?watch=true: one JSON event per line, in order, filtered, from now or from a
resourceVersion, and a 410 ERROR line when that history is gone."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from cloudcore.auth import Role
from tests.integration.api.api_harness import RunningApi, running_api
from tests.integration.api.api_objects import device, device_model, devices_path, models_path


def events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if line.strip():
            yield json.loads(line)


def summary(event: dict[str, Any]) -> tuple[str, str]:
    meta = event["object"]["metadata"]
    return event["type"], f"{meta.get('namespace', '')}/{meta['name']}"


def watch_count(api: RunningApi) -> int:
    async def count() -> int:
        return api.store.watch_count()
    return api.run(count())


def test_watch_starts_with_current_objects_then_follows_changes_in_order(
    api: RunningApi,
) -> None:
    viewer = api.user("vic", Role.VIEWER)
    with api.admin() as admin, api.client(viewer) as watcher:
        admin.put(devices_path(name="d0"), json=device("d0"))
        with watcher.stream("GET", devices_path(), params={"watch": "true"}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("application/x-ndjson")
            stream = events(r)
            first = next(stream)
            assert summary(first) == ("ADDED", "default/d0")
            assert first["object"]["spec"] == device("d0")["spec"]

            admin.put(devices_path(name="d1"), json=device("d1"))
            admin.put(devices_path(name="d1"), json=device("d1", report_cycle=5))
            admin.delete(devices_path(name="d1"))
            admin.put(devices_path("elsewhere", "x1"), json=device("x1", "elsewhere"))
            admin.put(models_path(name="m1"), json=device_model("m1"))
            admin.put(devices_path(name="d2"), json=device("d2"))

            got = [next(stream) for _ in range(4)]
            assert [summary(e) for e in got] == [
                ("ADDED", "default/d1"), ("MODIFIED", "default/d1"),
                ("DELETED", "default/d1"), ("ADDED", "default/d2"),
            ]
            assert got[1]["object"]["spec"]["properties"][0]["reportCycle"] == 5
            rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in got]
            assert rvs == sorted(rvs) and len(set(rvs)) == 4
        # The client went away: the server lets go of its watch.
        deadline = time.monotonic() + 10
        while watch_count(api) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watch_count(api) == 0


def test_watch_from_a_resource_version_replays_exactly_what_followed(api: RunningApi) -> None:
    with api.admin() as c:
        c.put(devices_path(name="before"), json=device("before"))
        rv = c.get(devices_path()).json()["metadata"]["resourceVersion"]
        c.put(devices_path(name="d1"), json=device("d1"))
        c.put(devices_path(name="d1"), json=device("d1", report_cycle=7))
        c.delete(devices_path(name="d1"))
        with c.stream("GET", devices_path(),
                      params={"watch": "true", "resourceVersion": rv}) as r:
            assert r.status_code == 200
            stream = events(r)
            assert [summary(next(stream)) for _ in range(3)] == [
                ("ADDED", "default/d1"), ("MODIFIED", "default/d1"), ("DELETED", "default/d1"),
            ]


def test_watch_filters_by_label_selector_across_namespaces(api: RunningApi) -> None:
    with api.admin() as c, c.stream(
        "GET", "/apis/devices.kubeedge.io/v1beta1/devices",
        params={"watch": "true", "labelSelector": "env=prod"},
    ) as r:
        stream = events(r)
        c.put(devices_path("ns-a", "dev-1"), json=device("dev-1", "ns-a", labels={"env": "dev"}))
        c.put(devices_path("ns-a", "prod-1"), json=device("prod-1", "ns-a", labels={"env": "prod"}))
        c.put(devices_path("ns-b", "prod-2"), json=device("prod-2", "ns-b", labels={"env": "prod"}))
        assert [summary(next(stream)) for _ in range(2)] == [
            ("ADDED", "ns-a/prod-1"), ("ADDED", "ns-b/prod-2"),
        ]


def test_node_status_changes_stream_as_modified(api: RunningApi) -> None:
    api.add_node("edge-1")
    with api.admin() as c, c.stream("GET", "/api/v1/nodes", params={"watch": "1"}) as r:
        stream = events(r)
        assert summary(next(stream)) == ("ADDED", "/edge-1")
        status = {"conditions": [{"type": "Ready", "status": "False"}]}
        assert c.put("/api/v1/nodes/edge-1/status", json={"status": status}).status_code == 200
        event = next(stream)
        assert summary(event) == ("MODIFIED", "/edge-1")
        assert event["object"]["status"] == status


def test_watch_from_compacted_history_ends_with_a_410_error_event(tmp_path: Path) -> None:
    with running_api(tmp_path, history_limit=2) as api, api.admin() as c:
        for i in range(5):
            c.put(devices_path(name=f"d{i}"), json=device(f"d{i}"))
        with c.stream("GET", devices_path(),
                      params={"watch": "true", "resourceVersion": "1"}) as r:
            assert r.status_code == 200
            lines = list(events(r))  # the server ends the stream after the error
        assert len(lines) == 1
        assert lines[0]["type"] == "ERROR"
        assert lines[0]["object"]["kind"] == "Status"
        assert lines[0]["object"]["code"] == 410
