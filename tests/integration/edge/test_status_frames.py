"""How the edge's outbox goes up the link: consecutive statuses share ``statuses``
frames (one frame, one ack), everything else goes alone and in order, and the cloud's
answer to a batch settles every entry of it.

A real outbox and meta cache in tmp_path and a real :class:`HubClient`, without a
websocket: the tests call the hub's private ``_frames`` (what the drain sends) and
``_on_frame`` (what it does with the cloud's answers) and read ``_batches``, because the
batching is a detail of the link that no public method exposes on its own; the
end-to-end path is covered by the system tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgecore.config import EdgeConfig, EdgePaths, LinkSettings
from edgecore.hub import HubClient
from edgecore.meta import MetaCache
from edgecore.outbox import Outbox, OutboxEntry
from protocol import envelope as wire
from protocol.envelope import MAX_STATUS_BATCH, Envelope, ObjectRef, Op, StatusesBody


def _ref(name: str) -> ObjectRef:
    return ObjectRef(kind="Device", namespace="default", name=name)


def _status(value: str) -> dict[str, Any]:
    return {"twins": [{"propertyName": "temperature", "reported": {"value": value}}]}


class Link:
    """A hub client over a real outbox, and what it would send for the queued entries."""

    def __init__(self, tmp_path: Path, max_frame_bytes: int) -> None:
        cfg = EdgeConfig(nodeName="edge-a", server="https://127.0.0.1:10002",
                         hub="wss://127.0.0.1:10000",
                         link=LinkSettings(maxFrameBytes=max_frame_bytes))
        paths = EdgePaths(tmp_path)
        self.cache = MetaCache.open(paths.cache)
        self.outbox = Outbox.open(paths.outbox)
        self.hub = HubClient(cfg, paths, self.cache, self.outbox)

    def status(self, name: str, value: str) -> None:
        self.hub.report_status(_ref(name), _status(value))

    def message(self, n: int) -> None:
        self.hub.send_message({"topic": "t", "payload": str(n), "ts": 1})

    def frames(self) -> tuple[list[OutboxEntry], list[tuple[Envelope, int, int]]]:
        """The queued entries, and each frame that carries them: (decoded, its size in
        bytes, the sequence number it reports)."""
        entries = self.outbox.peek(0, 100_000)
        return entries, [(wire.decode(text), len(text.encode()), seq)
                         for text, seq in self.hub._frames(entries)]

    def close(self) -> None:
        self.outbox.close()
        self.cache.close()


@pytest.fixture
def link(tmp_path: Path) -> Iterator[Link]:
    made = Link(tmp_path, LinkSettings().maxFrameBytes)
    yield made
    made.close()


def _items(env: Envelope) -> list[tuple[str, ObjectRef, dict[str, Any]]]:
    assert env.op is Op.STATUSES
    return [(item.id, item.ref, item.status)
            for item in wire.decode_body(env, StatusesBody).items]


def _as_items(entries: list[OutboxEntry]) -> list[tuple[str, ObjectRef, dict[str, Any]]]:
    return [(e.envelope_id, e.ref, e.body["status"]) for e in entries if e.ref is not None]


def test_consecutive_statuses_share_one_frame(link: Link) -> None:
    link.hub.report_statuses([(_ref(f"d{i}"), _status(str(i))) for i in range(3)])
    entries, frames = link.frames()
    assert len(entries) == 3 and len(frames) == 1
    env, _, last_seq = frames[0]
    assert _items(env) == [(e.envelope_id, _ref(f"d{i}"), _status(str(i)))
                           for i, e in enumerate(entries)]
    assert env.id not in {e.envelope_id for e in entries}  # the frame's id is its own
    assert last_seq == entries[-1].seq
    assert link.hub._batches == {env.id: tuple(e.envelope_id for e in entries)}


def test_messages_split_the_runs_and_everything_keeps_its_order(link: Link) -> None:
    link.status("a", "1")
    link.status("b", "1")
    link.message(1)
    link.hub.report_statuses([(_ref(n), _status("2")) for n in ("c", "d", "e")])
    link.message(2)
    link.status("f", "3")
    entries, frames = link.frames()
    assert [e.op for e in entries] == [Op.STATUS] * 2 + [Op.MESSAGE] + [Op.STATUS] * 3 + [
        Op.MESSAGE, Op.STATUS]
    a, b, m1, c, d, e, m2, f = entries
    assert [env.op for env, _, _ in frames] == [
        Op.STATUSES, Op.MESSAGE, Op.STATUSES, Op.MESSAGE, Op.STATUS]
    assert [seq for _, _, seq in frames] == [b.seq, m1.seq, e.seq, m2.seq, f.seq]
    first, message, second, message2, lone = (env for env, _, _ in frames)
    assert _items(first) == _as_items([a, b]) and _items(second) == _as_items([c, d, e])
    # Anything else goes as it always did: one envelope, the entry's id.
    assert (message.id, message.body) == (m1.envelope_id, m1.body)
    assert (message2.id, message2.body) == (m2.envelope_id, m2.body)
    # A status alone is a plain ``status`` envelope, acked by the entry's own id.
    assert (lone.id, lone.ref, lone.body) == (f.envelope_id, _ref("f"), {"status": _status("3")})
    assert link.hub._batches == {first.id: (a.envelope_id, b.envelope_id),
                                 second.id: (c.envelope_id, d.envelope_id, e.envelope_id)}


def test_a_status_without_an_object_goes_alone(link: Link) -> None:
    link.status("a", "1")
    odd = link.outbox.put(Op.STATUS, None, {"status": {"x": 1}})  # cannot be an item
    link.status("b", "1")
    entries, frames = link.frames()
    assert [(env.op, env.id) for env, _, _ in frames] == [
        (Op.STATUS, entries[0].envelope_id), (Op.STATUS, odd), (Op.STATUS, entries[2].envelope_id)]
    assert link.hub._batches == {}


def test_a_run_longer_than_a_batch_is_cut_at_the_batch_size(link: Link) -> None:
    count = MAX_STATUS_BATCH + 10
    link.hub.report_statuses([(_ref(f"d{i}"), _status(str(i))) for i in range(count)])
    entries, frames = link.frames()
    assert [len(_items(env)) for env, _, _ in frames] == [MAX_STATUS_BATCH, 10]
    assert [seq for _, _, seq in frames] == [entries[MAX_STATUS_BATCH - 1].seq, entries[-1].seq]
    assert [i for env, _, _ in frames for i in _items(env)] == _as_items(entries)


def test_big_statuses_are_split_into_frames_within_the_limit(tmp_path: Path) -> None:
    limit = 2048
    link = Link(tmp_path, limit)
    try:
        # About 420 bytes each: far more than one frame holds, a few per frame.
        link.hub.report_statuses([(_ref(f"d{i}"), _status(f"{i}:" + "x" * 400))
                                  for i in range(25)])
        entries, frames = link.frames()
        assert len(frames) > 1
        assert all(size <= limit for _, size, _ in frames)
        assert all(env.op is Op.STATUSES for env, _, _ in frames)  # several fit in each
        carried: list[tuple[str, ObjectRef, dict[str, Any]]] = []
        for env, _, seq in frames:
            items = _items(env)
            # Each frame reports the sequence number of the last entry it carries.
            assert seq == next(e.seq for e in entries if e.envelope_id == items[-1][0])
            assert link.hub._batches[env.id] == tuple(i[0] for i in items)
            carried.extend(items)
        assert carried == _as_items(entries)  # every entry once, in order
        assert len(link.hub._batches) == len(frames)
    finally:
        link.close()


# ---- the cloud's answers ------------------------------------------------------------


def _answer(op: Op, parent_id: str, body: dict[str, Any] | None = None) -> str:
    return wire.encode(wire.make(op, ts=1_700_000_000_000, parent_id=parent_id, body=body))


def _batch(link: Link, names: list[str]) -> tuple[str, list[str]]:
    """Queue statuses of ``names``, 'send' them; returns the frame id and entry ids."""
    link.hub.report_statuses([(_ref(n), _status("1")) for n in names])
    _, frames = link.frames()
    env = frames[-1][0]
    assert env.op is Op.STATUSES
    return env.id, list(link.hub._batches[env.id])


async def test_an_ack_of_a_batch_takes_all_its_entries_out_and_logs_the_refused(
        link: Link, caplog: pytest.LogCaptureFixture) -> None:
    link.message(0)  # sent alone, not acked: stays
    frame_id, ids = _batch(link, ["a", "b", "c"])
    assert len(link.outbox) == 4
    refused = {"id": ids[1], "code": 404, "reason": "NotFound",
               "message": "Device/default/b does not exist", "field": "body.items[1].ref"}
    with caplog.at_level(logging.ERROR, logger="edgecore.hub"):
        await link.hub._on_frame(_answer(Op.ACK, frame_id, {"refused": [refused]}))
    assert len(link.outbox) == 1 and link.outbox.peek(0, 10)[0].op is Op.MESSAGE
    assert frame_id not in link.hub._batches
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "the cloud refused an upstream message (NotFound): Device/default/b does not exist"]
    # A duplicate ack changes nothing.
    await link.hub._on_frame(_answer(Op.ACK, frame_id, None))
    assert len(link.outbox) == 1


async def test_an_ack_without_a_body_takes_the_batch_out_quietly(
        link: Link, caplog: pytest.LogCaptureFixture) -> None:
    frame_id, _ = _batch(link, ["a", "b"])
    with caplog.at_level(logging.WARNING, logger="edgecore.hub"):
        await link.hub._on_frame(_answer(Op.ACK, frame_id))
    assert len(link.outbox) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(("code", "reason"), [
    (507, "InsufficientStorage"), (503, "ServiceUnavailable"), (429, "TooManyRequests")])
async def test_a_transient_error_for_a_batch_keeps_every_entry(
        link: Link, code: int, reason: str) -> None:
    frame_id, ids = _batch(link, ["a", "b", "c"])
    before = link.outbox.peek(0, 10)
    await link.hub._on_frame(_answer(Op.ERROR, frame_id, {
        "code": code, "reason": reason, "message": "not now"}))
    assert link.outbox.peek(0, 10) == before and len(link.outbox) == 3
    assert frame_id not in link.hub._batches
    # Sent again (after the ack timeout), the same entries make a new batch.
    _, frames = link.frames()
    assert [i[0] for i in _items(frames[0][0])] == ids


async def test_a_refusal_of_a_batch_takes_every_entry_out_and_logs_it(
        link: Link, caplog: pytest.LogCaptureFixture) -> None:
    link.message(0)
    frame_id, _ = _batch(link, ["a", "b", "c"])
    with caplog.at_level(logging.ERROR, logger="edgecore.hub"):
        await link.hub._on_frame(_answer(Op.ERROR, frame_id, {
            "code": 403, "reason": "Forbidden", "message": "not this node's"}))
    assert len(link.outbox) == 1 and link.outbox.peek(0, 10)[0].op is Op.MESSAGE
    assert frame_id not in link.hub._batches
    assert "the cloud refused 3 statuses (Forbidden): not this node's" in caplog.text


async def test_a_lone_status_is_still_acked_by_its_own_id(link: Link) -> None:
    link.status("a", "1")
    entries, frames = link.frames()
    assert frames[0][0].id == entries[0].envelope_id and link.hub._batches == {}
    await link.hub._on_frame(_answer(Op.ACK, entries[0].envelope_id))
    assert len(link.outbox) == 0


async def test_an_item_refused_for_now_stays_and_the_others_leave(
        link: Link, caplog: pytest.LogCaptureFixture) -> None:
    frame_id, ids = _batch(link, ["a", "b", "c"])
    busy = {"id": ids[2], "code": 503, "reason": "ServiceUnavailable",
            "message": "the store is closing"}
    with caplog.at_level(logging.ERROR, logger="edgecore.hub"):
        await link.hub._on_frame(_answer(Op.ACK, frame_id, {"refused": [busy]}))
    assert [e.envelope_id for e in link.outbox.peek(0, 10)] == [ids[2]]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_batch_the_cloud_finds_too_large_comes_again_in_smaller_frames(
        link: Link, caplog: pytest.LogCaptureFixture) -> None:
    """A cloud whose frame limit is below the edge's names the frame it refused (413);
    the entries stay and the edge halves its batch frames until they fit."""
    names = [f"d{i:03d}" for i in range(200)]
    frame_id, ids = _batch(link, names)
    _, frames = link.frames()
    assert len(frames) == 1
    first_size = frames[0][1]
    with caplog.at_level(logging.WARNING, logger="edgecore.hub"):
        await link.hub._on_frame(_answer(Op.ERROR, frame_id, {
            "code": 413, "reason": "RequestEntityTooLarge",
            "message": f"frame of {first_size} bytes exceeds the limit of 4096"}))
    assert len(link.outbox) == len(names)
    assert "sending statuses in frames of at most" in caplog.text
    _, again = link.frames()
    assert len(again) > 1 and all(size <= 32_768 for _, size, _ in again)
    assert [i for env, _, _ in again for i, _, _ in _items(env)] == ids
