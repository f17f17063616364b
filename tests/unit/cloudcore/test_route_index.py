"""The cloud's route index follows rules and endpoints as they change, and the
message stream hands each watcher what it asked for without growing without bound."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from cloudcore.router.index import RouteIndex
from cloudcore.router.stream import MessageStream, StreamFilter
from cloudcore.scope import addressing_of
from protocol.resources import make_key


def obj(kind: str, name: str, spec: dict[str, Any], rv: int = 1) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "namespace": "default",
                                       "resourceVersion": str(rv)}, "spec": spec}


REST = obj("RuleEndpoint", "rest", {"ruleEndpointType": "rest"})
BUS = obj("RuleEndpoint", "bus", {"ruleEndpointType": "eventbus"})
UP = obj("Rule", "up", {"source": "bus", "sourceResource": {"topic": "t/#", "node_name": "n1"},
                        "target": "rest", "targetResource": {"resource": "http://h/x"}})
DOWN = obj("Rule", "down", {"source": "rest", "sourceResource": {"path": "/cmd"},
                            "target": "bus", "targetResource": {"topic": "cmd"}})


def test_a_rule_waits_for_its_endpoints_and_reports_why() -> None:
    index = RouteIndex()
    assert index.upsert(DOWN) == [("default", "down")]
    assert "does not exist" in (index.error_of(("default", "down")) or "")
    assert index.rest_routes("default", "/cmd") == []
    index.upsert(REST)
    assert index.upsert(BUS) == [("default", "down")]  # error cleared
    assert index.error_of(("default", "down")) is None
    [route] = index.rest_routes("default", "cmd")
    assert route.target_topic == "cmd"
    assert index.rest_routes("other", "/cmd") == []


def test_eventbus_routes_by_node_and_topic_and_deletes() -> None:
    index = RouteIndex()
    for o in (REST, BUS, UP):
        index.upsert(o)
    assert [r.rule for r in index.eventbus_routes("n1", "t/a")] == ["up"]
    assert index.eventbus_routes("n2", "t/a") == []
    index.delete(BUS)
    assert index.eventbus_routes("n1", "t/a") == []
    assert index.error_of(("default", "up")) is not None
    index.delete(UP)
    assert not index.has_rule(("default", "up"))


def test_an_older_version_does_not_replace_a_newer_one() -> None:
    index = RouteIndex()
    index.upsert(REST)
    index.upsert(BUS)
    newer = obj("Rule", "down", {**DOWN["spec"], "targetResource": {"topic": "new"}}, rv=5)
    index.upsert(newer)
    index.upsert(DOWN)  # rv 1, arriving late
    assert index.rest_routes("default", "/cmd")[0].target_topic == "new"


def test_only_eventbus_sourced_rules_travel_to_their_node_with_endpoints() -> None:
    up = addressing_of(UP)
    assert up.nodes == frozenset({"n1"})
    assert up.deps == {make_key("RuleEndpoint", "default", "bus"),
                       make_key("RuleEndpoint", "default", "rest")}
    assert addressing_of(DOWN).nodes == frozenset()


async def test_stream_filters_and_bounds_each_watcher() -> None:
    stream = MessageStream(per_client=3)
    lines = stream.lines(StreamFilter(node="n1"))
    assert json.loads(await anext(lines)) == {"type": "WATCHING"}
    for i in range(5):
        stream.publish({"node": "n1", "topic": "t", "rules": [], "payload": str(i)})
    stream.publish({"node": "n2", "topic": "t", "rules": [], "payload": "other"})
    got = [json.loads(await asyncio.wait_for(anext(lines), 5)) for _ in range(4)]
    assert got[0] == {"type": "DROPPED", "count": 2}
    assert [g["message"]["payload"] for g in got[1:]] == ["2", "3", "4"]
    await lines.aclose()
    assert stream.watchers == 0
