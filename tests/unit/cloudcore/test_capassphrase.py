"""Where the CA key passphrase comes from (file or environment), and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from certs.errors import CertError, InsecureKeyFile
from cloudcore.capassphrase import PASSPHRASE_ENV, ca_key_passphrase


def _file(tmp_path: Path, data: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "passphrase"
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_none_configured_means_an_unencrypted_ca_key() -> None:
    assert ca_key_passphrase(None, {}) is None


@pytest.mark.parametrize(("data", "expected"), [
    (b"s3cret\n", b"s3cret"), (b"s3cret\r\n", b"s3cret"), (b"s3cret", b"s3cret"),
    (b" spaced out \n\n", b" spaced out \n"),  # only the one final newline is dropped
])
def test_a_file_gives_its_contents_without_the_editor_s_final_newline(
    tmp_path: Path, data: bytes, expected: bytes,
) -> None:
    assert ca_key_passphrase(_file(tmp_path, data), {}) == expected


def test_the_environment_variable_is_used_as_is() -> None:
    assert ca_key_passphrase(None, {PASSPHRASE_ENV: "from env\n"}) == b"from env\n"


def test_a_passphrase_given_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CertError, match="given twice"):
        ca_key_passphrase(_file(tmp_path, b"a"), {PASSPHRASE_ENV: "a"})


def test_an_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CertError, match="is empty"):
        ca_key_passphrase(_file(tmp_path, b"\n"), {})
    with pytest.raises(CertError, match=f"\\${PASSPHRASE_ENV} is empty"):
        ca_key_passphrase(None, {PASSPHRASE_ENV: ""})


def test_a_passphrase_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, b"s3cret", mode=0o644)
    with pytest.raises(InsecureKeyFile) as info:
        ca_key_passphrase(path, {})
    assert str(info.value).startswith(f"CA key passphrase file {path} has mode 0644")


def test_a_missing_passphrase_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CertError, match=r"CA key passphrase file .*missing does not exist"):
        ca_key_passphrase(tmp_path / "missing", {})
