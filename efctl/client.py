"""A small synchronous client for the edgefleet REST API.

Failures come out as one of two exceptions: :class:`~protocol.errors.EdgefleetError`
(the server answered with a Status; rebuilt with its reason and field path) or
:class:`ClientError` (no usable answer: unreachable, TLS failure, garbage).
"""

from __future__ import annotations

import errno
import json
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

import httpx

from efctl.config import EfctlConfig
from protocol.errors import error_from_status

UPLOAD_CHUNK = 256 * 1024
MAX_THROTTLE_WAIT = 60.0
"""Seconds one request may spend waiting out 429s before the error reaches the user."""


def retry_after(response: httpx.Response) -> float | None:
    """The pause a 429 asks for (Retry-After, in seconds), else None."""
    if response.status_code != 429:
        return None
    value = response.headers.get("retry-after", "1")
    return float(value) if value.isdigit() else 1.0


class ClientError(Exception):
    """The API could not be used at all; the message is one line for the user."""


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything behind it (causes, contexts, wrapped errors)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        cur = pending.pop(0)
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        pending += [cur.__cause__, cur.__context__]
        pending += [a for a in cur.args if isinstance(a, BaseException)]


def describe_transport_error(exc: httpx.TransportError) -> str:
    """Say in a few words why a request never got an answer."""
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS verification failed: {cause.verify_message or cause.reason}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS error: {cause.reason or cause}"
        if isinstance(cause, socket.gaierror):
            return f"unknown host ({cause.strerror})"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, OSError) and cause.errno is not None:
            return (cause.strerror or errno.errorcode.get(cause.errno, str(cause))).lower()
    return str(exc) or type(exc).__name__


def tls_context(ca_pem: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    # Trust exactly the cloud's own CA, not the system store: the API's certificate is
    # issued by cloudcore, and nothing else should be able to pose as it.
    ctx.load_verify_locations(cadata=ca_pem)
    return ctx


class ApiClient:
    def __init__(self, config: EfctlConfig, *, timeout: float = 30.0) -> None:
        self.server = config.server.rstrip("/")
        verify: ssl.SSLContext | bool = True
        if self.server.startswith("https://"):
            try:
                verify = tls_context(config.certificateAuthorityData)
            except ssl.SSLError as exc:
                raise ClientError(
                    f"the certificateAuthorityData in the efctl config is not a usable CA "
                    f"certificate ({exc.reason or exc})"
                ) from None
        self._http = httpx.Client(
            base_url=self.server,
            verify=verify,
            headers={"Authorization": f"Bearer {config.token}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=10.0),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self, method: str, path: str, *, body: Any = None, params: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Send one request; return the status code and the decoded JSON body of a
        success, or raise the error the server reported."""
        content = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if content is not None else None
        waited = 0.0
        while True:
            try:
                response = self._http.request(
                    method, path, content=content, params=params, headers=headers,
                )
            except httpx.TransportError as exc:
                raise ClientError(
                    f"cannot reach {self.server}: {describe_transport_error(exc)}"
                ) from None
            # Over our request budget: wait as the server asks, as kubectl does, rather
            # than failing half-way through a multi-document apply.  A 429 changed
            # nothing, so sending the same request again is safe.
            pause = retry_after(response)
            if pause is None or waited + pause > MAX_THROTTLE_WAIT:
                return self._decode(method, path, response)
            time.sleep(pause)
            waited += pause

    def upload(
        self, path: str, file: BinaryIO, size: int, *, params: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """POST the content of ``file`` (``size`` bytes) as a raw body, streamed."""

        def chunks() -> Iterator[bytes]:
            while block := file.read(UPLOAD_CHUNK):
                yield block

        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        try:
            response = self._http.post(path, content=chunks(), params=params, headers=headers)
        except httpx.TransportError as exc:
            raise ClientError(
                f"cannot reach {self.server}: {describe_transport_error(exc)}"
            ) from None
        return self._decode("POST", path, response)

    @staticmethod
    def _decode(method: str, path: str, response: httpx.Response) -> tuple[int, dict[str, Any]]:
        try:
            decoded = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            decoded = None
        if response.status_code >= 400:
            if isinstance(decoded, dict) and decoded.get("kind") == "Status":
                raise error_from_status(decoded)
            raise ClientError(
                f"{method} {path}: the server answered {response.status_code} "
                f"{response.reason_phrase}"
            )
        if not isinstance(decoded, dict):
            raise ClientError(f"{method} {path}: the server's answer is not a JSON object")
        return response.status_code, decoded

    def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        return self.request("GET", path, params=params)[1]

    def put(self, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        return self.request("PUT", path, body=body)

    def post(self, path: str, body: Any) -> dict[str, Any]:
        return self.request("POST", path, body=body)[1]

    def delete(self, path: str) -> dict[str, Any]:
        return self.request("DELETE", path)[1]
