"""The audit log: every change and every refusal, with who did it; never a secret."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from cloudcore.api.audit import AuditLog
from cloudcore.auth import Role
from tests.harness import wait_until
from tests.integration.api.api_harness import RunningApi
from tests.integration.api.api_objects import device, devices_path


def entries(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_changes_and_refusals_are_recorded_with_their_author(api: RunningApi) -> None:
    viewer = api.user("vic", Role.VIEWER)
    with api.admin() as admin, api.client(viewer) as v, api.client("efu_wrong") as stranger:
        assert admin.put(devices_path(name="d1"), json=device("d1")).status_code == 201
        assert admin.get(devices_path(name="d1")).status_code == 200   # a read: not recorded
        assert v.delete(devices_path(name="d1")).status_code == 403
        assert stranger.get(devices_path()).status_code == 401
        assert admin.delete(devices_path(name="d1")).status_code == 200

    # The entry is written after the response has gone out: poll for the last one.
    wait_until(lambda: len(entries(api.audit_path)) >= 4, timeout=10)
    got = [(e["user"], e["role"], e["method"], e["path"], e["status"])
           for e in entries(api.audit_path)]
    d1 = devices_path(name="d1")
    assert got == [
        ("admin", "admin", "PUT", d1, 201),
        ("vic", "viewer", "DELETE", d1, 403),
        (None, None, "GET", devices_path(), 401),
        ("admin", "admin", "DELETE", d1, 200),
    ]
    assert all(e["remote"] == "127.0.0.1" and e["time"].endswith("Z")
               for e in entries(api.audit_path))


def test_the_log_is_owner_only_and_holds_no_token(api: RunningApi) -> None:
    with api.admin() as admin:
        r = admin.post("/auth/users", json={"name": "bob", "role": "operator"})
        assert r.status_code == 201
        bob_token = r.json()["token"]
        join = admin.post("/auth/jointokens", json={"ttl": "1h"})
        assert join.status_code == 201
    with api.client(bob_token) as bob:
        assert bob.put(devices_path(name="d2"), json=device("d2")).status_code == 201

    wait_until(lambda: len(entries(api.audit_path)) >= 3, timeout=10)
    assert stat.S_IMODE(api.audit_path.stat().st_mode) == 0o600
    text = api.audit_path.read_text()
    for secret in (api.admin_token, bob_token, join.json()["token"]):
        assert secret not in text
    assert [(e["user"], e["path"]) for e in entries(api.audit_path)] == [
        ("admin", "/auth/users"), ("admin", "/auth/jointokens"), ("bob", devices_path(name="d2")),
    ]


def test_a_full_log_rolls_over_to_one_old_generation(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log", max_bytes=400)
    for i in range(20):
        log.record({"user": "u", "n": i})
    current = entries(tmp_path / "audit.log")
    old = entries(tmp_path / "audit.log.1")
    assert (tmp_path / "audit.log").stat().st_size <= 400
    # Nothing lost in between: the two generations hold the newest entries, in order.
    kept = [e["n"] for e in old + current]
    assert kept == list(range(20 - len(kept), 20)) and len(current) > 0 and len(old) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.log", "audit.log.1"]
