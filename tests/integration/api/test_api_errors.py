"""Bad input gets a Status body with the right code and changes nothing."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.integration.api.api_harness import RunningApi, running_api
from tests.integration.api.api_objects import device, devices_path, models_path


def assert_status(body: dict[str, Any], code: int, reason: str) -> None:
    assert body["kind"] == "Status" and body["apiVersion"] == "v1"
    assert body["status"] == "Failure"
    assert body["code"] == code and body["reason"] == reason
    assert body["message"]


def test_invalid_field_type_is_422_naming_the_field(api: RunningApi) -> None:
    with api.admin() as c:
        r = c.put(devices_path(name="d1"), json=device("d1", report_cycle="fast"))
        assert r.status_code == 422
        assert_status(r.json(), 422, "Invalid")
        assert r.json()["details"]["field"] == "spec.properties[0].reportCycle"
        body = device("d1")
        body["spec"]["colour"] = "red"
        r = c.put(devices_path(name="d1"), json=body)
        assert r.status_code == 422 and r.json()["details"]["field"] == "spec.colour"
        bad_name = device("D1_Bad")
        r = c.post(devices_path(), json=bad_name)
        assert r.status_code == 422 and r.json()["details"]["field"] == "metadata.name"
        assert c.get(devices_path()).json()["items"] == []


@pytest.mark.parametrize("payload", [b"{not json", b"[1, 2]", b"", b"\xff\xfe", b"[" * 100_000,
                                     b'{"a": NaN}', b"null",
                                     # a lone surrogate: JSON syntax, but not text (tests/fuzz)
                                     b'{"metadata": {"name": "d1", "labels": {"x": "\\udc00"}}}'])
def test_malformed_bodies_are_400(api: RunningApi, payload: bytes) -> None:
    with api.admin() as c:
        r = c.put(devices_path(name="d1"), content=payload,
                  headers={"Content-Type": "application/json"})
        assert r.status_code == 400, r.text
        assert_status(r.json(), 400, "BadRequest")
        assert c.get(devices_path()).json()["items"] == []


@pytest.fixture
def small_api(tmp_path: Path) -> Iterator[RunningApi]:
    with running_api(tmp_path, max_body_bytes=2048) as server:
        yield server


def test_body_over_the_limit_is_413_by_content_length(small_api: RunningApi) -> None:
    body = device("d1")
    body["metadata"]["annotations"] = {"note": "x" * 4096}
    with small_api.admin() as c:
        r = c.put(devices_path(name="d1"), json=body)
        assert r.status_code == 413
        assert_status(r.json(), 413, "RequestEntityTooLarge")
        assert c.get(devices_path()).json()["items"] == []


def test_body_over_the_limit_is_413_when_streamed_without_length(
    small_api: RunningApi,
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device", '
        for _ in range(8):
            yield b'"metadata": {"annotations": {"n": "' + b"y" * 512 + b'"}}, '
        yield b'"spec": {}}'

    with small_api.admin() as c:
        r = c.put(devices_path(name="d1"), content=chunks(),
                  headers={"Content-Type": "application/json"})
        assert "content-length" not in r.request.headers  # really sent chunked
        assert r.status_code == 413
        assert_status(r.json(), 413, "RequestEntityTooLarge")
        assert c.get(devices_path()).json()["items"] == []


def test_huge_content_length_is_refused_before_the_body_is_sent(api: RunningApi) -> None:
    """A client announcing 50 MB gets its 413 without sending a byte of it."""
    url = urlsplit(api.url)
    ctx = ssl.create_default_context(cadata=api.ca_pem)
    with socket.create_connection((url.hostname, url.port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=url.hostname) as tls:
        tls.sendall(
            f"PUT {devices_path(name='d1')} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Authorization: Bearer {api.admin_token}\r\nContent-Type: application/json\r\n"
            "Content-Length: 50000000\r\n\r\n".encode()
        )
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = tls.recv(4096)
            assert chunk, "server closed without answering"
            response += chunk
    assert response.startswith(b"HTTP/1.1 413 ")


def test_missing_or_unknown_token_is_401(api: RunningApi) -> None:
    with api.client() as anonymous:
        r = anonymous.get(devices_path())
        assert r.status_code == 401
        assert_status(r.json(), 401, "Unauthorized")
        assert "Bearer" in r.headers["www-authenticate"]
        # Writes are refused before the body is looked at.
        assert anonymous.put(devices_path(name="d1"), json=device("d1")).status_code == 401
    with api.client("efu_not-a-real-token") as stranger:
        r = stranger.get(devices_path())
        assert r.status_code == 401 and "token" in r.json()["message"]
    with api.client() as c:
        r = c.get(devices_path(), headers={"Authorization": f"Basic {api.admin_token}"})
        assert r.status_code == 401
    with api.admin() as c:
        assert c.get(devices_path()).json()["items"] == []


def test_public_endpoints_need_no_token(api: RunningApi) -> None:
    with api.client() as anonymous:
        r = anonymous.get("/healthz")
        assert r.status_code == 200 and r.text == "ok"
        assert anonymous.get("/openapi.json").status_code == 200


@pytest.mark.parametrize("path", [
    "/apis/nope.example.com/v1/things",
    "/apis/devices.kubeedge.io/v9/namespaces/default/devices",
    "/api/v1/namespaces/default/nodes",
    "/api/v1/nodes/edge-1/logs",
    "/api/v1/namespaces/default",
    "/not/an/api/path",
])
def test_unknown_paths_are_404_status(api: RunningApi, path: str) -> None:
    with api.admin() as c:
        r = c.get(path)
        assert r.status_code == 404
        assert_status(r.json(), 404, "NotFound")


def test_unsupported_method_is_405_status(api: RunningApi) -> None:
    with api.admin() as c:
        r = c.delete(models_path())
        assert r.status_code == 405
        assert r.json()["kind"] == "Status" and r.json()["code"] == 405
        r = c.post("/healthz")
        assert r.status_code == 405 and r.json()["code"] == 405


def test_bad_query_parameters_are_400(api: RunningApi) -> None:
    with api.admin() as c:
        assert c.get(devices_path(), params={"watch": "perhaps"}).status_code == 400
        assert c.delete(devices_path(name="d1"),
                        params={"resourceVersion": "x"}).status_code == 400
