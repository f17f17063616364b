"""edgecore's EventBus: the local MQTT broker devices and apps talk to, and the client
edgecore itself uses on it.

Two modes, as KubeEdge's ``mqttMode`` (kubeedge-protocol §1.1):

* ``embedded`` (edgefleet's default): an amqtt broker inside edgecore, on 127.0.0.1:1883
  unless told otherwise (``broker.py``), and a :class:`~edgecore.eventbus.local.LocalBus`
  attached to it in process (``local.py``).  ``in_process=False`` connects a
  :class:`BusClient` over TCP instead, as before (kept to compare the two).
* ``external``: only a :class:`BusClient`, connected to a broker run by someone else
  (mosquitto).  amqtt is then never imported, which saves about 8 MB of RSS.

Either way edgecore code gets a :class:`Bus`: ``subscribe(filter, handler)``,
``publish(topic, payload)``, ``connected``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from edgecore.eventbus.bus import Bus, Handler
from edgecore.eventbus.client import BusClient, parse_broker_url

if TYPE_CHECKING:
    from edgecore.eventbus.broker import EmbeddedBroker

__all__ = ["Bus", "BusClient", "Handler", "parse_broker_url", "start_eventbus",
           "stop_eventbus"]

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
    in_process: bool = True,
) -> tuple[Bus, EmbeddedBroker | None]:
    """Start the EventBus and return ``(bus, broker)`` (``broker`` is None when external).

    The bus is started but may not be connected yet: await ``bus.connected``.
    ``embedded``: ``listen`` is where the broker binds; ``password_file``/``acl``/
    ``publish_acl`` are its authentication (required off loopback, see ``broker.py``).
    The in-process bus is the broker itself and needs no credentials; with
    ``in_process=False`` ``username``/``password`` are edgecore's own entry in the file.
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
    from edgecore.eventbus.local import LocalBus

    config = BrokerConfig(host=listen[0], port=listen[1], password_file=password_file,
                          acl=acl or {}, publish_acl=publish_acl or {})
    if password_file is not None and username is None and not in_process:
        raise ValueError("the embedded broker authenticates clients: give edgecore's own "
                         "username/password from its password file")
    broker = EmbeddedBroker(config)
    await broker.start()
    bus: Bus
    try:
        if in_process:
            bus = LocalBus(broker, client_id)
        else:
            bus = BusClient(_url_for(_dial_host(listen[0]), broker.bound_port), client_id,
                            username=username, password=password)
        await bus.start()
    except BaseException:
        await broker.stop()
        raise
    return bus, broker


async def stop_eventbus(bus: Bus, broker: EmbeddedBroker | None) -> None:
    """Stop the bus first (its queued messages are handed over), then the broker."""
    await bus.stop()
    if broker is not None:
        await broker.stop()
