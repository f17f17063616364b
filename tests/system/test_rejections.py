"""Everything a user or a node must not be able to do is refused with a clear error and
leaves the cloud as it was.  Real cloudcore/edgecore processes, real TLS, real CLIs; the
raw-link tests speak the wire protocol over an mTLS websocket of their own, with a
certificate the cloud really issued (or one it must refuse)."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from certs.ca import CertAuthority
from certs.csr import new_node_key_and_csr
from certs.keyfiles import write_private, write_public
from certs.tls import client_context
from certs.tokens import ca_hash_from_der, make_join_token
from protocol import envelope as wire
from protocol.envelope import Envelope, ObjectRef, Op
from tests.harness import BIN, Cloud, Edge, device, device_model, node_ready, wait_until

pytestmark = pytest.mark.system

ANSWER_TIMEOUT = 5.0


# ---- a raw link: one mTLS websocket speaking envelopes ----------------------------------


def edge_credentials(edge: Edge) -> tuple[Path, Path, Path]:
    """(ca, cert, key) of a joined edge, as named by its pki/node.json."""
    pki = edge.dir / "pki"
    state = json.loads((pki / "node.json").read_text())
    return pki / "ca.crt", pki / state["cert"], pki / state["key"]


def now_ms() -> int:
    return int(time.time() * 1000)


class RawLink:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, op: Op, *, ref: ObjectRef | None = None, body: Any = None) -> str:
        env = wire.make(op, ts=now_ms(), ref=ref, body=body)
        await self.ws.send(wire.encode(env))
        return env.id

    async def next(self, parent: str | None, op: Op | None = None) -> Envelope:
        """The next envelope answering ``parent`` (None: one that names no parent, as
        for a frame the cloud could not decode).  Objects the cloud pushes meanwhile
        (upserts, deletes) are not what these tests look at and are skipped."""
        async def wait() -> Envelope:
            while True:
                env = wire.decode(await self.ws.recv())
                if env.op in (Op.UPSERT, Op.DELETE):
                    continue
                if env.parent_id == parent and (op is None or env.op is op):
                    return env
        return await asyncio.wait_for(wait(), ANSWER_TIMEOUT)

    async def request(self, op: Op, *, ref: ObjectRef | None = None,
                      body: Any = None) -> Envelope:
        return await self.next(await self.send(op, ref=ref, body=body))

    async def send_statuses(self, items: list[tuple[str, ObjectRef, dict[str, Any]]]) -> str:
        """Send one ``statuses`` frame of (item id, object, status) items, as edgecore
        batches its outbox; returns the frame's id."""
        frame_id = wire.new_id()
        await self.ws.send(wire.encode_statuses(frame_id, now_ms(), items))
        return frame_id

    async def answers_before_sync(self, parent: str) -> list[Envelope]:
        """Every envelope answering ``parent`` that arrives before the answer to a sync
        sent now: the cloud handles a session's frames in order, so whatever it would
        still say about ``parent`` comes first."""
        marker = await self.send(Op.SYNC, body={"holdings": {}})
        answers: list[Envelope] = []

        async def collect() -> None:
            while True:
                env = wire.decode(await self.ws.recv())
                if env.parent_id == marker:
                    assert env.op is Op.SYNC_DONE, env.body
                    return
                if env.parent_id == parent:
                    answers.append(env)
        await asyncio.wait_for(collect(), ANSWER_TIMEOUT)
        return answers

    async def sync(self) -> Envelope:
        return await self.request(Op.SYNC, body={"holdings": {}})


@asynccontextmanager
async def raw_link(cloud: Cloud, ca: Path | bytes, cert: Path | None = None,
                   key: Path | None = None) -> AsyncIterator[RawLink]:
    ctx = client_context(ca, cert, key)
    async with connect(f"wss://127.0.0.1:{cloud.hub_port}", ssl=ctx, open_timeout=10,
                       compression=None, close_timeout=2) as ws:
        yield RawLink(ws)


