"""cloudcore's composition root: the only place that wires components together."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import ssl
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import uvicorn

from certs.ca import ensure_server_cert, load_or_create_ca, make_token_secret
from certs.tls import server_context
from certs.tokens import parse_ttl
from cloudcore.api.app import build_api
from cloudcore.api.audit import AuditLog
from cloudcore.api.throttle import TokenThrottle
from cloudcore.apps import AppsController, AppsControllerConfig
from cloudcore.artifacts import ArtifactStore, EdgeDownloads
from cloudcore.auth import Role, TokenAuth
from cloudcore.capassphrase import ca_key_passphrase
from cloudcore.config import CloudConfig, split_hostport
from cloudcore.dispatch import Dispatcher
from cloudcore.hub import Hub, HubConfig
from cloudcore.join import JoinService
from cloudcore.nodes import NodeLifecycle, NodeLifecycleConfig
from cloudcore.revocation import NodeRevoker, RevocationList
from cloudcore.router import (
    Router,
    RouterConfig,
    RuleCounters,
    kubeedge_compatible_app,
    router_routes,
)
from cloudcore.store.base import node_exists_in
from cloudcore.store.sqlite import SqliteStore
from efctl.config import write_efctl_config

log = logging.getLogger(__name__)

EFCTL_FILE = "efctl.yaml"


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn inside our own loop: cloudcore owns the signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _TlsConfig(uvicorn.Config):
    """uvicorn builds its own SSLContext from file names; ours enforces TLS >= 1.2
    with ECDHE + AEAD suites only, so swap it in after uvicorn's load()."""

    def __init__(self, app: Any, ssl_context: ssl.SSLContext, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._our_ssl = ssl_context

    def load(self) -> None:
        super().load()
        self.ssl = self._our_ssl


class CloudCore:
    def __init__(self, cfg: CloudConfig) -> None:
        self.cfg = cfg
        self.data_dir = cfg.dataDir
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self.hub: Hub | None = None
        self.api_port = 0

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        cfg = self.cfg
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        pki = self.data_dir / "pki"
        skew = timedelta(seconds=cfg.nodes.clockSkewSeconds)
        passphrase = ca_key_passphrase(cfg.pki.caKeyPassphraseFile, os.environ)
        ca = await asyncio.to_thread(load_or_create_ca, pki, passphrase=passphrase, skew=skew)
        hub_host, hub_port = split_hostport(cfg.hubListen, "hubListen")
        api_host, api_port = split_hostport(cfg.apiListen, "apiListen")
        sans = [*cfg.advertiseAddresses, socket.gethostname()]
        server_crt, server_key = await asyncio.to_thread(
            ensure_server_cert, pki, ca, sans, skew=skew)
        token_secret = make_token_secret(pki)

        store = SqliteStore.open(self.data_dir / "store.db", max_db_bytes=cfg.storeMaxBytes)
        auth = TokenAuth.open(self.data_dir / "auth.db")
        revocations = RevocationList.open(self.data_dir / "revocations.db")
        artifacts = ArtifactStore.open(self.data_dir / "artifacts",
                                       max_bytes=cfg.artifacts.maxBytes)
        dispatcher = Dispatcher(store)
        apps = AppsController(store, AppsControllerConfig())
        lifecycle = NodeLifecycle(store, NodeLifecycleConfig(
            grace_seconds=cfg.nodes.gracePeriodSeconds,
            status_update_interval=cfg.nodes.statusUpdateSeconds,
            check_interval=min(1.0, cfg.nodes.gracePeriodSeconds / 4),
        ))
        join = JoinService(
            ca=ca, token_secret=token_secret, store=store, hub_port=hub_port,
            node_cert_validity=parse_ttl(cfg.nodes.certValidity),
            clock_skew=timedelta(seconds=cfg.nodes.clockSkewSeconds),
            on_joined=lifecycle.register, on_issued=revocations.record_issued,
        )

        node_exists = node_exists_in(store)
        router = Router(
            # ``hub`` is bound below; the router only calls this once serving.
            lambda node, env, timeout: hub.request(node, env, timeout),
            RuleCounters(store),
            RouterConfig(edge_timeout=cfg.router.edgeTimeoutSeconds,
                         target_timeout=cfg.router.targetTimeoutSeconds,
                         max_payload_bytes=cfg.router.maxPayloadBytes),
        )
        hub = Hub(
            HubConfig(
                host=hub_host, port=hub_port, max_frame_bytes=cfg.hub.maxFrameBytes,
                messages_per_second=cfg.hub.messagesPerSecond, message_burst=cfg.hub.messageBurst,
                ack_timeout=cfg.hub.ackTimeoutSeconds, window=cfg.hub.window,
            ),
            server_context(server_crt, server_key, pki / "ca.crt", require_client_cert=True),
            store, dispatcher,
            on_heartbeat=lifecycle.heartbeat, sign_csr=join.sign_renewal,
            is_node_allowed=node_exists, on_message=router.on_edge_message,
            http_request=EdgeDownloads(artifacts, node_exists,
                                       is_cert_revoked=revocations.is_revoked).process_request,
            is_cert_revoked=revocations.is_revoked,
        )
        self.hub = hub
        revoker = NodeRevoker(revocations, node_exists, hub.cut_off)
        api = build_api(store, auth, join, extra_routes=join.routes(),
                        authenticated_routes=router_routes(router), artifacts=artifacts,
                        audit=AuditLog(cfg.dataDir / "audit.log"),
                        throttle=TokenThrottle(cfg.api.requestsPerSecond, cfg.api.requestBurst),
                        revoker=revoker)
        api_ssl = server_context(server_crt, server_key, None, require_client_cert=False)
        server = _EmbeddedUvicorn(_TlsConfig(
            api, api_ssl, host=api_host, port=api_port, log_level="warning",
            lifespan="off", access_log=False, server_header=False,
            # Open watch streams would otherwise hold a SIGTERM up for ever.
            timeout_graceful_shutdown=3,
            # uvicorn only enables TLS when it sees certificate files; ours replace them.
            ssl_certfile=str(server_crt), ssl_keyfile=str(server_key),
        ))
        api_task: asyncio.Task[None] | None = None
        compat_server: uvicorn.Server | None = None
        compat_task: asyncio.Task[None] | None = None
        try:
            await dispatcher.start()
            router.load(dispatcher.objects_of(frozenset({"Rule", "RuleEndpoint"})))
            dispatcher.on_change.append(router.on_store_change)
            await router.start()
            await apps.start()
            nodes, _ = await store.list("Node")
            await revoker.forget_deleted({n["metadata"]["name"] for n in nodes})
            await hub.start()

            async def node_deleted(node: str) -> None:
                await hub.disconnect(node, "node deleted; join again")
                await revoker.node_deleted(node)

            await lifecycle.start(on_deleted=node_deleted)
            api_task = await _serve(server, "api")
            self.api_port = server.servers[0].sockets[0].getsockname()[1]
            if cfg.router.kubeedgeListen is not None:
                compat_server, compat_task = await self._serve_kubeedge_router(router)
            self._write_admin_config(auth, ca.cert_pem, api_host, self.api_port)
            log.info("cloudcore serving: hub wss://%s:%d, API https://%s:%d, data %s",
                     hub_host, hub.port, api_host, self.api_port, self.data_dir)
            self.ready.set()
            stopper = asyncio.create_task(self._stop.wait())
            await asyncio.wait({api_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
        finally:
            log.info("cloudcore stopping")
            server.should_exit = True
            if compat_server is not None:
                compat_server.should_exit = True
            await hub.stop()
            log.debug("hub stopped")
            await lifecycle.stop()
            await router.stop()
            await apps.stop()
            await dispatcher.stop()
            for task in (api_task, compat_task):
                if task is not None:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            log.debug("API stopped")
            await store.close()
            auth.close()
            revocations.close()
            log.info("cloudcore stopped")

    async def _serve_kubeedge_router(
        self, router: Router,
    ) -> tuple[uvicorn.Server, asyncio.Task[None]]:
        assert self.cfg.router.kubeedgeListen is not None
        host, port = split_hostport(self.cfg.router.kubeedgeListen, "router.kubeedgeListen")
        if not is_loopback(host):
            log.warning("the KubeEdge-compatible router URL on %s:%d takes requests without "
                        "authentication; keep it behind a firewall or an authenticating proxy",
                        host, port)
        server = _EmbeddedUvicorn(uvicorn.Config(
            kubeedge_compatible_app(router, self.cfg.router.maxPayloadBytes), host=host,
            port=port, log_level="warning", lifespan="off", access_log=False,
            server_header=False, timeout_graceful_shutdown=3,
        ))
        task = await _serve(server, "router-kubeedge")
        log.info("KubeEdge-compatible router URL: http://%s:%d/<node>/<namespace>/<path>",
                 host, server.servers[0].sockets[0].getsockname()[1])
        return server, task

    def _write_admin_config(self, auth: TokenAuth, ca_pem: bytes, host: str, port: int) -> None:
        path = self.data_dir / EFCTL_FILE
        if path.exists():
            return
        # First start, or the file was removed: mint an admin token under a fresh name.
        name = "admin"
        suffix = 1
        while auth.exists(name):
            suffix += 1
            name = f"admin-{suffix}"
        token = auth.create(name, Role.ADMIN)
        address = self.cfg.advertiseAddresses[0] if self.cfg.advertiseAddresses else (
            "127.0.0.1" if host in ("0.0.0.0", "::", "") else host)
        server = f"https://{address}:{port}"
        if ":" in address and not address.startswith("["):
            server = f"https://[{address}]:{port}"
        write_efctl_config(path, server, ca_pem.decode(), token)
        log.info("wrote the admin client configuration to %s (mode 0600)", path)


async def _serve(server: uvicorn.Server, name: str) -> asyncio.Task[None]:
    """Start ``server`` and return once it listens (a bind error is raised here)."""
    task = asyncio.create_task(server.serve(), name=name)
    while not server.started:
        if task.done():
            await task  # surfaces a bind error
            raise RuntimeError(f"the {name} server stopped during start-up")
        await asyncio.sleep(0.02)
    return task


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def default_data_dir() -> Path:
    return Path.home() / ".edgefleet" / "cloud"
