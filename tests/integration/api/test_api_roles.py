"""Roles through the real API: viewers read, operators write everything but Nodes,
admins also manage Nodes, users and join tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from certs.tokens import verify_join_token
from cloudcore.auth import Role
from tests.integration.api.api_harness import RunningApi
from tests.integration.api.api_objects import device, devices_path, models_path, node


def test_viewer_reads_but_cannot_write(api: RunningApi) -> None:
    viewer = api.user("vic", Role.VIEWER)
    with api.admin() as admin, api.client(viewer) as c:
        original = admin.put(devices_path(name="d1"), json=device("d1")).json()
        assert c.get(devices_path()).status_code == 200
        assert c.get(devices_path(name="d1")).json() == original

        r = c.put(devices_path(name="d1"), json=device("d1", report_cycle=1))
        assert r.status_code == 403
        assert r.json()["reason"] == "Forbidden"
        assert r.json()["message"] == "user 'vic' (viewer) may not update devices"
        assert c.post(devices_path(), json=device("d2")).status_code == 403
        assert c.delete(devices_path(name="d1")).status_code == 403
        # Refused before the body is read: a broken body still gets 403, not 400.
        assert c.put(devices_path(name="d1"), content=b"{oops").status_code == 403

        assert admin.get(devices_path(name="d1")).json() == original
        assert [o["metadata"]["name"] for o in admin.get(devices_path()).json()["items"]] == ["d1"]


def test_operator_writes_devices_but_not_nodes(api: RunningApi) -> None:
    api.add_node("edge-1")
    operator = api.user("olga", Role.OPERATOR)
    with api.admin() as admin, api.client(operator) as c:
        assert c.put(devices_path(name="d1"), json=device("d1")).status_code == 201
        assert c.put(models_path(name="m1"), json={
            "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
            "metadata": {"name": "m1"}, "spec": {"protocol": "modbus"}}).status_code == 201
        assert c.delete(devices_path(name="d1")).status_code == 200

        before = admin.get("/api/v1/nodes/edge-1").json()
        assert c.get("/api/v1/nodes/edge-1").status_code == 200
        update = node("edge-1")
        update["spec"] = {"unschedulable": True}
        r = c.put("/api/v1/nodes/edge-1", json=update)
        assert r.status_code == 403
        assert r.json()["message"] == "user 'olga' (operator) may not update nodes"
        assert c.delete("/api/v1/nodes/edge-1").status_code == 403
        assert admin.get("/api/v1/nodes/edge-1").json() == before


def test_admin_updates_and_deletes_nodes_but_nobody_creates_them(api: RunningApi) -> None:
    api.add_node("edge-1")
    with api.admin() as admin:
        update = node("edge-1")
        update["spec"] = {"unschedulable": True}
        r = admin.put("/api/v1/nodes/edge-1", json=update)
        assert r.status_code == 200, r.text
        assert r.json()["spec"] == {"unschedulable": True}
        # Status is the node's own report and survives a spec update.
        assert r.json()["status"]["conditions"][0]["type"] == "Ready"

        # Nodes come from `edgecore join`, never from the API.
        assert admin.put("/api/v1/nodes/edge-9", json=node("edge-9")).status_code == 403
        assert admin.post("/api/v1/nodes", json=node("edge-9")).status_code == 403
        assert admin.get("/api/v1/nodes/edge-9").status_code == 404

        assert admin.delete("/api/v1/nodes/edge-1").status_code == 200
        assert admin.get("/api/v1/nodes").json()["items"] == []


def test_admin_creates_users_whose_tokens_work(api: RunningApi) -> None:
    with api.admin() as admin:
        r = admin.post("/auth/users", json={"name": "bob", "role": "viewer"})
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["name"] == "bob" and created["role"] == "viewer"
        assert created["token"].startswith("efu_")

        again = admin.post("/auth/users", json={"name": "bob", "role": "admin"})
        assert again.status_code == 409 and again.json()["reason"] == "AlreadyExists"
        bad_role = admin.post("/auth/users", json={"name": "eve", "role": "root"})
        assert bad_role.status_code == 422 and bad_role.json()["details"]["field"] == "role"
        no_name = admin.post("/auth/users", json={"role": "viewer"})
        assert no_name.status_code == 422 and no_name.json()["details"]["field"] == "name"

    with api.client(created["token"]) as bob:
        assert bob.get(devices_path()).status_code == 200
        r = bob.post("/auth/users", json={"name": "mallory", "role": "admin"})
        assert r.status_code == 403


def test_only_admins_issue_join_tokens(api: RunningApi) -> None:
    operator = api.user("olga", Role.OPERATOR)
    with api.admin() as admin, api.client(operator) as ops:
        r = ops.post("/auth/jointokens", json={"ttl": "1h"})
        assert r.status_code == 403
        assert r.json()["message"] == "user 'olga' (operator) may not create join tokens"
        assert ops.post("/auth/users", json={"name": "x", "role": "viewer"}).status_code == 403

        before = datetime.now(UTC)
        r = admin.post("/auth/jointokens", json={"ttl": "1h"})
        assert r.status_code == 201, r.text
        issued = r.json()
        expires = datetime.fromisoformat(issued["expires"].replace("Z", "+00:00"))
        assert timedelta(minutes=59) < expires - before <= timedelta(hours=1, seconds=5)
        # The token is a real join token for this cloud's CA.
        verify_join_token(issued["token"], ca_hash=api.join_tokens.ca.ca_hash,
                          secret=api.join_tokens.secret, now=datetime.now(UTC))

        default = admin.post("/auth/jointokens")
        assert default.status_code == 201
        expires = datetime.fromisoformat(default.json()["expires"].replace("Z", "+00:00"))
        assert timedelta(hours=23, minutes=59) < expires - before <= timedelta(hours=24, seconds=5)

        bad = admin.post("/auth/jointokens", json={"ttl": "soon"})
        assert bad.status_code == 422 and bad.json()["details"]["field"] == "ttl"
