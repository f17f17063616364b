from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from certs.errors import CertError, InsecureKeyFile
from certs.keyfiles import check_private_key_file, read_private, write_private, write_public


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    # A careless service manager may start us with umask 000; keys must still be 0600.
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("permissive_umask")
def test_private_file_is_0600_even_with_umask_000(tmp_path: Path) -> None:
    key = tmp_path / "node.key"
    write_private(key, b"secret")
    assert key.read_bytes() == b"secret"
    assert mode_of(key) == 0o600


def test_public_file_is_0644_even_with_restrictive_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_public(tmp_path / "ca.crt", b"cert")
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "ca.crt") == 0o644


def test_rewrite_replaces_content_and_leaves_no_temp_files(tmp_path: Path) -> None:
    key = tmp_path / "node.key"
    write_private(key, b"old")
    write_private(key, b"new")
    assert key.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.key"]


def test_rewrite_tightens_a_previously_loose_file(tmp_path: Path) -> None:
    key = tmp_path / "node.key"
    key.write_bytes(b"old")
    key.chmod(0o644)
    write_private(key, b"new")
    assert mode_of(key) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o700 | 0o001])
def test_key_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    key = tmp_path / "node.key"
    write_private(key, b"secret")
    key.chmod(mode)
    with pytest.raises(InsecureKeyFile) as info:
        check_private_key_file(key)
    assert str(key) in str(info.value)
    assert f"{mode:04o}" in str(info.value)
    assert "chmod 600" in str(info.value)
    with pytest.raises(InsecureKeyFile):
        read_private(key)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_key_is_accepted(tmp_path: Path, mode: int) -> None:
    key = tmp_path / "node.key"
    write_private(key, b"secret")
    key.chmod(mode)
    check_private_key_file(key)
    assert read_private(key) == b"secret"


def test_missing_key_is_a_clear_cert_error(tmp_path: Path) -> None:
    with pytest.raises(CertError, match="does not exist"):
        read_private(tmp_path / "absent.key")
    with pytest.raises(CertError, match="does not exist"):
        check_private_key_file(tmp_path / "absent.key")
