"""Private keys at rest, with real cloudcore and edgecore processes: the CA key
encrypted with a passphrase (from a 0600 file or $EDGEFLEET_CA_PASSPHRASE), and every
private key refused while group or others can read it.

A refused start must end the process with a non-zero status and one line on stderr that
names the file and what is wrong, with no traceback and never the passphrase itself.
(cloudcore's server.key is covered in test_node_lifecycle.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import Cloud, Edge, command, wait_until

pytestmark = pytest.mark.system

PASSPHRASE = "lighthouse-keeper-7319"


def _run_cloudcore(cloud: Cloud, settings: dict[str, Any],
                   env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """One ``cloudcore run`` that is expected to refuse to start."""
    config = cloud.config_path.with_name("refused-config.yaml")
    config.write_text(yaml.safe_dump(settings))
    environ = {k: v for k, v in os.environ.items() if k != "EDGEFLEET_CA_PASSPHRASE"}
    result = subprocess.run(
        [*command("cloudcore"), "run", "--data-dir", str(cloud.dir),
         "--hub-listen", f"127.0.0.1:{cloud.hub_port}",
         "--api-listen", f"127.0.0.1:{cloud.api_port}", "--config", str(config)],
        capture_output=True, text=True, timeout=60, env={**environ, **(env or {})},
    )
    assert result.returncode != 0, result.stderr
    return result


def _one_clear_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr + result.stdout
    assert PASSPHRASE not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def _passphrase_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_the_ca_key_is_encrypted_at_rest_with_a_passphrase_file(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge], tmp_path: Path,
) -> None:
    secret = _passphrase_file(tmp_path / "ca-passphrase", PASSPHRASE + "\n")
    settings = {"pki": {"caKeyPassphraseFile": str(secret)}}
    cloud = cloud_factory(settings).start()
    ca_key = cloud.dir / "pki" / "ca.key"
    assert ca_key.read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert oct(ca_key.stat().st_mode & 0o777) == "0o600"
    assert PASSPHRASE not in cloud.log()
    assert cloud.stop() == 0

    # The same passphrase opens it again, and the CA signs node certificates.
    cloud.start()
    edge = edge_factory(cloud, "edge-a")
    joined = edge.join(cloud.join_token())
    assert joined.returncode == 0, joined.stderr
    assert cloud.stop() == 0

    missing = _one_clear_line(_run_cloudcore(cloud, {}))
    assert "ca.key is encrypted; give its passphrase" in missing

    wrong = _passphrase_file(tmp_path / "wrong", "not-the-passphrase\n")
    line = _one_clear_line(_run_cloudcore(cloud, {"pki": {"caKeyPassphraseFile": str(wrong)}}))
    assert "ca.key" in line and "wrong passphrase" in line

    twice = _one_clear_line(_run_cloudcore(cloud, settings,
                                           env={"EDGEFLEET_CA_PASSPHRASE": PASSPHRASE}))
    assert "given twice" in twice
    assert PASSPHRASE not in cloud.log()


def test_the_ca_passphrase_can_come_from_the_environment(
    cloud_factory: Callable[..., Cloud], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EDGEFLEET_CA_PASSPHRASE", PASSPHRASE)
    cloud = cloud_factory().start()
    assert (cloud.dir / "pki" / "ca.key").read_text().startswith(
        "-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert cloud.stop() == 0
    cloud.start()  # the same variable opens it again
    assert cloud.stop() == 0
    monkeypatch.delenv("EDGEFLEET_CA_PASSPHRASE")

    line = _one_clear_line(_run_cloudcore(cloud, {}, env={"EDGEFLEET_CA_PASSPHRASE": "nope"}))
    assert "wrong passphrase" in line
    assert PASSPHRASE not in cloud.log()


def test_a_passphrase_file_readable_by_others_is_refused(
    cloud_factory: Callable[..., Cloud], tmp_path: Path,
) -> None:
    cloud = cloud_factory()
    secret = _passphrase_file(tmp_path / "ca-passphrase", PASSPHRASE, mode=0o640)
    line = _one_clear_line(_run_cloudcore(cloud, {"pki": {"caKeyPassphraseFile": str(secret)}}))
    assert str(secret) in line and "0640" in line and "chmod 600" in line
    assert not (cloud.dir / "pki" / "ca.key").exists()  # nothing created unencrypted


@pytest.mark.parametrize(("key", "mode"), [("ca.key", 0o640), ("token.key", 0o604)])
def test_cloudcore_refuses_its_other_keys_when_others_can_read_them(
    cloud_factory: Callable[..., Cloud], key: str, mode: int,
) -> None:
    cloud = cloud_factory().start()
    assert cloud.stop() == 0
    path = cloud.dir / "pki" / key
    path.chmod(mode)
    line = _one_clear_line(_run_cloudcore(cloud, {}))
    assert str(path) in line and f"{mode:04o}" in line
    assert path.stat().st_mode & 0o777 == mode  # reported, not silently "fixed"


def test_edgecore_refuses_a_node_key_readable_by_others(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
) -> None:
    cloud = cloud_factory().start()
    edge = edge_factory(cloud, "edge-a")
    assert edge.join(cloud.join_token()).returncode == 0
    state = json.loads((edge.dir / "pki" / "node.json").read_text())
    key = edge.dir / "pki" / state["key"]
    assert key.stat().st_mode & 0o777 == 0o600
    key.chmod(0o644)

    result = subprocess.run(
        [*command("edgecore"), "run", "--data-dir", str(edge.dir),
         "--mqtt-listen", f"127.0.0.1:{edge.mqtt_port}"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"{key} has mode 0644" in result.stderr
    assert key.stat().st_mode & 0o777 == 0o644

    key.chmod(0o600)  # fixed as the message says: the node connects again
    edge.start()
    wait_until(lambda: "connected to" in edge.log(), what="edge connected")
