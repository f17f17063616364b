"""edgecore's configuration: DIR/edgecore.yaml, written by ``edgecore join``.

The file holds where the cloud is, who this node is and the link's tunables — never
the join token.  A bad file is refused with the offending field named.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocol.resources import pydantic_path

CONFIG_FILE = "edgecore.yaml"


class ConfigError(Exception):
    pass


class LinkSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    heartbeatSeconds: float = Field(default=15.0, gt=0)
    reconnectBaseSeconds: float = Field(default=0.5, gt=0)
    reconnectCapSeconds: float = Field(default=30.0, gt=0)
    ackTimeoutSeconds: float = Field(default=5.0, gt=0)
    outboxLimit: int = Field(default=10_000, ge=1)
    outboxWindow: int = Field(default=64, ge=1)
    maxFrameBytes: int = Field(default=1_048_576, ge=1024)


class ServiceBusSettings(BaseModel):
    """KubeEdge's servicebus: rule messages delivered to HTTP services on this node's
    loopback.  Off unless enabled (here or with ``edgecore run --servicebus``)."""

    model_config = ConfigDict(extra="forbid")

    enable: bool = False
    timeoutSeconds: float = Field(default=60.0, gt=0)


class EdgedSettings(BaseModel):
    """edged: how this node supervises the App replicas the cloud assigns to it."""

    model_config = ConfigDict(extra="forbid")

    # Waits between restarts of a crashing replica double from base up to cap, as the
    # kubelet's; a run lasting resetSeconds forgives the crashes before it.
    backoffBaseSeconds: float = Field(default=1.0, gt=0)
    backoffCapSeconds: float = Field(default=300.0, gt=0)
    backoffResetSeconds: float = Field(default=600.0, gt=0)
    # stdout and stderr each keep at most logFiles files of logFileBytes.
    logFileBytes: int = Field(default=1_048_576, ge=1024)
    logFiles: int = Field(default=3, ge=1, le=100)


class StorageSettings(BaseModel):
    """Caps on the edge's own sqlite files, for a small disk shared with other software.
    A write that does not fit is refused with "store is full" (507) and stores nothing:
    a twin update gets an error result, a status stays queued in the twin until there is
    room.  None: no cap (the disk's own size)."""

    model_config = ConfigDict(extra="forbid")

    outboxMaxBytes: int | None = Field(default=None, ge=32 * 1024)  # outbox.db
    twinMaxBytes: int | None = Field(default=None, ge=32 * 1024)    # twin.db


class EdgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    apiVersion: str = "edgefleet.io/v1"
    kind: str = "EdgecoreConfig"
    nodeName: str = Field(min_length=1, max_length=253)
    server: str = Field(description="https://HOST:10002 (join and CA)")
    hub: str = Field(description="wss://HOST:10000 (the link)")
    labels: dict[str, str] = {}
    # How far this node's clock may be from the cloud's: the cloud's nodes.clockSkewSeconds,
    # written by `edgecore join`.  Used for certificate renewal and expiry (edgecore.certstate).
    clockSkewSeconds: float = Field(default=300.0, ge=0)
    link: LinkSettings = LinkSettings()
    servicebus: ServiceBusSettings = ServiceBusSettings()
    edged: EdgedSettings = EdgedSettings()
    storage: StorageSettings = StorageSettings()


class EdgePaths:
    """Where everything lives under the data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir
        self.config = data_dir / CONFIG_FILE
        self.pki = data_dir / "pki"
        self.ca = self.pki / "ca.crt"
        self.cert = self.pki / "node.crt"
        self.key = self.pki / "node.key"
        self.cert_info = self.pki / "node.json"
        self.cache = data_dir / "meta.db"
        self.outbox = data_dir / "outbox.db"
        self.twin = data_dir / "twin.db"
        self.dmi_socket = data_dir / "dmi.sock"
        self.apps = data_dir / "apps"


def load_config(path: Path) -> EdgeConfig:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist; run `edgecore join` first") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping")
    try:
        return EdgeConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"{path}: {pydantic_path(tuple(err['loc']))}: {err['msg']}") from None


def save_config(path: Path, cfg: EdgeConfig) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    tmp.replace(path)
