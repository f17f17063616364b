"""MQTT topics of the edge's device plane, KubeEdge >= 1.17 style.

Since KubeEdge 1.17 a device is ``<namespace>/<name>``, so device topics carry both
(reference/kubeedge-protocol.md §1)::

    $hw/events/device/<ns>/<name>/twin/update            app/mapper -> edgecore
    $hw/events/device/<ns>/<name>/twin/update/result     edgecore -> app
    $hw/events/device/<ns>/<name>/twin/update/delta      edgecore -> app (desired != reported)
    $hw/events/device/<ns>/<name>/twin/update/document   edgecore -> app (last/current)
    $hw/events/device/<ns>/<name>/twin/get               app -> edgecore
    $hw/events/device/<ns>/<name>/twin/get/result        edgecore -> app
    $hw/events/device/<ns>/<name>/state/update           mapper -> edgecore
    $hw/events/device/<ns>/<name>/state/update/result    edgecore -> mapper
    $hw/events/node/<node>/membership/get                app -> edgecore
    $hw/events/node/<node>/membership/get/result         edgecore -> app
    $hw/events/node/<node>/membership/updated            edgecore -> app
    $hw/events/upload/...                                app -> cloud

:func:`parse_topic` turns a topic into a :class:`TopicMatch` with an enum action (the
action is never sniffed out of the string by the handlers) and returns ``None`` for
anything else, including topics with an empty level or a wildcard character.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class TopicAction(StrEnum):
    """What a topic is for; the value is the topic's suffix after the device or node."""

    TWIN_UPDATE = "twin/update"
    TWIN_UPDATE_RESULT = "twin/update/result"
    TWIN_UPDATE_DELTA = "twin/update/delta"
    TWIN_UPDATE_DOCUMENT = "twin/update/document"
    TWIN_GET = "twin/get"
    TWIN_GET_RESULT = "twin/get/result"
    STATE_UPDATE = "state/update"
    STATE_UPDATE_RESULT = "state/update/result"
    MEMBERSHIP_GET = "membership/get"
    MEMBERSHIP_GET_RESULT = "membership/get/result"
    MEMBERSHIP_UPDATED = "membership/updated"
    UPLOAD = "upload"


DEVICE_ACTIONS = frozenset({
    TopicAction.TWIN_UPDATE, TopicAction.TWIN_UPDATE_RESULT, TopicAction.TWIN_UPDATE_DELTA,
    TopicAction.TWIN_UPDATE_DOCUMENT, TopicAction.TWIN_GET, TopicAction.TWIN_GET_RESULT,
    TopicAction.STATE_UPDATE, TopicAction.STATE_UPDATE_RESULT,
})
NODE_ACTIONS = frozenset({
    TopicAction.MEMBERSHIP_GET, TopicAction.MEMBERSHIP_GET_RESULT, TopicAction.MEMBERSHIP_UPDATED,
})
REQUEST_ACTIONS = frozenset({
    TopicAction.TWIN_UPDATE, TopicAction.TWIN_GET, TopicAction.STATE_UPDATE,
    TopicAction.MEMBERSHIP_GET, TopicAction.UPLOAD,
})
"""Actions edgecore handles (apps and mappers publish them); the rest edgecore publishes."""

_REPLY = {
    TopicAction.TWIN_UPDATE: TopicAction.TWIN_UPDATE_RESULT,
    TopicAction.TWIN_GET: TopicAction.TWIN_GET_RESULT,
    TopicAction.STATE_UPDATE: TopicAction.STATE_UPDATE_RESULT,
    TopicAction.MEMBERSHIP_GET: TopicAction.MEMBERSHIP_GET_RESULT,
}

_DEVICE_ROOT = ("$hw", "events", "device")
_NODE_ROOT = ("$hw", "events", "node")
_UPLOAD_ROOT = ("$hw", "events", "upload")
_DEVICE_SUFFIXES = {action.value: action for action in DEVICE_ACTIONS}
_NODE_SUFFIXES = {action.value: action for action in NODE_ACTIONS}
_FORBIDDEN = ("+", "#", "\x00")

SUBSCRIPTIONS: tuple[str, ...] = (
    "$hw/events/device/+/+/twin/+",
    "$hw/events/device/+/+/state/update",
    "$hw/events/node/+/membership/get",
    "$hw/events/upload/#",
)
"""The filters edgecore subscribes to (KubeEdge's eventbus list, device and upload part).
``twin/+`` also catches ``twin/cloud_updated`` and the like: those parse to ``None``."""


@dataclass(frozen=True)
class TopicMatch:
    action: TopicAction
    namespace: str | None = None  # device topics
    name: str | None = None  # device topics
    node: str | None = None  # membership topics
    upload_path: str | None = None  # upload topics: the levels after $hw/events/upload

    @property
    def device_id(self) -> str | None:
        """``<namespace>/<name>``, KubeEdge's device id, for device topics."""
        if self.namespace is None or self.name is None:
            return None
        return f"{self.namespace}/{self.name}"


