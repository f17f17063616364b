"""The read-only metaserver over a real MetaCache, on 127.0.0.1 with real HTTP clients."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgecore.meta import ApplyResult, MetaCache
from edgecore.metaserver import MetaServer

DEVICES = "/apis/devices.kubeedge.io/v1beta1"


def device(name: str, rv: int, ns: str = "default", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": str(rv),
                     "labels": labels},
        "spec": {"deviceModelRef": {"name": "thermometer"}},
    }


def node(name: str, rv: int, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "resourceVersion": str(rv), "labels": labels}}


@pytest.fixture
async def cache(tmp_path: Path) -> AsyncIterator[MetaCache]:
    c = MetaCache.open(tmp_path / "meta.db")
    c.upsert(node("edge-1", 1, role="edge"))
    c.upsert(device("thermo", 2, room="kitchen"))
    c.upsert(device("meter", 3, room="cellar"))
    c.upsert(device("pump", 4, ns="plant", room="cellar"))
    yield c
    c.close()


@pytest.fixture
async def server(cache: MetaCache) -> AsyncIterator[MetaServer]:
    srv = MetaServer(cache, "127.0.0.1", 0)
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def client(server: MetaServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.bound_port}",
                                 timeout=10) as c:
        yield c


async def raw_exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    writer.write_eof()  # the request is all we have to say
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()
    return response


def status_of(response: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


async def test_healthz(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200


async def test_list_and_get_with_the_cloud_api_paths(client: httpx.AsyncClient) -> None:
    r = await client.get(f"{DEVICES}/namespaces/default/devices")
    assert r.status_code == 200
    body = r.json()
    assert body["kind"] == "DeviceList"
    assert body["apiVersion"] == "devices.kubeedge.io/v1beta1"
    assert [o["metadata"]["name"] for o in body["items"]] == ["meter", "thermo"]

    r = await client.get(f"{DEVICES}/devices")  # every namespace
    assert [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in r.json()["items"]] == [
        ("default", "meter"), ("default", "thermo"), ("plant", "pump"),
    ]

    r = await client.get(f"{DEVICES}/namespaces/plant/devices/pump")
    assert r.status_code == 200
    assert r.json() == device("pump", 4, ns="plant", room="cellar")

    r = await client.get("/api/v1/nodes")
    assert r.json()["kind"] == "NodeList"
    assert [o["metadata"]["name"] for o in r.json()["items"]] == ["edge-1"]
    r = await client.get("/api/v1/nodes/edge-1")
    assert r.json()["metadata"]["name"] == "edge-1"


async def test_label_selector(client: httpx.AsyncClient) -> None:
    r = await client.get(f"{DEVICES}/devices", params={"labelSelector": "room in (cellar)"})
    assert [o["metadata"]["name"] for o in r.json()["items"]] == ["meter", "pump"]
    r = await client.get(f"{DEVICES}/devices", params={"labelSelector": "room=="})
    assert r.json()["items"] == []


async def test_bad_selector_is_400_status(client: httpx.AsyncClient) -> None:
    r = await client.get(f"{DEVICES}/devices", params={"labelSelector": "room in cellar"})
    assert r.status_code == 400
    assert r.json()["kind"] == "Status"
    assert r.json()["reason"] == "BadRequest"
    assert "labelSelector" in r.json()["message"]


@pytest.mark.parametrize("path", [
    f"{DEVICES}/namespaces/default/devices/nope",        # unknown object
    f"{DEVICES}/namespaces/plant/devices/thermo",        # wrong namespace
    "/apis/devices.kubeedge.io/v9/devices",              # unknown version
    "/api/v1/widgets",                                   # unknown kind
    "/api/v1/namespaces/default/nodes",                  # Node is cluster-scoped
    f"{DEVICES}/devices/thermo",                         # namespaced object without ns
    f"{DEVICES}/namespaces/default/devices/thermo/status/x",
    "/",
    "/nothing/here",
])
async def test_unknown_paths_and_objects_are_404_status(
    client: httpx.AsyncClient, path: str,
) -> None:
    r = await client.get(path)
    assert r.status_code == 404
    assert r.json()["kind"] == "Status"
    assert r.json()["code"] == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "HEAD"])
async def test_writes_are_405(client: httpx.AsyncClient, method: str) -> None:
    r = await client.request(method, f"{DEVICES}/namespaces/default/devices/thermo",
                             content=b'{"spec": {}}' if method != "HEAD" else None)
    assert r.status_code == 405
    assert r.headers["allow"] == "GET"
    if method != "HEAD":
        assert r.json()["reason"] == "MethodNotAllowed"


async def test_object_survives_a_refused_write(client: httpx.AsyncClient,
                                               cache: MetaCache) -> None:
    await client.delete(f"{DEVICES}/namespaces/default/devices/thermo")
    assert cache.get("Device", "default", "thermo") is not None


async def test_garbage_gets_400_and_the_server_keeps_serving(
    server: MetaServer, client: httpx.AsyncClient,
) -> None:
    port = server.bound_port
    for junk in (b"\x00\xff\xfe garbage \x80\r\n\r\n",
                 b"GET\r\n\r\n",
                 b"GET /api/v1/nodes HTTP/9.9\r\n\r\n",
                 b"GET api/v1/nodes HTTP/1.1\r\n\r\n",
                 b"GET /api/v1/nodes HTTP/1.1\r\nno-colon-here\r\n\r\n",
                 b"GET /api/v1/nodes HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
                 b"GET /api/v1/nodes HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                 b"GET /api/v1/nodes?labelSelector=%ff%fe HTTP/1.1\r\n\r\n",
                 b"partial request without end\r\n"):
        code, body = status_of(await raw_exchange(port, junk))
        assert code == 400, junk
        assert body["kind"] == "Status"
    r = await client.get("/api/v1/nodes")
    assert r.status_code == 200


async def test_random_bytes_never_break_the_server(
    server: MetaServer, client: httpx.AsyncClient,
) -> None:
    rng = random.Random(1234)
    prefixes = [b"", b"GET ", b"GET /api/v1/nodes HTTP/1.1\r\n", b"GET /apis/"]
    for _ in range(60):
        junk = rng.choice(prefixes) + rng.randbytes(rng.randrange(0, 300))
        if rng.random() < 0.5:
            junk += b"\r\n\r\n"
        response = await raw_exchange(server.bound_port, junk)
        # An answer (almost always a 4xx Status), or nothing for a connection that
        # said nothing; never a server error.
        assert response == b"" or response.startswith(b"HTTP/1.1 "), junk
        assert not response.startswith(b"HTTP/1.1 5"), junk
    assert (await client.get("/api/v1/nodes")).status_code == 200


async def test_oversized_head_is_refused(server: MetaServer, client: httpx.AsyncClient) -> None:
    head = b"GET /api/v1/nodes HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    code, body = status_of(await raw_exchange(server.bound_port, head))
    assert code == 431
    assert body["kind"] == "Status"
    assert (await client.get("/api/v1/nodes")).status_code == 200


async def test_slow_request_head_times_out(cache: MetaCache) -> None:
    srv = MetaServer(cache, "127.0.0.1", 0, head_timeout=0.2)
    await srv.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.bound_port)
        writer.write(b"GET /api/v1/nodes HTTP/1.1\r\n")  # never finished
        await writer.drain()
        code, body = status_of(await asyncio.wait_for(reader.read(), 10))
        assert code == 408
        assert body["kind"] == "Status"
        writer.close()
    finally:
        await srv.stop()


async def test_http_1_0_client_is_served(server: MetaServer) -> None:
    raw = await raw_exchange(server.bound_port, b"GET /api/v1/nodes/edge-1 HTTP/1.0\r\n\r\n")
    code, body = status_of(raw)
    assert code == 200
    assert body["metadata"]["name"] == "edge-1"


async def read_event(lines: AsyncIterator[str]) -> tuple[str, str, str]:
    line = await asyncio.wait_for(anext(lines), 10)
    event = json.loads(line)
    meta = event["object"]["metadata"]
    return event["type"], meta["name"], meta["resourceVersion"]


async def test_watch_sends_current_objects_then_live_changes(
    client: httpx.AsyncClient, cache: MetaCache,
) -> None:
    url = f"{DEVICES}/namespaces/default/devices"
    async with client.stream("GET", url, params={"watch": "true"}) as r:
        assert r.status_code == 200
        assert r.headers["transfer-encoding"] == "chunked"
        lines = r.aiter_lines()
        assert await read_event(lines) == ("ADDED", "meter", "3")
        assert await read_event(lines) == ("ADDED", "thermo", "2")

        cache.upsert(device("pump", 9, ns="plant"))  # other namespace: not sent
        cache.upsert(node("edge-1", 10))              # other kind: not sent
        cache.upsert(device("thermo", 11, room="hall"))
        cache.upsert(device("valve", 12))
        cache.delete("Device", "default", "meter", 13)
        assert await read_event(lines) == ("MODIFIED", "thermo", "11")
        assert await read_event(lines) == ("ADDED", "valve", "12")
        assert await read_event(lines) == ("DELETED", "meter", "13")


async def test_watch_with_selector_sees_objects_enter_and_leave(
    client: httpx.AsyncClient, cache: MetaCache,
) -> None:
    params = {"watch": "1", "labelSelector": "room=cellar"}
    async with client.stream("GET", f"{DEVICES}/devices", params=params) as r:
        lines = r.aiter_lines()
        assert await read_event(lines) == ("ADDED", "meter", "3")
        assert await read_event(lines) == ("ADDED", "pump", "4")
        cache.upsert(device("meter", 20, room="attic"))    # leaves the selection
        cache.upsert(device("thermo", 21, room="cellar"))  # enters it
        cache.upsert(device("pump", 22, ns="plant", room="cellar", hot="yes"))
        assert await read_event(lines) == ("DELETED", "meter", "20")
        assert await read_event(lines) == ("ADDED", "thermo", "21")
        assert await read_event(lines) == ("MODIFIED", "pump", "22")


async def test_watch_one_object(client: httpx.AsyncClient, cache: MetaCache) -> None:
    url = "/api/v1/nodes/edge-1"
    async with client.stream("GET", url, params={"watch": "true"}) as r:
        lines = r.aiter_lines()
        assert await read_event(lines) == ("ADDED", "edge-1", "1")
        cache.upsert(node("edge-2", 30))
        cache.upsert(node("edge-1", 31))
        assert await read_event(lines) == ("MODIFIED", "edge-1", "31")


async def wait_for(predicate: Any) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_watch_ends_when_the_client_goes_away(
    client: httpx.AsyncClient, cache: MetaCache,
) -> None:
    async with client.stream("GET", "/api/v1/nodes?watch=true") as r:
        await read_event(r.aiter_lines())
        assert cache.subscriber_count == 1
    await wait_for(lambda: cache.subscriber_count == 0)


async def test_stop_ends_open_watches(cache: MetaCache) -> None:
    srv = MetaServer(cache, "127.0.0.1", 0)
    await srv.start()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{srv.bound_port}") as c:
        async with c.stream("GET", "/api/v1/nodes?watch=true") as r:
            lines = r.aiter_lines()
            await read_event(lines)
            await asyncio.wait_for(srv.stop(), 10)
            with pytest.raises((StopAsyncIteration, httpx.HTTPError)):
                await asyncio.wait_for(anext(lines), 10)
    assert cache.subscriber_count == 0


async def test_slow_watcher_is_ended_not_the_cache(cache: MetaCache) -> None:
    # More changes arrive than the watch may queue before it gets to send them: the
    # cache keeps applying, and the stream ends cleanly so the client knows to re-list.
    srv = MetaServer(cache, "127.0.0.1", 0, watch_queue=10)
    await srv.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{srv.bound_port}") as c:
            async with c.stream("GET", "/api/v1/nodes?watch=true") as r:
                lines = r.aiter_lines()
                await read_event(lines)
                for rv in range(100, 150):
                    assert cache.upsert(node("edge-1", rv)) is ApplyResult.APPLIED
                rest = [line async for line in lines]
                assert len(rest) < 50
        assert cache.subscriber_count == 0
        held = cache.get("Node", None, "edge-1")
        assert held is not None and held["metadata"]["resourceVersion"] == "149"
    finally:
        await srv.stop()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", "example.com", ""])
def test_non_loopback_bind_is_refused(cache: MetaCache, host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        MetaServer(cache, host, 10550)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_are_accepted(cache: MetaCache, host: str) -> None:
    MetaServer(cache, host, 10550)
    MetaServer(cache, "0.0.0.0", 10550, allow_remote=True)