async def refused_handshake(cloud: Cloud, ctx_args: tuple[Any, ...]) -> BaseException:
    """Connect and return the error the refusal surfaced as.  With TLS 1.3 the server
    checks the client certificate after the client considers the handshake done, so the
    refusal reaches the client as a broken HTTP upgrade (InvalidMessage/EOF/reset) rather
    than as an SSLError (libcheck gotcha); any of those counts, a timeout does not."""
    try:
        async with raw_link(cloud, *ctx_args) as link:
            await link.sync()
    except (InvalidHandshake, EOFError, ConnectionClosed, OSError) as exc:
        assert not isinstance(exc, TimeoutError), "the hub neither answered nor refused"
        return exc
    raise AssertionError("the hub accepted a client it must refuse")


def error_body(env: Envelope) -> wire.ErrorBody:
    assert env.op is Op.ERROR, f"expected an error, got {env.op.value}: {env.body}"
    return wire.ErrorBody.model_validate(env.body)


# ---- helpers for the processes -------------------------------------------------------


def joined(edge: Edge, token: str) -> Edge:
    result = edge.join(token)
    assert result.returncode == 0, result.stderr
    return edge


def ca_hash_of(cloud: Cloud) -> str:
    return ca_hash_from_der(ssl.PEM_cert_to_DER_cert(cloud.ca_pem()))


def has_certificate(edge: Edge) -> bool:
    return edge.dir.exists() and any(
        p.suffix in (".crt", ".key") or p.name == "node.json" for p in edge.dir.rglob("*"))


def efctl(cloud: Cloud, *args: str) -> subprocess.CompletedProcess[str]:
    exe = BIN / "efctl"
    cmd = [str(exe)] if exe.exists() else [str(BIN / "python"), "-m", "efctl"]
    return subprocess.run([*cmd, "--config", str(cloud.efctl_config), *args],
                          capture_output=True, text=True, timeout=30)


def ready_since(cloud: Cloud, node: str) -> tuple[str | None, str | None]:
    """(Ready status, its lastTransitionTime): changes only if readiness changed."""
    for cond in (cloud.get("Node", node, None).get("status") or {}).get("conditions") or []:
        if cond["type"] == "Ready":
            return cond["status"], cond.get("lastTransitionTime")
    return None, None


# ---- join -----------------------------------------------------------------------------


def test_expired_join_token_is_refused_and_creates_nothing(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
) -> None:
    cloud = cloud_factory(settings={"nodes": {"clockSkewSeconds": 0}}).start()
    secret = (cloud.dir / "pki" / "token.key").read_bytes()
    # Made by the cloud's own secret for its own CA: everything is right but the time.
    token = make_join_token(ca_hash_of(cloud), secret, timedelta(minutes=10),
                            now=datetime.now(UTC) - timedelta(minutes=12))
    rv = cloud.store_rv()
    edge = edge_factory(cloud, "edge-a")

    result = edge.join(token)

    assert result.returncode != 0
    assert "expired" in result.stderr
    assert "efctl token create" in result.stderr  # how to get a new one
    assert cloud.list("Node") == []
    assert cloud.store_rv() == rv
    assert not has_certificate(edge)


def test_token_of_another_cloud_is_refused_as_a_ca_mismatch(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
) -> None:
    cloud = cloud_factory().start()
    other = cloud_factory(name="other").start()
    rv = cloud.store_rv()
    edge = edge_factory(cloud, "edge-a")

    result = edge.join(other.join_token())

    assert result.returncode != 0
    assert "CA" in result.stderr and "not the one this token was made for" in result.stderr
    assert cloud.list("Node") == [] and other.list("Node") == []
    assert cloud.store_rv() == rv
    assert not has_certificate(edge)


# ---- who may open a link ------------------------------------------------------------


def test_client_without_certificate_is_refused_and_nodes_keep_working(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
) -> None:
    cloud = cloud_factory().start()
    edge = joined(edge_factory(cloud, "edge-a"), cloud.join_token()).start()
    wait_until(lambda: node_ready(cloud, "edge-a") == "True", what="edge-a Ready")

    asyncio.run(refused_handshake(cloud, (cloud.ca_pem().encode(),)))

    assert cloud.proc is not None and cloud.proc.poll() is None
    assert "connected again" not in cloud.log()
    assert cloud.apply(device_model()).status_code == 201
    assert cloud.apply(device("after", "edge-a")).status_code == 201
    wait_until(lambda: edge.cached_one("Device", "after"), what="a device reaching edge-a")
    assert node_ready(cloud, "edge-a") == "True"


