"""What the fault tests share: the seeded schedule, sqlite integrity checks and a device
app speaking KubeEdge's twin topics that knows which of its updates were acknowledged."""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.reliability import ROUNDS, SEED

__all__ = ["ROUNDS", "TwinApp", "acknowledged", "assert_intact", "integrity", "schedule"]


def schedule(kind: str) -> random.Random:
    """The fault schedule of one kind: derived from the one fixed seed, so a failing
    round replays exactly; separate per kind, so one test's draws never shift another's."""
    return random.Random(f"{SEED}/{kind}")


def integrity(path: Path) -> str:
    """``PRAGMA integrity_check`` of one sqlite file (WAL included), "ok" when healthy."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()
    return "; ".join(str(r[0]) for r in rows)


def assert_intact(directory: Path) -> list[Path]:
    """Every sqlite file under ``directory`` passes its integrity check; returns them."""
    files = sorted(directory.rglob("*.db"))
    assert files, f"no sqlite files under {directory}"
    for path in files:
        assert integrity(path) == "ok", f"{path} is corrupt: {integrity(path)}"
    return files


class TwinApp:
    """A KubeEdge device app on the edge's broker: it sends twin updates and waits for
    each one's ``/result``; an update counts as acknowledged only when its result says
    so."""

    def __init__(self, port: int, namespace: str, name: str, client_id: str) -> None:
        self.base = f"$hw/events/device/{namespace}/{name}"
        self._results: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self.gone = False  # the broker dropped us: nothing more will be answered
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311)
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        self.client.subscribe([(f"{self.base}/twin/update/result", 1),
                               (f"{self.base}/twin/get/result", 1)])
        if not subscribed.wait(10):
            self.close()
            raise AssertionError("the device app's subscription was not acknowledged")

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            body = dict(json.loads(msg.payload))
        except ValueError:
            return
        with self._cond:
            self._results[str(body.get("event_id", ""))] = body
            self._cond.notify_all()

    def _on_disconnect(self, *_args: Any) -> None:
        with self._cond:
            self.gone = True
            self._cond.notify_all()

    def request(self, suffix: str, payload: dict[str, Any],
                timeout: float = 5.0) -> dict[str, Any] | None:
        """Publish on ``base/suffix`` and return the result with the same event_id, or
        None when none came (the broker went away: not acknowledged)."""
        event_id = str(payload["event_id"])
        info = self.client.publish(f"{self.base}/{suffix}", json.dumps(payload), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return None
        deadline = time.monotonic() + timeout
        with self._cond:
            while event_id not in self._results:
                left = deadline - time.monotonic()
                if self.gone or left <= 0:
                    return None
                self._cond.wait(left)
            return self._results.pop(event_id)

    def update(self, event_id: str, values: dict[str, str],
               timeout: float = 5.0) -> dict[str, Any] | None:
        twin = {prop: {"actual": {"value": value}} for prop, value in values.items()}
        return self.request("twin/update", {"event_id": event_id, "timestamp": 1, "twin": twin},
                            timeout)

    def get(self, event_id: str) -> dict[str, Any]:
        """The device's twin as the edge holds it (``twin/get``)."""
        result = self.request("twin/get", {"event_id": event_id})
        assert result is not None, "no twin/get result"
        return dict(result.get("twin") or {})

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def acknowledged(result: dict[str, Any] | None) -> bool:
    """A twin update's result acknowledges it when there is one and it carries no error."""
    return result is not None and "code" not in result
