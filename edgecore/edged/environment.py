"""The environment a replica's process starts with.

Only a few of edgecore's own variables are passed on (PATH and the locale, so programs
are found and text is read as it was meant): edgecore's environment may hold things that
are none of an app's business.  The template's ``env`` comes next, then what edged knows
about the placement, which an App cannot override: which node it is on, which App and
replica it is, and where the node's MQTT broker and DMI socket are.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path

from protocol.kinds.appreplicas import AppReplicaSpec

INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ")


def app_environment(spec: AppReplicaSpec, *, namespace: str, node: str, mqtt_url: str,
                    dmi_socket: Path, inherited: Mapping[str, str]) -> dict[str, str]:
    env = {name: inherited[name] for name in INHERITED if name in inherited}
    for var in spec.template.env or ():
        env[var.name] = var.value
    env.update({
        "NODE_NAME": node,
        "EDGEFLEET_NAMESPACE": namespace,
        "EDGEFLEET_APP": spec.app,
        "EDGEFLEET_REPLICA": str(spec.index),
        "EDGEFLEET_MQTT": mqtt_url,
        "EDGEFLEET_DMI_SOCKET": str(dmi_socket),
    })
    return env


def broker_url(listen_host: str, port: int) -> str:
    """``tcp://HOST:PORT`` at which a local process reaches a broker listening on
    ``listen_host`` (a wildcard address is reached on loopback)."""
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(listen_host, listen_host)
    try:
        v6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        v6 = False
    return f"tcp://[{host}]:{port}" if v6 else f"tcp://{host}:{port}"
