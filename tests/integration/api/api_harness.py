"""A real API server for integration tests: uvicorn with TLS on 127.0.0.1, a real
SqliteStore and TokenAuth in a temporary directory, served from its own thread and
event loop so that tests (and efctl subprocesses) can block while it serves."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn

from certs.ca import CertAuthority, ensure_server_cert, load_or_create_ca, make_token_secret
from certs.tokens import make_join_token
from cloudcore.api import build_api
from cloudcore.api.audit import AuditLog
from cloudcore.api.throttle import TokenThrottle
from cloudcore.artifacts import ArtifactStore
from cloudcore.auth import Role, TokenAuth
from cloudcore.revocation import NodeRevoker
from cloudcore.store.sqlite import SqliteStore
from tests.integration.api.api_objects import node

T = TypeVar("T")


class JoinTokens:
    """The join-token issuer cloudcore wires in, built from the certs primitives."""

    def __init__(self, ca: CertAuthority, secret: bytes) -> None:
        self.ca = ca
        self.secret = secret

    def issue(self, ttl: timedelta) -> tuple[str, datetime]:
        now = datetime.now(UTC)
        return make_join_token(self.ca.ca_hash, self.secret, ttl, now), now + ttl


@dataclass
class RunningApi:
    url: str
    ca_pem: str
    admin_token: str
    store: SqliteStore
    auth: TokenAuth
    join_tokens: JoinTokens
    loop: asyncio.AbstractEventLoop
    audit_path: Path

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine (e.g. a direct store call) on the server's loop."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=15)

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_pem)

    def client(self, token: str | None = None, *, timeout: float = 10.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, verify=self.ssl_context(), headers=headers,
                            timeout=timeout)

    def admin(self) -> httpx.Client:
        return self.client(self.admin_token)

    def user(self, name: str, role: Role) -> str:
        return self.auth.create(name, role)

    def add_node(self, name: str, ready: str = "True") -> dict[str, Any]:
        """What the join flow does: the system creates the Node and writes its status."""
        obj = node(name, ready)
        self.run(self.store.create(obj))
        return self.run(self.store.update_status("Node", None, name, obj["status"]))


@contextmanager
def running_api(
    tmp_path: Path, *, max_body_bytes: int = 1_048_576, history_limit: int = 100_000,
    artifacts: ArtifactStore | None = None, throttle: TokenThrottle | None = None,
    revoker: NodeRevoker | None = None,
) -> Iterator[RunningApi]:
    pki = tmp_path / "pki"
    ca = load_or_create_ca(pki)
    cert, key = ensure_server_cert(pki, ca, ["127.0.0.1", "localhost"])
    join_tokens = JoinTokens(ca, make_token_secret(pki))
    auth = TokenAuth.open(tmp_path / "auth.db")
    admin_token = auth.create("admin", Role.ADMIN)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections wait in the backlog until uvicorn accepts them
    port = sock.getsockname()[1]

    loop = asyncio.new_event_loop()
    ready: dict[str, Any] = {}
    opened = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            store = SqliteStore.open(tmp_path / "store.db", history_limit=history_limit)
        except BaseException as exc:
            ready["error"] = exc
            opened.set()
            raise
        app = build_api(store, auth, join_tokens, max_body_bytes=max_body_bytes,
                        artifacts=artifacts, audit=AuditLog(tmp_path / "audit.log"),
                        throttle=throttle, revoker=revoker)
        config = uvicorn.Config(
            app, ssl_certfile=str(cert), ssl_keyfile=str(key), log_level="warning",
            lifespan="off", timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        ready["store"], ready["server"] = store, server
        opened.set()
        try:
            loop.run_until_complete(server.serve(sockets=[sock]))
        finally:
            loop.run_until_complete(store.close())
            loop.close()

    thread = threading.Thread(target=serve, name="api-server", daemon=True)
    thread.start()
    if not opened.wait(timeout=15) or "error" in ready:
        raise RuntimeError(f"API server did not start: {ready.get('error')}")
    api = RunningApi(
        url=f"https://127.0.0.1:{port}", ca_pem=ca.cert_pem.decode(), admin_token=admin_token,
        store=ready["store"], auth=auth, join_tokens=join_tokens, loop=loop,
        audit_path=tmp_path / "audit.log",
    )
    _wait_healthy(api)
    try:
        yield api
    finally:
        ready["server"].should_exit = True
        thread.join(timeout=15)
        auth.close()


def _wait_healthy(api: RunningApi, deadline_s: float = 15.0) -> None:
    deadline = time.monotonic() + deadline_s
    with api.client() as client:
        while True:
            try:
                if client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise RuntimeError("API server never became healthy")
