"""cloudcore's configuration: command-line flags over an optional YAML file
(``--config FILE``) over built-in defaults.  Components get their own section."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocol.resources import pydantic_path


class ConfigError(Exception):
    pass


class HubSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    maxFrameBytes: int = Field(default=1_048_576, ge=1024)
    messagesPerSecond: float = Field(default=50.0, gt=0)
    messageBurst: int = Field(default=200, ge=1)
    ackTimeoutSeconds: float = Field(default=5.0, gt=0)
    window: int = Field(default=256, ge=1)


class NodeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gracePeriodSeconds: float = Field(default=40.0, gt=0)
    statusUpdateSeconds: float = Field(default=60.0, gt=0)
    certValidity: str = "8760h"  # 1 year
    # How far a node's clock may be from the cloud's without breaking joins or renewals:
    # certificates are backdated by it, join tokens forgiven it, joins refused beyond it.
    clockSkewSeconds: float = Field(default=300.0, ge=0)


class RouterSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    edgeTimeoutSeconds: float = Field(default=30.0, gt=0)    # an edge answering a publish
    targetTimeoutSeconds: float = Field(default=10.0, gt=0)  # a rule's REST target answering
    maxPayloadBytes: int = Field(default=512 * 1024, ge=1, le=512 * 1024)
    # KubeEdge's unauthenticated rule URL, http://HOST:PORT/<node>/<ns>/<path>; off
    # unless set (e.g. "127.0.0.1:9443").
    kubeedgeListen: str | None = None


class PkiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A 0600 file holding the passphrase that encrypts pki/ca.key at rest (or use the
    # EDGEFLEET_CA_PASSPHRASE environment variable; not both).  See cloudcore.capassphrase.
    caKeyPassphraseFile: Path | None = None


class ApiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Per API user (operators and viewers; admins are exempt): a sustained rate and the
    # burst allowed above it.  Past them: 429 with Retry-After.
    requestsPerSecond: float = Field(default=50.0, gt=0)
    requestBurst: int = Field(default=200, ge=1)


class ArtifactSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    maxBytes: int = Field(default=256 * 1024 * 1024, ge=1)  # largest artifact accepted


class CloudConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataDir: Path
    hubListen: str = "0.0.0.0:10000"
    apiListen: str = "0.0.0.0:10002"
    advertiseAddresses: list[str] = []
    store: Literal["sqlite", "etcd"] = "sqlite"
    # Cap on the sqlite store file (store.db): a write that would grow it past this is
    # refused with 507 "store is full" and nothing of it is kept; deletes still work.
    storeMaxBytes: int | None = Field(default=None, ge=64 * 1024)
    etcdEndpoints: list[str] = []
    logLevel: str = "info"
    logFormat: Literal["text", "json"] = "text"
    hub: HubSettings = HubSettings()
    nodes: NodeSettings = NodeSettings()
    router: RouterSettings = RouterSettings()
    artifacts: ArtifactSettings = ArtifactSettings()
    api: ApiSettings = ApiSettings()
    pki: PkiSettings = PkiSettings()


def split_hostport(value: str, field: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{field}: {value!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def load_config_file(path: Path) -> dict[str, object]:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings")
    return raw


def build_config(file_values: dict[str, object], flags: dict[str, object]) -> CloudConfig:
    merged = {**file_values, **{k: v for k, v in flags.items() if v is not None}}
    try:
        cfg = CloudConfig.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"{pydantic_path(tuple(err['loc']))}: {err['msg']}") from None
    split_hostport(cfg.hubListen, "hubListen")
    split_hostport(cfg.apiListen, "apiListen")
    if cfg.router.kubeedgeListen is not None:
        split_hostport(cfg.router.kubeedgeListen, "router.kubeedgeListen")
    return cfg
