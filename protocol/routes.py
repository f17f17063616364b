"""Message routes (pure): what a KubeEdge Rule means once its endpoints are known.

A ``rules.kubeedge.io/v1`` Rule names a source and a target RuleEndpoint and gives
each a resource map.  :func:`resolve_route` joins a Rule with its two endpoints and
returns a :class:`Route` — or raises :class:`InvalidRoute` naming the field that makes
the rule unusable (the error lands in the Rule's ``status.errors``, since the objects
themselves are valid KubeEdge manifests and were accepted as such).

Routes edgefleet carries, as KubeEdge's router does:

* rest → eventbus: a POST to the cloud's rule path is published on an edge MQTT topic;
* rest → servicebus: a POST to the cloud's rule path is sent to an HTTP service on the
  edge's loopback (``service_port`` of the endpoint, ``path`` of the rule) and the
  service's answer comes back to the caller;
* eventbus → rest: a publish on an edge topic is POSTed to a URL.

Topics are used exactly as written: a rule's ``sourceResource.topic`` is an MQTT topic
filter on the edge broker (``+``/``#`` allowed), ``targetResource.topic`` the topic
published to.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from protocol.errors import BadRequest
from protocol.kinds.rules import RuleEndpointType
from protocol.topics import filter_matches

# Anything an edge app publishes here reaches the cloud's message stream, rule or not.
UPLOAD_FILTER = "$hw/events/upload/#"


class InvalidRoute(BadRequest):
    reason = "InvalidRoute"


class Encoding(StrEnum):
    UTF8 = "utf-8"
    BASE64 = "base64"


@dataclass(frozen=True)
class Route:
    namespace: str
    rule: str
    source: RuleEndpointType
    target: RuleEndpointType
    source_resource: Mapping[str, str]
    target_resource: Mapping[str, str]
    target_properties: Mapping[str, str]

    @property
    def rest_path(self) -> str:
        return normalize_path(self.source_resource["path"])

    @property
    def source_topic(self) -> str:
        return self.source_resource["topic"]

    @property
    def source_node(self) -> str:
        return self.source_resource["node_name"]

    @property
    def target_topic(self) -> str:
        return self.target_resource["topic"]

    @property
    def target_url(self) -> str:
        return self.target_resource["resource"]

    @property
    def target_path(self) -> str:
        return normalize_path(self.target_resource["path"])

    @property
    def service_port(self) -> int:
        return int(self.target_properties["service_port"])

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.rule}"


SUPPORTED = frozenset({
    (RuleEndpointType.REST, RuleEndpointType.EVENTBUS),
    (RuleEndpointType.REST, RuleEndpointType.SERVICEBUS),
    (RuleEndpointType.EVENTBUS, RuleEndpointType.REST),
})


def normalize_path(path: str) -> str:
    """``test``, ``/test`` and ``/test/`` are the same rule path."""
    stripped = path.strip("/")
    return "/" + stripped


def _require(resource: Mapping[str, str], key: str, field: str) -> str:
    value = resource.get(key)
    if not value:
        raise InvalidRoute(f"{field}.{key} is required for this endpoint type",
                           field=f"{field}.{key}")
    return value


def _check_source(kind: RuleEndpointType, resource: Mapping[str, str]) -> None:
    field = "spec.sourceResource"
    if kind is RuleEndpointType.REST:
        _require(resource, "path", field)
    elif kind is RuleEndpointType.EVENTBUS:
        topic = _require(resource, "topic", field)
        _require(resource, "node_name", field)
        _check_filter(topic, f"{field}.topic")


def _check_target(kind: RuleEndpointType, resource: Mapping[str, str],
                  properties: Mapping[str, str]) -> None:
    field = "spec.targetResource"
    if kind is RuleEndpointType.EVENTBUS:
        topic = _require(resource, "topic", field)
        if "+" in topic or "#" in topic:
            raise InvalidRoute("a target topic cannot contain the wildcards + or #",
                               field=f"{field}.topic")
    elif kind is RuleEndpointType.REST:
        url = urlsplit(_require(resource, "resource", field))
        if url.scheme not in ("http", "https") or not url.hostname:
            raise InvalidRoute("resource must be an http:// or https:// URL",
                               field=f"{field}.resource")
    elif kind is RuleEndpointType.SERVICEBUS:
        _require(resource, "path", field)
        port = properties.get("service_port", "")
        if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise InvalidRoute("a servicebus endpoint needs properties.service_port, a port "
                               "number between 1 and 65535", field="spec.properties.service_port")


def _check_filter(topic_filter: str, field: str) -> None:
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise InvalidRoute("# must be a whole last level of the topic filter", field=field)
        if "+" in level and level != "+":
            raise InvalidRoute("+ must be a whole level of the topic filter", field=field)


def resolve_route(rule: Mapping[str, Any], endpoints: Mapping[str, Mapping[str, Any]]) -> Route:
    """Join ``rule`` with its endpoints (RuleEndpoint objects of its namespace, by name)."""
    meta = rule.get("metadata") or {}
    spec = rule.get("spec") or {}
    kinds: list[RuleEndpointType] = []
    props: Mapping[str, str] = {}
    for side in ("source", "target"):
        name = spec.get(side, "")
        endpoint = endpoints.get(name)
        if endpoint is None:
            raise InvalidRoute(f"RuleEndpoint {name!r} does not exist in namespace "
                               f"{meta.get('namespace')!r}", field=f"spec.{side}")
        ep_spec = endpoint.get("spec") or {}
        kinds.append(RuleEndpointType(ep_spec["ruleEndpointType"]))
        props = ep_spec.get("properties") or {}
    source, target = kinds
    if (source, target) not in SUPPORTED:
        raise InvalidRoute(f"routes from {source.value} to {target.value} are not supported "
                           "(rest→eventbus, rest→servicebus, eventbus→rest are)",
                           field="spec.target")
    source_resource = spec.get("sourceResource") or {}
    target_resource = spec.get("targetResource") or {}
    _check_source(source, source_resource)
    _check_target(target, target_resource, props)
    return Route(
        namespace=str(meta.get("namespace")), rule=str(meta.get("name")),
        source=source, target=target, source_resource=dict(source_resource),
        target_resource=dict(target_resource), target_properties=dict(props),
    )


def eventbus_source_node(rule: Mapping[str, Any]) -> str | None:
    """The edge node an eventbus-sourced rule listens on (``sourceResource.node_name``);
    only such rules need to travel to an edge."""
    resource = (rule.get("spec") or {}).get("sourceResource") or {}
    node = resource.get("node_name")
    return str(node) if node else None


def route_matches_topic(route: Route, node: str, topic: str) -> bool:
    return (route.source is RuleEndpointType.EVENTBUS and route.source_node == node
            and filter_matches(route.source_topic, topic))


def encode_payload(payload: bytes) -> tuple[str, Encoding]:
    """Carry an MQTT or HTTP payload in a JSON frame: as text when it is UTF-8, else
    base64, so binary payloads survive unchanged."""
    try:
        return payload.decode("utf-8"), Encoding.UTF8
    except UnicodeDecodeError:
        return base64.b64encode(payload).decode("ascii"), Encoding.BASE64


def decode_payload(data: str, encoding: Encoding) -> bytes:
    if encoding is Encoding.UTF8:
        return data.encode("utf-8")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("payload is not valid base64", field="body.payload") from None
