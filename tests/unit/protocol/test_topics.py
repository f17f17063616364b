"""KubeEdge >= 1.17 device MQTT topics: builders, parser, subscription filters."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import topics
from protocol.topics import (
    DEVICE_ACTIONS,
    NODE_ACTIONS,
    SUBSCRIPTIONS,
    TopicAction,
    TopicMatch,
    device_topic,
    filter_matches,
    node_topic,
    parse_topic,
    reply_topic,
)


def test_device_topics_have_namespace_and_name_levels() -> None:
    base = "$hw/events/device/default/temp-1"
    assert topics.twin_update_topic("default", "temp-1") == f"{base}/twin/update"
    assert topics.twin_update_result_topic("default", "temp-1") == f"{base}/twin/update/result"
    assert topics.twin_update_delta_topic("default", "temp-1") == f"{base}/twin/update/delta"
    assert (topics.twin_update_document_topic("default", "temp-1")
            == f"{base}/twin/update/document")
    assert topics.twin_get_topic("default", "temp-1") == f"{base}/twin/get"
    assert topics.twin_get_result_topic("default", "temp-1") == f"{base}/twin/get/result"
    assert topics.state_update_topic("default", "temp-1") == f"{base}/state/update"
    assert topics.state_update_result_topic("default", "temp-1") == f"{base}/state/update/result"


def test_node_and_upload_topics() -> None:
    assert topics.membership_get_topic("edge-a") == "$hw/events/node/edge-a/membership/get"
    assert (topics.membership_get_result_topic("edge-a")
            == "$hw/events/node/edge-a/membership/get/result")
    assert (topics.membership_updated_topic("edge-a")
            == "$hw/events/node/edge-a/membership/updated")
    assert topics.upload_topic("app/readings") == "$hw/events/upload/app/readings"
    assert topics.upload_topic() == "$hw/events/upload"


@pytest.mark.parametrize("action", sorted(DEVICE_ACTIONS))
def test_every_device_topic_parses_back(action: TopicAction) -> None:
    match = parse_topic(device_topic("factory", "meter.7", action))
    assert match == TopicMatch(action, namespace="factory", name="meter.7")
    assert match.device_id == "factory/meter.7"


@pytest.mark.parametrize("action", sorted(NODE_ACTIONS))
def test_every_node_topic_parses_back(action: TopicAction) -> None:
    assert parse_topic(node_topic("edge-a", action)) == TopicMatch(action, node="edge-a")


def test_upload_topics_keep_their_path() -> None:
    assert parse_topic("$hw/events/upload/app/x") == TopicMatch(
        TopicAction.UPLOAD, upload_path="app/x")
    assert parse_topic("$hw/events/upload") == TopicMatch(TopicAction.UPLOAD, upload_path="")


@pytest.mark.parametrize("topic", [
    "$hw/events/device/temp-1/twin/update",            # pre-1.17: no namespace level
    "$hw/events/device/default/temp-1/twin/cloud_updated",
    "$hw/events/device/default/temp-1/state/get",
    "$hw/events/device/default/temp-1/updated",
    "$hw/events/device/default/temp-1",
    "$hw/events/device//temp-1/twin/update",            # empty level
    "$hw/events/device/default/temp-1/twin/update/",
    "$hw/events/device/+/temp-1/twin/update",            # wildcard
    "$hw/events/device/default/#",
    "$hw/events/node/edge-a/membership/detail",
    "$hw/events/node/edge-a",
    "$hw/events/upload/",
    "$hw/events/upload/a/+",
    "$ke/events/device/default/temp-1/twin/update",
    "hw/events/device/default/temp-1/twin/update",
    "",
    "/",
    "default/user/x",
])
def test_anything_else_is_not_ours(topic: str) -> None:
    assert parse_topic(topic) is None


@pytest.mark.parametrize("namespace,name", [("", "x"), ("a/b", "x"), ("ns", "+"), ("ns", "a#"),
                                            ("ns", "")])
def test_builders_refuse_names_that_would_break_the_topic(namespace: str, name: str) -> None:
    with pytest.raises(ValueError):
        topics.twin_update_topic(namespace, name)


def test_builders_refuse_actions_of_the_other_kind() -> None:
    with pytest.raises(ValueError):
        device_topic("ns", "d", TopicAction.MEMBERSHIP_GET)
    with pytest.raises(ValueError):
        node_topic("n", TopicAction.TWIN_GET)
    with pytest.raises(ValueError):
        topics.upload_topic("a//b")


def test_requests_are_answered_on_their_result_topic() -> None:
    update = parse_topic("$hw/events/device/ns/d/twin/update")
    get = parse_topic("$hw/events/device/ns/d/twin/get")
    state = parse_topic("$hw/events/device/ns/d/state/update")
    members = parse_topic("$hw/events/node/n1/membership/get")
    assert update and get and state and members
    assert reply_topic(update) == "$hw/events/device/ns/d/twin/update/result"
    assert reply_topic(get) == "$hw/events/device/ns/d/twin/get/result"
    assert reply_topic(state) == "$hw/events/device/ns/d/state/update/result"
    assert reply_topic(members) == "$hw/events/node/n1/membership/get/result"
    assert reply_topic(TopicMatch(TopicAction.UPLOAD, upload_path="x")) is None


def test_edgecore_subscriptions_catch_requests_but_not_its_own_publications() -> None:
    def caught(topic: str) -> bool:
        return any(filter_matches(f, topic) for f in SUBSCRIPTIONS)

    for action in topics.REQUEST_ACTIONS - {TopicAction.MEMBERSHIP_GET, TopicAction.UPLOAD}:
        assert caught(device_topic("ns", "d", action))
    assert caught(topics.membership_get_topic("n1"))
    assert caught(topics.upload_topic("a/b"))
    for action in DEVICE_ACTIONS - topics.REQUEST_ACTIONS:
        assert not caught(device_topic("ns", "d", action)), action
    for action in NODE_ACTIONS - topics.REQUEST_ACTIONS:
        assert not caught(node_topic("n1", action)), action


def test_filter_matching_follows_mqtt_rules() -> None:
    assert filter_matches("a/#", "a")
    assert filter_matches("a/#", "a/b/c")
    assert filter_matches("a/+/c", "a/b/c")
    assert not filter_matches("a/+", "a/b/c")
    assert not filter_matches("a/#/c", "a/b/c")
    assert not filter_matches("#", "$hw/events/upload/x")  # MQTT 4.7.2: $-topics
    assert not filter_matches("+/events/upload/x", "$hw/events/upload/x")
    assert filter_matches("$hw/events/upload/#", "$hw/events/upload")


_level = st.text(
    alphabet=st.characters(exclude_characters="/+#\x00", exclude_categories=["Cs"]),
    min_size=1, max_size=20,
)


@given(_level, _level, st.sampled_from(sorted(DEVICE_ACTIONS)))
def test_any_valid_device_topic_round_trips(namespace: str, name: str,
                                            action: TopicAction) -> None:
    match = parse_topic(device_topic(namespace, name, action))
    assert match == TopicMatch(action, namespace=namespace, name=name)


@given(st.text(max_size=80))
def test_parse_topic_never_raises(topic: str) -> None:
    match = parse_topic(topic)
    if match is not None:
        assert "+" not in topic and "#" not in topic and "//" not in topic