def test_certificate_from_another_ca_for_a_real_node_name_is_refused(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge], tmp_path: Path,
) -> None:
    cloud = cloud_factory().start()
    edge = joined(edge_factory(cloud, "edge-a"), cloud.join_token()).start()
    wait_until(lambda: node_ready(cloud, "edge-a") == "True", what="edge-a Ready")
    before = ready_since(cloud, "edge-a")
    # A certificate with everything right (CN edge-a, clientAuth) except its issuer.
    impostor = CertAuthority.generate()
    key_pem, csr_pem = new_node_key_and_csr("edge-a")
    cert_path, key_path = tmp_path / "impostor.crt", tmp_path / "impostor.key"
    write_public(cert_path, impostor.sign_node_csr(csr_pem, "edge-a"))
    write_private(key_path, key_pem)

    asyncio.run(refused_handshake(cloud, (cloud.ca_pem().encode(), cert_path, key_path)))

    # The real session was neither replaced nor disturbed.
    assert "connected again" not in cloud.log()
    assert cloud.log().count("node edge-a connected from") == 1
    assert ready_since(cloud, "edge-a") == before
    assert cloud.apply(device_model()).status_code == 201
    assert cloud.apply(device("after", "edge-a")).status_code == 201
    wait_until(lambda: edge.cached_one("Device", "after"), what="a device reaching edge-a")


# ---- what a linked node may write ---------------------------------------------------


def two_nodes(cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
              devices: list[tuple[str, str]]) -> tuple[Cloud, Edge]:
    """A cloud with nodes edge-a and edge-b joined and ``devices`` ((name, node) pairs)
    applied; returns the cloud and edge-a.  Neither edgecore runs: a raw link is then
    edge-a's only session."""
    cloud = cloud_factory().start()
    token = cloud.join_token()
    edge_a = joined(edge_factory(cloud, "edge-a"), token)
    joined(edge_factory(cloud, "edge-b"), token)
    cloud.apply(device_model())
    for name, node in devices:
        assert cloud.apply(device(name, node)).status_code == 201
    return cloud, edge_a


def test_node_may_write_only_its_own_status(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
) -> None:
    cloud, edge_a = two_nodes(cloud_factory, edge_factory,
                              [("dev-a", "edge-a"), ("dev-b", "edge-b")])
    node_b, dev_b = cloud.get("Node", "edge-b", None), cloud.get("Device", "dev-b")
    hijack = {"conditions": [{"type": "Ready", "status": "False", "reason": "Hijacked",
                              "message": "written by edge-a"}]}

    async def scenario() -> tuple[Envelope, Envelope, Envelope]:
        async with raw_link(cloud, *edge_credentials(edge_a)) as link:
            assert (await link.sync()).op is Op.SYNC_DONE
            on_node_b = await link.request(
                Op.STATUS, ref=ObjectRef(kind="Node", name="edge-b"),
                body={"status": hijack})
            on_dev_b = await link.request(
                Op.STATUS, ref=ObjectRef(kind="Device", namespace="default", name="dev-b"),
                body={"status": {"state": "offline"}})
            on_dev_a = await link.request(
                Op.STATUS, ref=ObjectRef(kind="Device", namespace="default", name="dev-a"),
                body={"status": {"state": "online"}})
            return on_node_b, on_dev_b, on_dev_a

    on_node_b, on_dev_b, on_dev_a = asyncio.run(scenario())

    for answer, key in ((on_node_b, "edge-b"), (on_dev_b, "dev-b")):
        err = error_body(answer)
        assert err.code == 403 and err.reason == "Forbidden"
        assert "edge-a" in err.message and key in err.message, err.message
    assert cloud.get("Node", "edge-b", None) == node_b
    assert cloud.get("Device", "dev-b") == dev_b
    assert on_dev_a.op is Op.ACK
    assert cloud.get("Device", "dev-a")["status"]["state"] == "online"