def _has_forbidden(text: str) -> bool:
    return "+" in text or "#" in text or "\x00" in text  # _FORBIDDEN, unrolled: hot path


def parse_topic(topic: str) -> TopicMatch | None:
    """The action and device/node of a topic, or ``None`` if it is not one of ours."""
    if _has_forbidden(topic):
        return None
    levels = topic.split("/")
    if any(level == "" for level in levels):
        return None
    root, rest = tuple(levels[:3]), levels[3:]
    if root == _DEVICE_ROOT and len(rest) >= 3:
        device_action = _DEVICE_SUFFIXES.get("/".join(rest[2:]))
        if device_action is None:
            return None
        return TopicMatch(device_action, namespace=rest[0], name=rest[1])
    if root == _NODE_ROOT and len(rest) >= 2:
        node_action = _NODE_SUFFIXES.get("/".join(rest[1:]))
        if node_action is None:
            return None
        return TopicMatch(node_action, node=rest[0])
    if root == _UPLOAD_ROOT:
        # "$hw/events/upload/#" also matches "$hw/events/upload" itself (MQTT 4.7.1.2).
        return TopicMatch(TopicAction.UPLOAD, upload_path="/".join(rest))
    return None


def _level(value: str, what: str) -> str:
    if value == "" or "/" in value or _has_forbidden(value):
        raise ValueError(f"{what} {value!r} cannot be a topic level")
    return value


def device_topic(namespace: str, name: str, action: TopicAction) -> str:
    """``$hw/events/device/<ns>/<name>/<suffix>``; ``ValueError`` for a bad name or action."""
    if action not in DEVICE_ACTIONS:
        raise ValueError(f"{action} is not a device topic")
    return f"$hw/events/device/{_level(namespace, 'namespace')}/{_level(name, 'name')}/{action}"


def node_topic(node: str, action: TopicAction) -> str:
    """``$hw/events/node/<node>/<suffix>``; ``ValueError`` for a bad name or action."""
    if action not in NODE_ACTIONS:
        raise ValueError(f"{action} is not a node topic")
    return f"$hw/events/node/{_level(node, 'node')}/{action}"


def reply_topic(match: TopicMatch) -> str | None:
    """Where edgecore answers a request topic (``None`` for topics without an answer)."""
    reply = _REPLY.get(match.action)
    if reply is None:
        return None
    if match.node is not None:
        return node_topic(match.node, reply)
    if match.namespace is None or match.name is None:
        return None
    return device_topic(match.namespace, match.name, reply)


def twin_update_topic(namespace: str, name: str) -> str:
    return device_topic(namespace, name, TopicAction.TWIN_UPDATE)


def twin_update_result_topic(namespace: str, name: str) -> str:
    return device_topic(namespace, name, TopicAction.TWIN_UPDATE_RESULT)


def twin_update_delta_topic(namespace: str, name: str) -> str:
    return device_topic(namespace, name, TopicAction.TWIN_UPDATE_DELTA)


def twin_update_document_topic(namespace: str, name: str) -> str:
    return device_topic(namespace, name, TopicAction.TWIN_UPDATE_DOCUMENT)


def twin_get_topic(namespace: str, name: str) -> str:
    return device_topic(namespace, name, TopicAction.TWIN_GET)


def twin_get_result_topic(namespace: str, name: str) -> str:
    return device_topic(namespace, name, TopicAction.TWIN_GET_RESULT)


def state_update_topic(namespace: str, name: str) -> str:
    return device_topic(namespace, name, TopicAction.STATE_UPDATE)


def state_update_result_topic(namespace: str, name: str) -> str:
    return device_topic(namespace, name, TopicAction.STATE_UPDATE_RESULT)


def membership_get_topic(node: str) -> str:
    return node_topic(node, TopicAction.MEMBERSHIP_GET)


def membership_get_result_topic(node: str) -> str:
    return node_topic(node, TopicAction.MEMBERSHIP_GET_RESULT)


def membership_updated_topic(node: str) -> str:
    return node_topic(node, TopicAction.MEMBERSHIP_UPDATED)


def upload_topic(path: str = "") -> str:
    """``$hw/events/upload[/<path>]``; ``path`` may have several levels (``a/b``)."""
    if path == "":
        return "$hw/events/upload"
    for level in path.split("/"):
        _level(level, "upload level")
    return f"$hw/events/upload/{path}"


def filter_matches(topic_filter: str, topic: str) -> bool:
    """MQTT 3.1.1 matching of a topic against a filter (``+`` one level, ``#`` the rest).

    A filter starting with a wildcard does not match ``$``-topics (MQTT 4.7.2), so
    ``#`` alone never sees ``$hw/...``."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    want, have = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(want):
        if level == "#":
            return i == len(want) - 1
        if i >= len(have):
            return False
        if level != "+" and level != have[i]:
            return False
    return len(want) == len(have)
