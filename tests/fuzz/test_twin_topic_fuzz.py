"""Hostile payloads on every device-plane request topic of a real twin manager.

Any app or mapper on the edge's broker may publish anything on
``$hw/events/device/<ns>/<name>/twin/update``, ``.../twin/get``, ``.../state/update`` and
``$hw/events/node/<node>/membership/get``.  The twin manager (edgecore/twin) runs here on
the real embedded broker with its real sqlite store, and a paho client plays the app.
What the apps and the cloud rely on: every request is answered on its ``/result`` topic,
as KubeEdge does (an error result for anything malformed: never silence, never a dead
manager); a rejected request leaves the stored twin and state exactly as they were; and
after all of it a valid update still works.

Hypothesis drives the payloads from the test's thread while the broker, the manager and
the client's futures live on an event loop of their own (a ``@given`` test cannot be a
coroutine).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgecore.eventbus import Bus, start_eventbus, stop_eventbus
from edgecore.eventbus.broker import EmbeddedBroker
from edgecore.meta import MetaCache
from edgecore.twin.manager import DeviceTwins
from edgecore.twin.store import TwinStore
from protocol.envelope import ObjectRef
from protocol.twin_messages import MAX_PAYLOAD_BYTES
from tests.fuzz.budget import Tally, fuzz, scaled
from tests.integration.eventbus.peers import PahoPeer

T = TypeVar("T")
NODE = "edge-fuzz"
DEVICE = "thermo-1"
DEVICE_BASE = "$hw/events/device/default"
TOPICS = {
    "twin/update": f"{DEVICE_BASE}/{{name}}/twin/update",
    "twin/get": f"{DEVICE_BASE}/{{name}}/twin/get",
    "state/update": f"{DEVICE_BASE}/{{name}}/state/update",
    "membership/get": f"$hw/events/node/{NODE}/membership/get",
}
WAIT = 15.0  # seconds for one answer on a loaded machine


class LoopThread:
    """An event loop on its own thread, for coroutines started from synchronous code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop",
                                        daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = WAIT) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def _model() -> dict[str, Any]:
    return {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
            "metadata": {"name": "sensor", "namespace": "default", "resourceVersion": "1"},
            "spec": {"protocol": "modbus", "properties": [
                {"name": "temperature", "type": "INT", "accessMode": "ReadWrite"},
                {"name": "mode", "type": "STRING", "accessMode": "ReadWrite"}]}}


def _device() -> dict[str, Any]:
    return {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
            "metadata": {"name": DEVICE, "namespace": "default", "resourceVersion": "2"},
            "spec": {"deviceModelRef": {"name": "sensor"}, "nodeName": NODE,
                     "properties": [{"name": "temperature", "reportCycle": 100000,
                                     "desired": {"value": "20"}},
                                    {"name": "mode", "reportCycle": 100000}]}}


@dataclass
class Rig:
    loop: LoopThread
    twin_db: Path
    cache: MetaCache
    store: TwinStore
    bus: Bus
    broker: EmbeddedBroker
    twins: DeviceTwins
    app: PahoPeer

    def stored(self) -> tuple[Any, ...] | None:
        """The device's row as the manager committed it (twin, state, last online)."""
        with sqlite3.connect(self.twin_db) as db:
            row = db.execute("SELECT twin, state, last_online FROM devices WHERE key = ?",
                             (f"Device/default/{DEVICE}",)).fetchone()
        return None if row is None else tuple(row)

    def ask(self, topic: str, payload: bytes) -> dict[str, Any]:
        """Publish a request and return the answer on its result topic."""
        return self.loop.run(self._ask(topic, payload))

    async def _ask(self, topic: str, payload: bytes) -> dict[str, Any]:
        await self.app.publish(topic, payload)
        # One request at a time, and the client listens to result topics only: the next
        # message is this request's answer (a missing one times out).
        got_topic, body = await self.app.next_message()
        assert got_topic == f"{topic}/result", f"{got_topic} answered a request on {topic}"
        answer: dict[str, Any] = json.loads(body)
        return answer


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = Path(tmp_path_factory.mktemp("twin-fuzz"))
    loop = LoopThread()

    async def up() -> Rig:
        cache = MetaCache.open(root / "cache.db")
        cache.upsert(_model())
        cache.upsert(_device())
        store = TwinStore.open(root / "twin.db")
        bus, broker = await start_eventbus("embedded", ("127.0.0.1", 0))
        assert broker is not None

        def upstream(statuses: list[tuple[ObjectRef, dict[str, Any]]]) -> None:
            pass  # the cloud side is not under test here

        twins = DeviceTwins(NODE, cache, store, publish=bus.publish, upstream=upstream,
                            listened=bus.has_subscribers)
        for topic_filter in twins.subscriptions():
            await bus.subscribe(topic_filter, twins.on_mqtt)
        await twins.start()
        app = PahoPeer(broker.bound_port, "fuzz-app")
        await app.connect()
        for reply in ("twin/update/result", "twin/get/result", "state/update/result"):
            await app.subscribe(f"{DEVICE_BASE}/+/{reply}")
        await app.subscribe(f"$hw/events/node/{NODE}/membership/get/result")
        return Rig(loop, root / "twin.db", cache, store, bus, broker, twins, app)

    made = loop.run(up(), timeout=60)
    yield made

    async def down() -> None:
        await made.app.close()
        await made.twins.stop()
        await stop_eventbus(made.bus, made.broker)
        made.store.close()
        made.cache.close()

    loop.run(down(), timeout=60)
    loop.close()