def device_ref(name: str) -> ObjectRef:
    return ObjectRef(kind="Device", namespace="default", name=name)


def test_one_statuses_frame_writes_the_allowed_items_and_names_each_refused_one(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
) -> None:
    cloud, edge_a = two_nodes(cloud_factory, edge_factory,
                              [("dev-a", "edge-a"), ("dev-a2", "edge-a"), ("dev-b", "edge-b")])
    dev_a2, dev_b = cloud.get("Device", "dev-a2"), cloud.get("Device", "dev-b")
    items: list[tuple[str, ObjectRef, dict[str, Any]]] = [
        ("own", device_ref("dev-a"), {"state": "online"}),
        ("theirs", device_ref("dev-b"), {"state": "offline"}),
        ("ghost", device_ref("ghost"), {"state": "online"}),
        ("invalid", device_ref("dev-a2"), {"state": 42}),  # state is typed as a string
    ]

    async def scenario() -> tuple[Envelope, list[Envelope]]:
        async with raw_link(cloud, *edge_credentials(edge_a)) as link:
            assert (await link.sync()).op is Op.SYNC_DONE
            frame = await link.send_statuses(items)
            answer = await link.next(frame)
            return answer, await link.answers_before_sync(frame)

    answer, more = asyncio.run(scenario())

    assert answer.op is Op.ACK, answer.body
    assert more == [], "a statuses frame must be answered once"
    refused = {r.id: r for r in wire.StatusesAckBody.model_validate(answer.body).refused}
    assert sorted(refused) == ["ghost", "invalid", "theirs"]
    theirs, ghost, invalid = refused["theirs"], refused["ghost"], refused["invalid"]
    assert (theirs.code, theirs.reason) == (403, "Forbidden")
    assert "edge-a" in theirs.message and "dev-b" in theirs.message, theirs.message
    assert (ghost.code, ghost.reason) == (404, "NotFound") and "ghost" in ghost.message
    assert invalid.code in (400, 422), invalid
    assert invalid.field is not None and invalid.field.startswith("body.items[3].status"), (
        invalid.field)
    assert cloud.get("Device", "dev-a")["status"] == {"state": "online"}
    assert cloud.get("Device", "dev-b") == dev_b
    assert cloud.get("Device", "dev-a2") == dev_a2
    with cloud.api() as api:
        assert api.get("/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices/ghost"
                       ).status_code == 404
    assert "node edge-a: 3 of 4 statuses refused" in cloud.log()


def test_a_statuses_frame_costs_a_token_per_status_and_a_limited_one_writes_nothing(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
) -> None:
    # A bucket of 8 refilling at one token every 2 s: the test's frames, sent back to
    # back, find it as they left it.
    cloud = cloud_factory(settings={"hub": {"messagesPerSecond": 0.5,
                                            "messageBurst": 8}}).start()
    edge = joined(edge_factory(cloud, "edge-a"), cloud.join_token())
    cloud.apply(device_model())
    names = [f"dev-{i}" for i in range(5)]
    for name in names:
        assert cloud.apply(device(name, "edge-a")).status_code == 201

    async def scenario() -> tuple[Envelope, str, Envelope, Envelope]:
        async with raw_link(cloud, *edge_credentials(edge)) as link:
            assert (await link.sync()).op is Op.SYNC_DONE  # 1 token: 7 left
            first = await link.send_statuses(
                [(wire.new_id(), device_ref(n), {"state": "online"}) for n in names])
            first_answer = await link.next(first)  # 5 tokens: 2 left
            second = await link.send_statuses(
                [(wire.new_id(), device_ref(n), {"state": "offline"}) for n in names])
            second_answer = await link.next(second)  # needs 5 of 2: refused whole
            # A refused frame costs nothing: the 2 tokens left still pay for a sync.
            return first_answer, second, second_answer, await link.sync()

    first_answer, second, second_answer, sync_after = asyncio.run(scenario())

    assert first_answer.op is Op.ACK and first_answer.body is None, first_answer.body
    err = error_body(second_answer)
    assert (err.code, err.reason) == (429, "TooManyRequests"), err
    assert second_answer.parent_id == second
    assert sync_after.op is Op.SYNC_DONE
    # The first frame is written whole, nothing of the second is.
    assert {n: cloud.get("Device", n).get("status") for n in names} == {
        n: {"state": "online"} for n in names}


