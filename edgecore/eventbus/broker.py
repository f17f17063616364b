"""The MQTT broker edgecore embeds by default (amqtt 0.12.1), secure by default.

Rules (KubeEdge's, made explicit):

* Anonymous clients are allowed only while the broker listens on loopback and no
  password file is configured.  Any other address needs authentication.
* Authentication means a password file (``user:<argon2 hash>`` lines; see
  :func:`set_password`) **and** per-user topic ACLs for both subscribe (``acl``) and
  publish (``publish_acl``).  amqtt treats an empty publish ACL as "anyone may publish
  anywhere", so a config that asks for authentication without both ACLs is refused.
* Configuring a password file turns authentication on even on loopback.  That is a
  user-facing rule (a password file nobody enforces would be a trap), and it is also how
  the tests exercise the authenticated path on 127.0.0.1 with exactly this code.

What is changed from a stock amqtt broker, and why:

* Only the auth and ACL plugins are loaded: no packet/event loggers, no ``$SYS`` tree
  (they cost CPU on every packet; libcheck gotcha 4).
* We own the listening socket (amqtt's "external" listener type, fed through its public
  ``external_connected``).  That gives the real bound port for ``port=0``, a connection
  cap and a clean close of half-open connections on stop.
* amqtt >= 0.11.2 drops every PUBLISH whose topic starts with ``$`` (its reading of
  MQTT-4.7.2-1, a SHOULD).  KubeEdge's whole device API lives under ``$hw/``, and
  mosquitto carries it, so the broker subclass below carries ``$hw/`` topics through the
  normal ACL check and broadcast.  Other ``$`` topics (``$SYS``...) stay refused.
  This overrides one private amqtt method; amqtt is pinned to 0.12.1 and the
  ``$hw`` round-trip test fails loudly if an upgrade changes it.

Known limits: FileAuthPlugin verifies argon2 on the event loop thread (tens of ms per
CONNECT with a username), and amqtt's own broadcast queue is unbounded; the bus client
keeps its side bounded (see ``client.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import tempfile
import warnings
from pathlib import Path
from typing import Any

from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter  # type: ignore[import-untyped]
from amqtt.broker import Broker  # type: ignore[import-untyped]
from amqtt.contexts import Action  # type: ignore[import-untyped]
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from pydantic import BaseModel, ConfigDict, Field, field_validator

from protocol.errors import InvalidObject

logger = logging.getLogger(__name__)

LISTENER = "default"
# KubeEdge's topic namespace (device twin, membership, upload); see kubeedge-protocol §1.
KUBEEDGE_DOLLAR_PREFIXES: tuple[str, ...] = ("$hw/",)

_ANON_PLUGIN = "amqtt.plugins.authentication.AnonymousAuthPlugin"
_FILE_PLUGIN = "amqtt.plugins.authentication.FileAuthPlugin"
_ACL_PLUGIN = "amqtt.plugins.topic_checking.TopicAccessControlListPlugin"


class BrokerConfigError(InvalidObject):
    """The broker configuration is unsafe or incomplete; nothing was bound."""


def _check_filter(topic_filter: str) -> str:
    levels = topic_filter.split("/")
    if not topic_filter:
        raise ValueError("a topic filter cannot be empty")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"{topic_filter!r}: '#' must be a whole, last level")
        if "+" in level and level != "+":
            raise ValueError(f"{topic_filter!r}: '+' must be a whole level")
    return topic_filter


class BrokerConfig(BaseModel):
    """Where the embedded broker listens and who may do what on it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=0, le=65535, description="0 picks a free port")
    password_file: Path | None = None
    acl: dict[str, list[str]] = Field(
        default_factory=dict, description="username -> topic filters it may subscribe to")
    publish_acl: dict[str, list[str]] = Field(
        default_factory=dict, description="username -> topic filters it may publish to")
    max_connections: int = Field(default=100, ge=1)

    @field_validator("acl", "publish_acl")
    @classmethod
    def _filters_are_valid(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for filters in value.values():
            for topic_filter in filters:
                _check_filter(topic_filter)
        return value


def is_loopback_host(host: str) -> bool:
    """True when every address ``host`` stands for is a loopback address.

    "" and "0.0.0.0"/"::" mean every interface, so they are not loopback.  A name is
    resolved and counts only if all its addresses are loopback (the listener binds them all).
    """
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def _plugins_for(config: BrokerConfig) -> tuple[dict[str, Any], bool]:
    """amqtt plugin config for ``config`` and whether it authenticates; raises if unsafe."""
    where = f"{config.host or '*'}:{config.port}"
    if config.password_file is None:
        if not is_loopback_host(config.host):
            raise BrokerConfigError(
                f"refusing to start the MQTT broker on {where} without authentication: "
                "anonymous clients are allowed only on a loopback address. Set password_file "
                "(entries from edgecore.eventbus.broker.set_password) with per-user acl and "
                "publish_acl, or listen on 127.0.0.1",
                field="password_file")
        return {_ANON_PLUGIN: {"allow_anonymous": True}}, False
    _check_password_file(config.password_file)
    if not config.acl or not config.publish_acl:
        missing = "acl" if not config.acl else "publish_acl"
        raise BrokerConfigError(
            f"the MQTT broker on {where} authenticates clients, so it needs both acl "
            "(subscribe) and publish_acl: with an empty publish_acl amqtt lets every "
            "client publish to every topic", field=missing)
    plugins = {
        # With allow_anonymous off this plugin says yes only to a CONNECT carrying a
        # username; FileAuthPlugin then checks the password (amqtt ANDs the answers).
        _ANON_PLUGIN: {"allow_anonymous": False},
        _FILE_PLUGIN: {"password_file": str(config.password_file)},
        # "acl" is amqtt 0.12's working key for the subscribe ACL (libcheck gotcha 2).
        _ACL_PLUGIN: {"acl": dict(config.acl), "publish_acl": dict(config.publish_acl)},
    }
    return plugins, True


def _check_password_file(path: Path) -> None:
    """Refuse what amqtt would load but then fail on at the first CONNECT."""
    if not path.is_file():
        raise BrokerConfigError(f"password file {path} does not exist", field="password_file")
    users = 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user or not Argon2Hasher.identify(hashed):
            raise BrokerConfigError(
                f"password file {path} line {number} is not 'user:<argon2 hash>' "
                "(write entries with edgecore.eventbus.broker.set_password)",
                field="password_file")
        users += 1
    if users == 0:
        raise BrokerConfigError(f"password file {path} has no users", field="password_file")


class _KubeEdgeBroker(Broker):  # type: ignore[misc]
    """amqtt's broker, plus KubeEdge's ``$hw/`` topics (see the module docstring)."""

    async def _handle_message_delivery(
        self, client_session: Any, handler: Any, wait_deliver: asyncio.Future[Any]
    ) -> bool:
        message = wait_deliver.result()
        topic = getattr(message, "topic", None)
        if not topic or not topic.startswith(KUBEEDGE_DOLLAR_PREFIXES):
            return bool(await super()._handle_message_delivery(
                client_session, handler, wait_deliver))
        if "+" in topic or "#" in topic:
            logger.warning("%s published to wildcard topic %r; closing it",
                           client_session.client_id, topic)
            return False
        # No event plugins are loaded (see _plugins_for), so no MESSAGE_* events to fire.
        if not await self._topic_filtering(client_session, topic=topic, action=Action.PUBLISH):
            logger.info("%s may not publish to %s; dropped", client_session.client_id, topic)
            return True
        await self._broadcast_message(client_session, topic, message.data)
        packet = message.publish_packet
        if packet is not None and packet.retain_flag:
            await self.retain_message(client_session, topic, message.data, message.qos)
        return True


class EmbeddedBroker:
    """amqtt broker bound per :class:`BrokerConfig`; ``start``/``stop`` may be repeated.

    A restarted instance binds the port it had before, even when configured with
    ``port=0``, so its clients can reconnect to the same address.
    """

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self._broker: Any = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._port: int | None = None
        self.auth_required = False

    @property
    def bound_port(self) -> int:
        if self._port is None:
            raise RuntimeError("the broker has not been started")
        return self._port

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the broker is already running")
        plugins, self.auth_required = _plugins_for(self.config)
        port = self._port if self._port is not None else self.config.port
        amqtt_config = {
            "listeners": {LISTENER: {
                # amqtt only uses "bind" in its logs; _on_connection owns the socket.
                "type": "external", "bind": f"{self.config.host}:{port}"}},
            "plugins": plugins,
        }
        with warnings.catch_warnings():
            # The ACL plugin warns that "acl" is deprecated, yet its replacement key is
            # rejected by amqtt's strict config loader (libcheck gotcha 2).
            warnings.filterwarnings("ignore", message=".*'acl' option is deprecated.*")
            broker = _KubeEdgeBroker(amqtt_config)  # needs the running loop
        await broker.start()
        try:
            server = await asyncio.start_server(
                self._on_connection, self.config.host or None, port, reuse_address=True)
        except OSError as exc:
            await broker.shutdown()
            raise OSError(exc.errno, f"MQTT broker cannot listen on "
                                     f"{self.config.host}:{port}: {exc.strerror}") from exc
        self._broker, self._server = broker, server
        self._port = int(server.sockets[0].getsockname()[1])
        logger.info("MQTT broker listening on %s:%d (%s)", self.config.host, self._port,
                    "password + ACL" if self.auth_required else "anonymous, loopback only")

    async def stop(self) -> None:
        server, broker = self._server, self._broker
        if server is None:
            return
        self._server = self._broker = None
        server.close()
        await broker.shutdown()
        # Connections that never sent CONNECT are not known to amqtt; close them too.
        for writer in list(self._writers):
            writer.close()
        await server.wait_closed()
        logger.info("MQTT broker on %s:%d stopped", self.config.host, self._port)

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        broker = self._broker
        if broker is None or len(self._writers) >= self.config.max_connections:
            logger.warning("MQTT broker refused a connection from %s (%d open, limit %d)",
                           writer.get_extra_info("peername"), len(self._writers),
                           self.config.max_connections)
            writer.close()
            return
        self._writers.add(writer)
        try:
            await broker.external_connected(
                StreamReaderAdapter(reader), StreamWriterAdapter(writer), LISTENER)
        except Exception:
            logger.exception("MQTT connection from %s failed", writer.get_extra_info("peername"))
        finally:
            self._writers.discard(writer)
            writer.close()


_hasher = PasswordHash((Argon2Hasher(),))


def hash_password(password: str) -> str:
    """An argon2 hash in the form amqtt's FileAuthPlugin verifies."""
    if not password:
        raise ValueError("a broker password cannot be empty")
    return _hasher.hash(password)


def set_password(path: Path, username: str, password: str) -> None:
    """Add or replace ``username`` in the password file at ``path`` (created 0600).

    The file is rewritten atomically; the broker reads it when it starts.
    """
    if not username or any(c in username for c in ":#\n\r\t ") or username == "anonymous":
        raise ValueError(f"invalid broker username {username!r}: it must be non-empty, not "
                         "'anonymous', and contain no ':', '#' or whitespace")
    line = f"{username}:{hash_password(password)}\n"
    kept: list[str] = []
    if path.exists():
        for existing in path.read_text(encoding="utf-8").splitlines(keepends=True):
            if existing.split(":", 1)[0].strip() != username:
                kept.append(existing if existing.endswith("\n") else existing + "\n")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines([*kept, line])
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
