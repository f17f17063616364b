"""Artifacts through the real HTTPS API: push, list, download, delete; roles; the
upload limit; and the real efctl executable driving them."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudcore.artifacts import ArtifactStore
from cloudcore.auth import Role
from efctl.config import write_efctl_config
from tests.integration.api.api_harness import RunningApi, running_api
from tests.integration.efctl.conftest import Efctl

MAX_BYTES = 3 * 1024 * 1024  # above the API's 1 MiB body limit, on purpose
MiB = 1024 * 1024


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore.open(tmp_path / "artifacts", max_bytes=MAX_BYTES)


@pytest.fixture
def api(tmp_path: Path, store: ArtifactStore) -> Iterator[RunningApi]:
    with running_api(tmp_path / "cloud", artifacts=store) as server:
        yield server


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_in(store: ArtifactStore) -> list[str]:
    return sorted(p.name for p in store.root.iterdir())


def test_push_list_download_delete(api: RunningApi, store: ArtifactStore) -> None:
    data = os.urandom(2 * MiB)  # twice the limit for other API bodies
    digest = sha(data)
    with api.admin() as c:
        r = c.post("/artifacts", params={"name": "model.bin"}, content=data)
        assert r.status_code == 201, r.text
        pushed = r.json()
        assert pushed["sha256"] == digest and pushed["size"] == len(data)
        assert pushed["name"] == "model.bin" and pushed["pushedBy"] == "admin"

        assert c.get("/artifacts").json() == {"items": [pushed]}
        download = c.get(f"/artifacts/{digest}")
        assert download.status_code == 200
        assert download.content == data
        assert download.headers["content-type"] == "application/octet-stream"

        # Stored under its own hash, private to cloudcore, no upload leftovers.
        assert files_in(store) == [digest, f"{digest}.json"]
        assert (store.root / digest).read_bytes() == data
        assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
        assert stat.S_IMODE((store.root / digest).stat().st_mode) == 0o600

        r = c.delete(f"/artifacts/{digest}")
        assert r.status_code == 200 and r.json()["sha256"] == digest
        assert c.get(f"/artifacts/{digest}").status_code == 404
        assert c.get("/artifacts").json() == {"items": []}
        assert files_in(store) == []


def test_pushing_the_same_content_again_is_200_and_changes_nothing(api: RunningApi) -> None:
    data = b"print('hello from the edge')\n"
    with api.admin() as c:
        first = c.post("/artifacts", params={"name": "main.py"}, content=data)
        assert first.status_code == 201
        again = c.post("/artifacts", params={"name": "other-name.py"}, content=data)
        assert again.status_code == 200
        assert again.json() == first.json()  # the first description stays
        assert len(c.get("/artifacts").json()["items"]) == 1


def test_concurrent_pushes_of_one_content_create_it_once(api: RunningApi) -> None:
    data = os.urandom(MiB)
    codes: list[int] = []

    def push() -> None:
        with api.admin() as c:
            codes.append(c.post("/artifacts", content=data).status_code)

    threads = [threading.Thread(target=push) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(codes) == [200, 200, 200, 201]


def test_upload_over_the_limit_is_413_naming_it_and_leaves_nothing(
    api: RunningApi, store: ArtifactStore,
) -> None:
    too_big = b"x" * (MAX_BYTES + 1)
    with api.admin() as c:
        r = c.post("/artifacts", content=too_big)  # announced by Content-Length
        assert r.status_code == 413
        assert r.json()["reason"] == "RequestEntityTooLarge"
        assert f"limit of {MAX_BYTES} bytes" in r.json()["message"]
        assert "artifacts.maxBytes" in r.json()["message"]

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(too_big), 256 * 1024):
                yield too_big[i:i + 256 * 1024]

        r = c.post("/artifacts", content=chunks())  # chunked: counted while streamed
        assert "content-length" not in r.request.headers
        assert r.status_code == 413
        assert f"limit of {MAX_BYTES} bytes" in r.json()["message"]

        exactly = c.post("/artifacts", content=too_big[:MAX_BYTES])
        assert exactly.status_code == 201
    assert files_in(store) == sorted([sha(too_big[:MAX_BYTES]),
                                      f"{sha(too_big[:MAX_BYTES])}.json"])


def test_roles_viewers_read_operators_push_admins_delete(api: RunningApi) -> None:
    viewer, operator = api.user("vic", Role.VIEWER), api.user("olga", Role.OPERATOR)
    data = b"artifact body"
    digest = sha(data)
    with api.client(viewer) as v, api.client(operator) as o, api.admin() as a:
        r = v.post("/artifacts", content=data)
        assert r.status_code == 403
        assert r.json()["message"] == "user 'vic' (viewer) may not create artifacts"

        r = o.post("/artifacts", content=data)
        assert r.status_code == 201 and r.json()["pushedBy"] == "olga"

        assert [i["sha256"] for i in v.get("/artifacts").json()["items"]] == [digest]
        assert v.get(f"/artifacts/{digest}").content == data

        for client, who in ((v, "'vic' (viewer)"), (o, "'olga' (operator)")):
            r = client.delete(f"/artifacts/{digest}")
            assert r.status_code == 403
            assert r.json()["message"] == f"user {who} may not delete artifacts"
        assert a.get(f"/artifacts/{digest}").status_code == 200
        assert a.delete(f"/artifacts/{digest}").status_code == 200

    with api.client() as anonymous:
        assert anonymous.get("/artifacts").status_code == 401
        assert anonymous.post("/artifacts", content=data).status_code == 401


@pytest.mark.parametrize("address", [
    "not-a-hash", "ABCDEF" + "0" * 58, "0" * 63, "0" * 65, "g" * 64,
])
def test_malformed_addresses_are_400(api: RunningApi, address: str) -> None:
    with api.admin() as c:
        for r in (c.get(f"/artifacts/{address}"), c.delete(f"/artifacts/{address}")):
            assert r.status_code == 400, r.text
            assert r.json()["details"]["field"] == "sha256"
            assert "64 lower-case hex digits" in r.json()["message"]


def test_unknown_artifacts_are_404(api: RunningApi) -> None:
    with api.admin() as c:
        for r in (c.get(f"/artifacts/{'0' * 64}"), c.delete(f"/artifacts/{'0' * 64}")):
            assert r.status_code == 404
            assert "efctl artifact push" in r.json()["message"]


def test_empty_uploads_and_bad_names_are_400(api: RunningApi, store: ArtifactStore) -> None:
    with api.admin() as c:
        r = c.post("/artifacts", content=b"")
        assert r.status_code == 400 and "empty" in r.json()["message"]
        for name in ("a/b", "", "x" * 256, "tab\there"):
            r = c.post("/artifacts", params={"name": name}, content=b"data")
            assert r.status_code == 400, name
            assert r.json()["details"]["field"] == "name"
    assert files_in(store) == []


def test_an_interrupted_upload_left_by_a_crash_is_removed_at_start(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    root.mkdir()
    (root / ".upload-abc123").write_bytes(b"half of something")
    store = ArtifactStore.open(root)
    assert files_in(store) == []
    assert store.list() == []


# ---- the real efctl executable ----------------------------------------------------------


@pytest.fixture
def efctl(api: RunningApi, tmp_path: Path) -> Efctl:
    config = tmp_path / "home" / ".edgefleet" / "efctl.yaml"
    write_efctl_config(config, api.url, api.ca_pem, api.admin_token)
    return Efctl(config, tmp_path / "home")


def test_efctl_push_list_delete(efctl: Efctl, api: RunningApi, tmp_path: Path) -> None:
    data = os.urandom(MiB + 17)
    path = tmp_path / "app.tar.gz"
    path.write_bytes(data)
    digest = sha(data)

    pushed = efctl("artifact", "push", str(path))
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout == f"{digest}\n"  # the address alone, for scripts
    assert "stored" in pushed.stderr
    assert f"- name: app.tar.gz\n      sha256: {digest}\n" in pushed.stderr  # App snippet
    with api.admin() as c:
        assert c.get(f"/artifacts/{digest}").content == data

    again = efctl("artifact", "push", str(path), "--name", "renamed")
    assert again.returncode == 0 and again.stdout == f"{digest}\n"
    assert "already stored" in again.stderr

    listing = efctl("artifact", "list")
    assert listing.returncode == 0, listing.stderr
    header, row = listing.stdout.splitlines()
    assert header.split() == ["SHA256", "SIZE", "NAME", "CREATED", "PUSHED-BY"]
    assert row.split()[:4] == [digest, "1.0", "MiB", "app.tar.gz"]
    assert row.split()[-1] == "admin"

    deleted = efctl("artifact", "delete", digest)
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout == f'artifact "{digest}" deleted\n'
    empty = efctl("artifact", "list")
    assert empty.returncode == 0 and empty.stdout == ""
    assert empty.stderr == "No artifacts found.\n"


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_efctl_artifact_errors_are_one_line(efctl: Efctl, api: RunningApi,
                                            tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (MAX_BYTES + 1))
    line = one_error_line(efctl("artifact", "push", str(big)))
    assert f"limit of {MAX_BYTES} bytes" in line

    line = one_error_line(efctl("artifact", "push", str(tmp_path / "missing.bin")))
    assert line == f"error: {tmp_path / 'missing.bin'}: no such file"

    line = one_error_line(efctl("artifact", "delete", "0" * 64))
    assert "no artifact" in line

    line = one_error_line(efctl("artifact", "delete", "nonsense"))
    assert "64 lower-case hex digits" in line

    viewer_config = tmp_path / "viewer.yaml"
    write_efctl_config(viewer_config, api.url, api.ca_pem, api.user("vic", Role.VIEWER))
    small = tmp_path / "small.bin"
    small.write_bytes(b"data")
    line = one_error_line(efctl("artifact", "push", str(small), config=viewer_config))
    assert line.endswith("user 'vic' (viewer) may not create artifacts")