# ---- the API ------------------------------------------------------------------------


def test_stale_resource_version_is_a_conflict(cloud_factory: Callable[..., Cloud]) -> None:
    cloud = cloud_factory().start()
    cloud.apply(device_model())
    first = cloud.apply(device("d", None, desired="1")).json()
    current = cloud.apply(device("d", None, desired="2")).json()
    rv = cloud.store_rv()
    stale = device("d", None, desired="3")
    stale["metadata"]["resourceVersion"] = first["metadata"]["resourceVersion"]

    r = cloud.apply(stale)

    assert r.status_code == 409, r.text
    assert r.json()["reason"] == "Conflict"
    assert cloud.get("Device", "d") == current
    assert cloud.store_rv() == rv


def test_efctl_refuses_invalid_yaml_and_wrong_types_in_one_line(
    cloud_factory: Callable[..., Cloud], tmp_path: Path,
) -> None:
    cloud = cloud_factory().start()
    cloud.apply(device_model())
    rv = cloud.store_rv()
    broken = tmp_path / "broken.yaml"
    broken.write_text("apiVersion: v1\nkind: [Device\nmetadata: {name: x}\n")
    wrong_type = device("d", None)
    wrong_type["spec"]["properties"][0]["reportCycle"] = "fast"
    typed = tmp_path / "typed.yaml"
    typed.write_text(json.dumps(wrong_type))  # JSON is YAML

    bad_yaml = efctl(cloud, "apply", "-f", str(broken))
    bad_type = efctl(cloud, "apply", "-f", str(typed))

    assert bad_yaml.returncode != 0
    assert len(bad_yaml.stderr.strip().splitlines()) == 1, bad_yaml.stderr
    assert "YAML" in bad_yaml.stderr and "line" in bad_yaml.stderr
    assert bad_type.returncode != 0
    assert len(bad_type.stderr.strip().splitlines()) == 1, bad_type.stderr
    assert "spec.properties[0].reportCycle" in bad_type.stderr
    assert cloud.store_rv() == rv
    assert cloud.list("Device") == []


def test_viewer_can_read_but_not_write(cloud_factory: Callable[..., Cloud]) -> None:
    cloud = cloud_factory().start()
    model = cloud.apply(device_model()).json()
    with cloud.api() as admin:
        r = admin.post("/auth/users", json={"name": "vera", "role": "viewer"})
        assert r.status_code == 201, r.text
        viewer = r.json()["token"]
    rv = cloud.store_rv()

    r = cloud.apply(device("d", None), token=viewer)

    assert r.status_code == 403, r.text
    assert r.json()["reason"] == "Forbidden"
    assert cloud.list("Device") == []
    assert cloud.store_rv() == rv
    with cloud.api(viewer) as api:
        r = api.get("/apis/devices.kubeedge.io/v1beta1/namespaces/default/devicemodels/"
                    "temp-model")
        assert r.status_code == 200
        assert r.json() == model


# ---- link robustness ----------------------------------------------------------------


