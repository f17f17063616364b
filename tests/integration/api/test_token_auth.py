"""TokenAuth on a real sqlite file: tokens, hashes, uniqueness, persistence."""

from __future__ import annotations

import hashlib
import sqlite3
import stat
from pathlib import Path

import pytest

from cloudcore.auth import Principal, Role, TokenAuth
from protocol.errors import AlreadyExists, InvalidObject, Unauthorized


def test_created_token_authenticates_as_its_user(tmp_path: Path) -> None:
    auth = TokenAuth.open(tmp_path / "auth.db")
    token = auth.create("bob", Role.OPERATOR)
    assert token.startswith("efu_") and len(token) >= 4 + 43
    assert auth.authenticate(f"Bearer {token}") == Principal("bob", Role.OPERATOR)
    assert auth.authenticate(f"bearer   {token}  ") == Principal("bob", Role.OPERATOR)
    assert auth.exists("bob") and not auth.exists("alice")
    auth.close()


def test_only_the_hash_is_stored_and_the_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "auth.db"
    auth = TokenAuth.open(path)
    token = auth.create("bob", Role.VIEWER)
    auth.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert token.encode() not in raw
    with sqlite3.connect(path) as conn:
        (stored,) = conn.execute("SELECT token_sha256 FROM api_tokens").fetchone()
    assert stored == hashlib.sha256(token.encode()).digest()


def test_tokens_survive_a_reopen(tmp_path: Path) -> None:
    auth = TokenAuth.open(tmp_path / "auth.db")
    token = auth.create("admin", Role.ADMIN)
    auth.close()
    again = TokenAuth.open(tmp_path / "auth.db")
    assert again.authenticate(f"Bearer {token}") == Principal("admin", Role.ADMIN)
    again.close()


def test_names_are_unique_and_checked(tmp_path: Path) -> None:
    auth = TokenAuth.open(tmp_path / "auth.db")
    first = auth.create("bob", Role.VIEWER)
    with pytest.raises(AlreadyExists):
        auth.create("bob", Role.ADMIN)
    # The failed attempt did not replace bob's token or role.
    assert auth.authenticate(f"Bearer {first}").role is Role.VIEWER
    for bad in ("", "-bob", "bob smith", "x" * 64):
        with pytest.raises(InvalidObject):
            auth.create(bad, Role.VIEWER)
    auth.close()


@pytest.mark.parametrize("header", [None, "", "   ", "Bearer", "Bearer ", "Basic abc",
                                    "Bearer efu_unknown", "efu_no_scheme"])
def test_bad_headers_are_unauthorized_with_a_reason(tmp_path: Path, header: str | None) -> None:
    auth = TokenAuth.open(tmp_path / "auth.db")
    auth.create("bob", Role.VIEWER)
    with pytest.raises(Unauthorized) as err:
        auth.authenticate(header)
    assert "token" in err.value.message or "Bearer" in err.value.message
    auth.close()
