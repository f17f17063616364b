"""efctl's config file: where the API is, the CA that vouches for it, and a token.

    apiVersion: edgefleet.io/v1
    kind: EfctlConfig
    server: https://HOST:10002
    certificateAuthorityData: |
      -----BEGIN CERTIFICATE-----
      ...
    token: efu_...

The file holds a bearer token, so it is written 0600 and replaced atomically.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

API_VERSION: Final = "edgefleet.io/v1"
KIND: Final = "EfctlConfig"
ENV_VAR = "EFCTL_CONFIG"


class ConfigError(Exception):
    """The config file is missing or unusable; the message says which and why."""


class EfctlConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    apiVersion: Literal["edgefleet.io/v1"] = API_VERSION
    kind: Literal["EfctlConfig"] = KIND
    server: str
    certificateAuthorityData: str
    token: str


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    explicit = env.get(ENV_VAR)
    if explicit:
        return Path(explicit).expanduser()
    return Path("~/.edgefleet/efctl.yaml").expanduser()


def write_efctl_config(path: Path, server: str, ca_pem: str | bytes, token: str) -> None:
    """Write (or replace) an efctl config at ``path``, mode 0600."""
    path = Path(path)
    if isinstance(ca_pem, bytes):
        ca_pem = ca_pem.decode("ascii")
    config = EfctlConfig(server=server.rstrip("/"), certificateAuthorityData=ca_pem, token=token)
    text = yaml.safe_dump(config.model_dump(), sort_keys=False, default_flow_style=False)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # mkstemp creates the file 0600; the rename makes the new config appear whole.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_efctl_config(path: Path) -> EfctlConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"no efctl config at {path}: pass --config FILE or set ${ENV_VAR} "
            "(cloudcore writes one to DATA_DIR/efctl.yaml at first start)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read efctl config {path}: {exc.strerror or exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"efctl config {path} is not valid YAML: {exc}") from None
    try:
        return EfctlConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ConfigError(f"efctl config {path}: {where}: {first['msg']}") from None