def test_malformed_oversized_flooding_and_forbidden_frames_keep_the_link_up(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
) -> None:
    cloud = cloud_factory(settings={"hub": {"maxFrameBytes": 4096, "messagesPerSecond": 5,
                                            "messageBurst": 10}}).start()
    edge = joined(edge_factory(cloud, "edge-a"), cloud.join_token())
    upsert = {"kind": "Device", "namespace": "default", "name": "d"}

    async def scenario() -> None:
        async with raw_link(cloud, *edge_credentials(edge)) as link:
            assert (await link.sync()).op is Op.SYNC_DONE

            await link.ws.send("this is not an envelope")
            err = error_body(await link.next(None))
            assert (err.code, err.reason) == (400, "BadFrame")
            assert (await link.sync()).op is Op.SYNC_DONE

            big = wire.make(Op.HEARTBEAT, ts=now_ms(), body={"padding": "x" * 5000})
            await link.ws.send(wire.encode(big))
            # Not decoded, but named by the id that leads it (the edge resends in
            # smaller frames what the cloud names as too large).
            err = error_body(await link.next(big.id))
            assert err.code == 413 and "4096" in err.message
            assert (await link.sync()).op is Op.SYNC_DONE

            # upsert is the cloud's operation, never the edge's.
            err = error_body(await link.request(Op.UPSERT, ref=ObjectRef(**upsert),
                                                body={"kind": "Device"}))
            assert err.code == 400 and err.field == "op"
            assert (await link.sync()).op is Op.SYNC_DONE

            # 30 frames at once against a bucket of 10 refilling at 5/s.
            ids = [await link.send(Op.SYNC, body={"holdings": {}}) for _ in range(30)]
            answers = [await link.next(i) for i in ids]
            limited = [a for a in answers if a.op is Op.ERROR]
            assert limited, "a burst of 30 frames was not rate limited"
            assert {error_body(a).code for a in limited} == {429}
            assert any(a.op is Op.SYNC_DONE for a in answers)

            # Still up: once the bucket refills, a sync is answered again.
            deadline = time.monotonic() + 10
            while (await link.sync()).op is not Op.SYNC_DONE:
                assert time.monotonic() < deadline, "the link never recovered"
                await asyncio.sleep(0.1)

    asyncio.run(scenario())
    assert "rejected frame" in cloud.log()


def test_second_session_of_a_node_replaces_the_first(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
) -> None:
    cloud = cloud_factory().start()
    edge = joined(edge_factory(cloud, "edge-a"), cloud.join_token())
    creds = edge_credentials(edge)

    async def scenario() -> None:
        async with raw_link(cloud, *creds) as first:
            assert (await first.sync()).op is Op.SYNC_DONE
            async with raw_link(cloud, *creds) as second:
                await asyncio.wait_for(first.ws.wait_closed(), ANSWER_TIMEOUT)
                assert first.ws.close_code == 4000
                assert (await second.sync()).op is Op.SYNC_DONE

    asyncio.run(scenario())
    assert "replacing its previous session" in cloud.log()


def test_deleted_node_cannot_link_again(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
) -> None:
    cloud = cloud_factory().start()
    edge = joined(edge_factory(cloud, "edge-a"), cloud.join_token()).start()
    wait_until(lambda: node_ready(cloud, "edge-a") == "True", what="edge-a Ready")

    assert cloud.delete("Node", "edge-a", None).status_code == 200
    assert edge.stop() == 0

    async def scenario() -> ConnectionClosed:
        async with raw_link(cloud, *edge_credentials(edge)) as link:
            try:
                await link.sync()
            except ConnectionClosed as exc:
                return exc
        raise AssertionError("the hub kept a link from a deleted node")

    closed = asyncio.run(scenario())
    assert closed.rcvd is not None and closed.rcvd.code == 4003
    assert "not registered" in closed.rcvd.reason

    edge.start(wait_connected=False)
    wait_until(lambda: "not registered" in edge.log(), what="edgecore told it is not registered")
    assert "refused link from edge-a" in cloud.log()
    assert cloud.list("Node") == []  # a refused node's heartbeats recreate nothing


def test_deleting_a_node_cuts_its_live_link(
    cloud_factory: Callable[..., Cloud], edge_factory: Callable[..., Edge],
) -> None:
    cloud = cloud_factory().start()
    edge = joined(edge_factory(cloud, "edge-a"), cloud.join_token()).start()
    wait_until(lambda: node_ready(cloud, "edge-a") == "True", what="edge-a Ready")

    assert cloud.delete("Node", "edge-a", None).status_code == 200

    wait_until(lambda: "not registered" in edge.log(), 5,
               what="the running edgecore to be cut off")
