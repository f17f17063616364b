"""edgecore's EventBus: the local MQTT broker devices and apps talk to, and the client
edgecore itself uses on it.

Two modes, as KubeEdge's ``mqttMode`` (kubeedge-protocol §1.1):

* ``embedded`` (edgefleet's default): an amqtt broker inside edgecore, on 127.0.0.1:1883
  unless told otherwise (``broker.py``), and a :class:`BusClient` connected to it.
* ``external``: only a :class:`BusClient`, connected to a broker run by someone else
  (mosquitto).  amqtt is then never imported, which saves about 8 MB of RSS.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from edgecore.eventbus.client import BusClient, Handler, parse_broker_url

if TYPE_CHECKING:
    from edgecore.eventbus.broker import EmbeddedBroker

__all__ = ["BusClient", "Handler", "parse_broker_url", "start_eventbus", "stop_eventbus"]

DEFAULT_LISTEN = ("127.0.0.1", 1883)


def _dial_host(listen_host: str) -> str:
    """Where a local client reaches a broker listening on ``listen_host``."""
    if listen_host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if listen_host == "::":
        return "::1"
    return listen_host


def _url_for(host: str, port: int) -> str:
    try:
        is_v6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        is_v6 = False
    return f"tcp://[{host}]:{port}" if is_v6 else f"tcp://{host}:{port}"


async def start_eventbus(
    mode: Literal["embedded", "external"],
    listen: tuple[str, int] = DEFAULT_LISTEN,
    url: str | None = None,
    *,
    client_id: str = "edgecore",
    username: str | None = None,
    password: str | None = None,
    password_file: Path | None = None,
    acl: dict[str, list[str]] | None = None,
    publish_acl: dict[str, list[str]] | None = None,
) -> tuple[BusClient, EmbeddedBroker | None]:
    """Start the EventBus and return ``(client, broker)`` (``broker`` is None when external).

    The client is started but may not be connected yet: await ``client.connected``.
    ``embedded``: ``listen`` is where the broker binds; ``password_file``/``acl``/
    ``publish_acl`` are its authentication (required off loopback, see ``broker.py``),
    and ``username``/``password`` are then edgecore's own entry in that file.
    ``external``: ``url`` (``tcp://HOST:PORT``) is the broker; ``listen`` is unused.
    """
    if mode == "external":
        if url is None:
            raise ValueError("external EventBus mode needs the broker url (tcp://HOST:PORT)")
        client = BusClient(url, client_id, username=username, password=password)
        await client.start()
        return client, None
    if mode != "embedded":
        raise ValueError(f"EventBus mode must be 'embedded' or 'external', not {mode!r}")

    # Imported here so that external mode never loads amqtt.
    from edgecore.eventbus.broker import BrokerConfig, EmbeddedBroker

    config = BrokerConfig(host=listen[0], port=listen[1], password_file=password_file,
                          acl=acl or {}, publish_acl=publish_acl or {})
    if password_file is not None and username is None:
        raise ValueError("the embedded broker authenticates clients: give edgecore's own "
                         "username/password from its password file")
    broker = EmbeddedBroker(config)
    await broker.start()
    try:
        client = BusClient(_url_for(_dial_host(listen[0]), broker.bound_port), client_id,
                           username=username, password=password)
        await client.start()
    except BaseException:
        await broker.stop()
        raise
    return client, broker


async def stop_eventbus(client: BusClient, broker: EmbeddedBroker | None) -> None:
    """Stop the client first (a clean DISCONNECT), then the broker."""
    await client.stop()
    if broker is not None:
        await broker.stop()
