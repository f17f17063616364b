"""CRUD through the real HTTPS API: the Kubernetes path layout, apply semantics,
preconditions and list filtering."""

from __future__ import annotations

from cloudcore.auth import Role
from tests.integration.api.api_harness import RunningApi
from tests.integration.api.api_objects import (
    DEV_BASE,
    device,
    device_model,
    devices_path,
    models_path,
)


def test_device_model_and_device_round_trip(api: RunningApi) -> None:
    with api.admin() as c:
        r = c.put(models_path(name="thermometer"), json=device_model())
        assert r.status_code == 201, r.text
        r = c.put(devices_path(name="temp-sensor-01"), json=device())
        assert r.status_code == 201, r.text
        created = r.json()
        meta = created["metadata"]
        assert meta["namespace"] == "default" and meta["generation"] == 1
        assert meta["uid"] and meta["creationTimestamp"] and meta["resourceVersion"]
        # The stored object is the manifest as written, plus system metadata.
        assert created["spec"] == device()["spec"]

        got = c.get(devices_path(name="temp-sensor-01"))
        assert got.status_code == 200 and got.json() == created

        # Re-applying the same manifest changes nothing, not even the resourceVersion.
        again = c.put(devices_path(name="temp-sensor-01"), json=device())
        assert again.status_code == 200
        assert again.json()["metadata"]["resourceVersion"] == meta["resourceVersion"]

        changed = c.put(devices_path(name="temp-sensor-01"), json=device(report_cycle=500))
        assert changed.status_code == 200
        assert changed.json()["spec"]["properties"][0]["reportCycle"] == 500
        assert int(changed.json()["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
        assert changed.json()["metadata"]["generation"] == 2

        listed = c.get(devices_path())
        assert listed.status_code == 200
        body = listed.json()
        assert body["kind"] == "DeviceList" and body["apiVersion"] == "devices.kubeedge.io/v1beta1"
        assert [o["metadata"]["name"] for o in body["items"]] == ["temp-sensor-01"]
        assert int(body["metadata"]["resourceVersion"]) >= int(
            changed.json()["metadata"]["resourceVersion"])

        deleted = c.delete(devices_path(name="temp-sensor-01"))
        assert deleted.status_code == 200
        assert deleted.json()["metadata"]["name"] == "temp-sensor-01"
        gone = c.get(devices_path(name="temp-sensor-01"))
        assert gone.status_code == 404 and gone.json()["reason"] == "NotFound"
        assert c.delete(devices_path(name="temp-sensor-01")).status_code == 404


def test_post_creates_once_then_reports_already_exists(api: RunningApi) -> None:
    with api.admin() as c:
        r = c.post(models_path(), json=device_model("m1"))
        assert r.status_code == 201, r.text
        again = c.post(models_path(), json=device_model("m1"))
        assert again.status_code == 409
        assert again.json()["reason"] == "AlreadyExists"


def test_namespace_in_path_fills_a_manifest_without_one(api: RunningApi) -> None:
    body = device_model("m1")
    del body["metadata"]["namespace"]
    with api.admin() as c:
        r = c.put(models_path("factory-2", "m1"), json=body)
        assert r.status_code == 201, r.text
        assert r.json()["metadata"]["namespace"] == "factory-2"


def test_path_and_body_must_name_the_same_object(api: RunningApi) -> None:
    with api.admin() as c:
        r = c.put(devices_path(name="other-name"), json=device("temp-sensor-01"))
        assert r.status_code == 400
        assert r.json()["details"]["field"] == "metadata.name"
        r = c.put(devices_path("ns-b", "temp-sensor-01"), json=device(ns="ns-a"))
        assert r.status_code == 400
        assert r.json()["details"]["field"] == "metadata.namespace"
        r = c.put(models_path(name="temp-sensor-01"), json=device())
        assert r.status_code == 400
        assert r.json()["details"]["field"] == "kind"
        assert c.get(devices_path()).json()["items"] == []


def test_stale_resource_version_is_a_conflict_and_changes_nothing(api: RunningApi) -> None:
    with api.admin() as c:
        first = c.put(devices_path(name="d1"), json=device("d1")).json()
        old_rv = first["metadata"]["resourceVersion"]
        second = c.put(devices_path(name="d1"), json=device("d1", report_cycle=20)).json()

        stale = device("d1", report_cycle=99)
        stale["metadata"]["resourceVersion"] = old_rv
        r = c.put(devices_path(name="d1"), json=stale)
        assert r.status_code == 409
        assert r.json()["reason"] == "Conflict"
        assert c.get(devices_path(name="d1")).json() == second

        r = c.delete(devices_path(name="d1"), params={"resourceVersion": old_rv})
        assert r.status_code == 409
        assert c.get(devices_path(name="d1")).json() == second

        current = device("d1", report_cycle=30)
        current["metadata"]["resourceVersion"] = second["metadata"]["resourceVersion"]
        r = c.put(devices_path(name="d1"), json=current)
        assert r.status_code == 200
        assert r.json()["spec"]["properties"][0]["reportCycle"] == 30


def test_status_in_a_user_write_is_ignored(api: RunningApi) -> None:
    body = device("d1")
    body["status"] = {"state": "online"}
    with api.admin() as c:
        r = c.put(devices_path(name="d1"), json=body)
        assert r.status_code == 201
        assert "status" not in r.json()


def test_status_subresource_is_written_by_admins_only(api: RunningApi) -> None:
    operator = api.user("ops", Role.OPERATOR)
    with api.admin() as admin, api.client(operator) as ops:
        admin.put(devices_path(name="d1"), json=device("d1"))
        status = {"state": "online",
                  "twins": [{"propertyName": "temperature", "reported": {"value": "21"}}]}
        r = ops.put(devices_path(name="d1") + "/status", json={"status": status})
        assert r.status_code == 403
        r = admin.put(devices_path(name="d1") + "/status", json={"status": status})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == status
        got = ops.get(devices_path(name="d1") + "/status")
        assert got.status_code == 200 and got.json()["status"] == status
        bad = admin.put(devices_path(name="d1") + "/status",
                        json={"status": {"twins": [{"propertyName": 5}]}})
        assert bad.status_code == 422
        assert bad.json()["details"]["field"] == "status.twins[0].propertyName"


def test_nodes_are_listed_and_read_under_the_core_api(api: RunningApi) -> None:
    api.add_node("edge-1")
    api.add_node("edge-2", ready="False")
    with api.admin() as c:
        listed = c.get("/api/v1/nodes")
        assert listed.status_code == 200
        body = listed.json()
        assert body["kind"] == "NodeList" and body["apiVersion"] == "v1"
        assert [n["metadata"]["name"] for n in body["items"]] == ["edge-1", "edge-2"]
        one = c.get("/api/v1/nodes/edge-2").json()
        assert one["status"]["conditions"][0]["status"] == "False"
        selected = c.get("/api/v1/nodes", params={"labelSelector": "edgefleet.io/site=plant-a"})
        assert len(selected.json()["items"]) == 2
        # Cluster-scoped: there is no namespaced path for nodes.
        assert c.get("/api/v1/namespaces/default/nodes").status_code == 404


def test_list_filters_by_label_selector_and_spans_namespaces(api: RunningApi) -> None:
    with api.admin() as c:
        for name, ns, env in [("a1", "ns-a", "prod"), ("a2", "ns-a", "dev"),
                              ("b1", "ns-b", "prod")]:
            r = c.put(devices_path(ns, name), json=device(name, ns, labels={"env": env}))
            assert r.status_code == 201, r.text

        def names(path: str, selector: str | None = None) -> list[str]:
            params = {"labelSelector": selector} if selector else None
            r = c.get(path, params=params)
            assert r.status_code == 200, r.text
            return [f"{o['metadata']['namespace']}/{o['metadata']['name']}"
                    for o in r.json()["items"]]

        assert names(devices_path("ns-a")) == ["ns-a/a1", "ns-a/a2"]
        assert names(devices_path("ns-a"), "env=prod") == ["ns-a/a1"]
        assert names(f"{DEV_BASE}/devices") == ["ns-a/a1", "ns-a/a2", "ns-b/b1"]
        assert names(f"{DEV_BASE}/devices", "env in (prod)") == ["ns-a/a1", "ns-b/b1"]
        assert names(f"{DEV_BASE}/devices", "env!=prod") == ["ns-a/a2"]
        assert names(devices_path("ns-c")) == []

        bad = c.get(devices_path("ns-a"), params={"labelSelector": "env in prod"})
        assert bad.status_code == 400 and bad.json()["kind"] == "Status"


def test_creating_across_all_namespaces_is_not_a_thing(api: RunningApi) -> None:
    with api.admin() as c:
        r = c.post(f"{DEV_BASE}/devices", json=device())
        assert r.status_code == 405 and r.json()["kind"] == "Status"
        r = c.get(f"{DEV_BASE}/devices/temp-sensor-01")
        assert r.status_code == 404
