"""Artifacts end to end: pushed with the real efctl to a real cloudcore, downloaded by a
joined edge over its mutual-TLS identity on the hub's port, verified by SHA-256."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml

from edgecore.artifacts import (
    ArtifactFetcher,
    ArtifactForbidden,
    ArtifactMismatch,
    ArtifactNotFound,
    ArtifactUnavailable,
)
from edgecore.certstate import load_state
from edgecore.config import EdgePaths
from tests.harness import Cloud, Edge, command

pytestmark = pytest.mark.system

MiB = 1024 * 1024


def efctl_push(cloud: Cloud, path: Path) -> str:
    env = {**os.environ, "EFCTL_CONFIG": str(cloud.efctl_config)}
    result = subprocess.run([*command("efctl"), "artifact", "push", str(path)], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def fetcher_for(edge: Edge, chunk_bytes: int = MiB) -> ArtifactFetcher:
    hub = yaml.safe_load((edge.dir / "edgecore.yaml").read_text())["hub"]
    return ArtifactFetcher(EdgePaths(edge.dir), hub, chunk_bytes=chunk_bytes, timeout=10)


def fetch(fetcher: ArtifactFetcher, sha256: str) -> Path:
    return asyncio.run(fetcher.fetch(sha256))


def node_tls(edge: Edge, cloud: Cloud) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Contexts that trust the cloud: one with the node's certificate, one without."""
    pki = edge.dir / "pki"
    state = load_state(pki)
    with_cert = ssl.create_default_context(cadata=cloud.ca_pem())
    with_cert.load_cert_chain(pki / state.cert, pki / state.key)
    return with_cert, ssl.create_default_context(cadata=cloud.ca_pem())


@pytest.fixture
def setup(cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
          tmp_path: Path) -> tuple[Cloud, Edge, bytes, str]:
    cloud = cloud_factory().start()
    edge = edge_factory(cloud, "edge-a")
    result = edge.join(cloud.join_token())
    assert result.returncode == 0, result.stderr
    # Bigger than one hub response (4 MiB), so it takes several ranges.
    data = os.urandom(5 * MiB + 123)
    path = tmp_path / "app.bin"
    path.write_bytes(data)
    digest = efctl_push(cloud, path)
    assert digest == hashlib.sha256(data).hexdigest()
    return cloud, edge, data, digest


def test_an_edge_downloads_verifies_and_caches_an_artifact(
    setup: tuple[Cloud, Edge, bytes, str],
) -> None:
    cloud, edge, data, digest = setup
    fetcher = fetcher_for(edge)
    path = fetch(fetcher, digest)
    assert path == edge.dir / "artifacts" / digest
    assert path.read_bytes() == data
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in path.parent.iterdir()) == [digest]  # no partial left
    assert "is downloading artifact" in cloud.log()

    # Changed on disk: detected on the next fetch and downloaded again.
    with path.open("r+b") as f:
        f.seek(1000)
        f.write(b"tampered")
    assert fetch(fetcher, digest).read_bytes() == data

    # A verified copy needs no cloud at all.
    cloud.stop()
    assert fetch(fetcher, digest).read_bytes() == data
    with pytest.raises(ArtifactUnavailable, match="connection refused") as exc:
        fetch(fetcher, "1" * 64)
    assert exc.value.reason == "ArtifactUnavailable"


def test_a_download_resumes_from_what_an_earlier_attempt_kept(
    setup: tuple[Cloud, Edge, bytes, str], caplog: pytest.LogCaptureFixture,
) -> None:
    cloud, edge, data, digest = setup
    caplog.set_level(logging.INFO, logger="edgecore.artifacts")
    cache = edge.dir / "artifacts"
    cache.mkdir(mode=0o700)
    kept = 3 * MiB + 5
    (cache / f".partial-{digest}").write_bytes(data[:kept])
    assert fetch(fetcher_for(edge, chunk_bytes=256 * 1024), digest).read_bytes() == data
    assert f"resuming the download at byte {kept}" in caplog.text
    assert "is downloading artifact" not in cloud.log()  # byte 0 was never asked for

    # A kept part that is wrong costs one more download from the start, not a failure.
    (cache / digest).unlink()
    (cache / f".partial-{digest}").write_bytes(b"garbage" * 1000)
    assert fetch(fetcher_for(edge), digest).read_bytes() == data
    assert "downloading it again from the start" in caplog.text
    assert sorted(p.name for p in cache.iterdir()) == [digest]


def test_content_that_does_not_match_its_hash_is_refused(
    setup: tuple[Cloud, Edge, bytes, str],
) -> None:
    cloud, edge, data, digest = setup
    stored = cloud.dir / "artifacts" / digest
    stored.write_bytes(b"\0" + data[1:])  # the cloud's copy is damaged
    actual = hashlib.sha256(stored.read_bytes()).hexdigest()
    with pytest.raises(ArtifactMismatch) as exc:
        fetch(fetcher_for(edge), digest)
    assert exc.value.reason == "ArtifactMismatch"
    assert exc.value.actual == actual
    assert f"hash to {actual}, not to {digest}" in str(exc.value)
    assert list((edge.dir / "artifacts").iterdir()) == []  # nothing kept to run


def test_unknown_artifacts_and_unknown_nodes_are_refused(
    setup: tuple[Cloud, Edge, bytes, str],
) -> None:
    cloud, edge, _, digest = setup
    fetcher = fetcher_for(edge)
    with pytest.raises(ArtifactNotFound, match=f"no artifact {'0' * 64}"):
        fetch(fetcher, "0" * 64)

    assert cloud.delete("Node", "edge-a", None).status_code == 200
    with pytest.raises(ArtifactForbidden, match="node edge-a is not registered"):
        fetch(fetcher, digest)


def test_the_hub_serves_plain_https_to_node_certificates_only(
    setup: tuple[Cloud, Edge, bytes, str], tmp_path: Path,
) -> None:
    cloud, edge, data, digest = setup
    small = tmp_path / "small.txt"
    small.write_bytes(b"hello edge\n")
    small_digest = efctl_push(cloud, small)
    with_cert, without_cert = node_tls(edge, cloud)
    base = f"https://127.0.0.1:{cloud.hub_port}/artifacts"

    with httpx.Client(verify=with_cert, timeout=10) as c:
        r = c.get(f"{base}/{small_digest}")
        assert r.status_code == 200 and r.content == b"hello edge\n"
        r = c.get(f"{base}/{digest}", headers={"Range": "bytes=100-199"})
        assert r.status_code == 206 and r.content == data[100:200]
        assert r.headers["content-range"] == f"bytes 100-199/{len(data)}"
        # One answer is held in memory, so a large artifact only comes in ranges.
        r = c.get(f"{base}/{digest}")
        assert r.status_code == 400 and "Range" in r.json()["message"]
        r = c.get(f"{base}/{digest}", headers={"Range": f"bytes={len(data)}-"})
        assert r.status_code == 416
        assert c.get(f"{base}/not-a-hash").status_code == 400

    with httpx.Client(verify=without_cert, timeout=10) as c, \
            pytest.raises(httpx.TransportError):
        c.get(f"{base}/{small_digest}")

    # The websocket link on the same port is untouched by all of this.
    edge.start()