# --- payloads --------------------------------------------------------------------------

json_leaves = (st.none() | st.booleans() | st.text(max_size=12)
               | st.integers(-(2**80), 2**80) | st.floats(allow_nan=False)
               | st.sampled_from([2**63, -(2**63) - 1, 10**400, 1e308, "", "21", "x" * 600]))
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
field_names = st.sampled_from(["event_id", "timestamp", "twin", "state", "expected",
                               "actual", "value", "metadata", "type", "optional",
                               "expected_version", "actual_version", "cloud", "edge",
                               "temperature", "mode", "Event_ID", "TWIN"])


def _paths(value: Any, at: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if not isinstance(value, dict):
        return [at]
    return [at] + [p for k, v in value.items() for p in _paths(v, (*at, k))]


@st.composite
def _almost(draw: st.DrawFn, shape: dict[str, Any]) -> dict[str, Any]:
    """``shape`` (a valid request) with up to three things wrong: a value replaced by
    anything at all, or a field added, at any level."""
    obj = json.loads(json.dumps(shape))
    for path in draw(st.lists(st.sampled_from(_paths(shape)), max_size=3)):
        parent: Any = obj
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue  # an earlier change replaced this part already
        if not path or draw(st.booleans()):
            target = parent if not path else parent.get(path[-1])
            if isinstance(target, dict):
                target[draw(field_names)] = draw(json_values)
                continue
        parent[path[-1]] = draw(json_values)
    return dict(obj) if isinstance(obj, dict) else {}


near_update = _almost({"event_id": "e", "timestamp": 1, "twin": {
    "temperature": {"actual": {"value": "21", "metadata": {"timestamp": 1}},
                    "expected": {"value": "22"}, "optional": False,
                    "metadata": {"type": "int"},
                    "actual_version": {"cloud": 0, "edge": 1}},
    "mode": {"expected": {"value": "eco"}}}})
near_state = _almost({"event_id": "e", "timestamp": 1, "state": "online"})
near_get = _almost({"event_id": "e", "timestamp": 1})


def _deep(depth: int) -> bytes:
    return b'{"event_id":"deep","twin":{"temperature":' + b"[" * depth + b"]" * depth + b"}}"


def _bad_utf8(payload: bytes, at: int, junk: bytes) -> bytes:
    at = at % (len(payload) + 1)
    return payload[:at] + junk + payload[at:]


def payloads(near: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    encoded = near.map(lambda obj: json.dumps(obj).encode())
    return st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        encoded,
        encoded,
        st.builds(_bad_utf8, encoded, st.integers(0, 10**6),
                  st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\\ud800"])),
        st.integers(50, 3000).map(_deep),
        st.sampled_from([b"", b"null", b"[]", b"{}", b'{"event_id": NaN}',
                         b'{"event_id":"big","twin":{"temperature":{"actual":{"value":"'
                         + b"9" * 5000 + b'"}}}}',
                         b"{" * 100000,
                         b'{"event_id":"huge","pad":"' + b"x" * MAX_PAYLOAD_BYTES + b'"}']),
    )


PAYLOADS = {
    "twin/update": payloads(near_update),
    "twin/get": payloads(near_get),
    "state/update": payloads(near_state),
    "membership/get": payloads(near_get),
}
# Besides the real device: one the node does not have, and names no device can have.
DEVICE_NAMES = st.sampled_from([DEVICE, DEVICE, DEVICE, "ghost", "ünï", "a" * 300])


def _check_answer(answer: dict[str, Any]) -> bool:
    """Whether ``answer`` is an error result (else it must be a success result)."""
    assert isinstance(answer.get("event_id"), str), answer
    assert isinstance(answer.get("timestamp"), int), answer
    if "code" in answer:
        assert answer["code"] in (400, 404, 409, 413), answer
        assert isinstance(answer.get("reason"), str) and answer["reason"], answer
        return True
    return False


@pytest.mark.parametrize("action", sorted(TOPICS))
def test_every_request_is_answered_and_a_rejected_one_changes_nothing(
        rig: Rig, tally: Tally, action: str) -> None:
    interface = f"edge MQTT {action} (twin manager)"

    @fuzz(scaled(3), io=True)
    @given(payload=PAYLOADS[action], name=DEVICE_NAMES)
    def request(payload: bytes, name: str) -> None:
        topic = TOPICS[action].format(name=name)
        with tally.example(interface):
            before = rig.stored()
            answer = rig.ask(topic, payload)
            if _check_answer(answer):
                assert rig.stored() == before, (payload[:200], answer)

    request()
    # And the manager still does its job: a valid update is applied and answered.
    answer = rig.ask(TOPICS["twin/update"].format(name=DEVICE), json.dumps(
        {"event_id": "after", "twin": {"temperature": {"actual": {"value": "23"}}}}).encode())
    assert answer["event_id"] == "after" and "code" not in answer, answer
    assert answer["twin"]["temperature"]["actual"]["value"] == "23"
    stored = rig.stored()
    assert stored is not None and json.loads(stored[0])["temperature"]["actual"]["value"] == "23"
