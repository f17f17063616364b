"""What a Rule means once joined with its endpoints: KubeEdge's samples resolve to the
routes a user expects, and unusable rules say which field is wrong."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from protocol.errors import BadRequest
from protocol.kinds.rules import RuleEndpointType
from protocol.routes import (
    Encoding,
    InvalidRoute,
    decode_payload,
    encode_payload,
    normalize_path,
    resolve_route,
    route_matches_topic,
)
from tests.harness import kubeedge_crds_dir

SAMPLES = kubeedge_crds_dir()


def endpoint(name: str, kind: str, **props: str) -> dict[str, Any]:
    return {"kind": "RuleEndpoint", "metadata": {"name": name, "namespace": "default"},
            "spec": {"ruleEndpointType": kind, "properties": props}}


ENDPOINTS = {
    "my-rest": endpoint("my-rest", "rest"),
    "my-eventbus": endpoint("my-eventbus", "eventbus"),
    "my-servicebus": endpoint("my-servicebus", "servicebus", service_port="6666"),
}


def rule(source: str, source_resource: dict[str, str], target: str,
         target_resource: dict[str, str]) -> dict[str, Any]:
    return {"kind": "Rule", "metadata": {"name": "r", "namespace": "default"},
            "spec": {"source": source, "sourceResource": source_resource,
                     "target": target, "targetResource": target_resource}}


def test_kubeedge_samples_resolve_to_their_routes() -> None:
    if not SAMPLES.exists():
        pytest.skip("shared/reference/kubeedge-crds is not present outside the workspace")
    endpoints = {}
    for path in SAMPLES.glob("ruleEndpoint-*.yaml"):
        obj = yaml.safe_load(path.read_text())
        obj["metadata"]["namespace"] = "default"
        endpoints[obj["metadata"]["name"]] = obj
    routes = {}
    for path in SAMPLES.glob("rule-*.yaml"):
        obj = yaml.safe_load(path.read_text())
        obj["metadata"]["namespace"] = "default"
        routes[path.stem] = resolve_route(obj, endpoints)
    rest_eventbus = routes["rule-rest-eventbus"]
    assert (rest_eventbus.source, rest_eventbus.target) == (RuleEndpointType.REST,
                                                           RuleEndpointType.EVENTBUS)
    assert (rest_eventbus.rest_path, rest_eventbus.target_topic) == ("/test", "test")
    eventbus_rest = routes["rule-eventbus-rest"]
    assert route_matches_topic(eventbus_rest, "edge-node", "test")
    assert not route_matches_topic(eventbus_rest, "other-node", "test")
    assert eventbus_rest.target_url == "http://a.com"
    servicebus = routes["rule-rest-servicebus"]
    assert (servicebus.service_port, servicebus.target_path) == (6666, "/target")


def test_wildcard_source_topics_match_like_mqtt() -> None:
    route = resolve_route(rule("my-eventbus", {"topic": "plant/+/temp", "node_name": "n1"},
                               "my-rest", {"resource": "http://127.0.0.1:9/x"}), ENDPOINTS)
    assert route_matches_topic(route, "n1", "plant/a/temp")
    assert not route_matches_topic(route, "n1", "plant/a/b/temp")


@pytest.mark.parametrize(("spec", "field"), [
    (("nope", {"path": "/a"}, "my-eventbus", {"topic": "t"}), "spec.source"),
    (("my-rest", {"path": "/a"}, "nope", {"topic": "t"}), "spec.target"),
    (("my-rest", {}, "my-eventbus", {"topic": "t"}), "spec.sourceResource.path"),
    (("my-rest", {"path": "/a"}, "my-eventbus", {}), "spec.targetResource.topic"),
    (("my-rest", {"path": "/a"}, "my-eventbus", {"topic": "a/#"}), "spec.targetResource.topic"),
    (("my-eventbus", {"topic": "t"}, "my-rest", {"resource": "http://x"}),
     "spec.sourceResource.node_name"),
    (("my-eventbus", {"topic": "a/#/b", "node_name": "n"}, "my-rest", {"resource": "http://x"}),
     "spec.sourceResource.topic"),
    (("my-eventbus", {"topic": "t", "node_name": "n"}, "my-rest", {"resource": "ftp://x"}),
     "spec.targetResource.resource"),
    (("my-eventbus", {"topic": "t", "node_name": "n"}, "my-eventbus", {"topic": "u"}),
     "spec.target"),
])
def test_unusable_rules_name_the_field(spec: tuple[Any, ...], field: str) -> None:
    with pytest.raises(InvalidRoute) as err:
        resolve_route(rule(*spec), ENDPOINTS)
    assert err.value.field == field


def test_servicebus_needs_a_port() -> None:
    endpoints = {**ENDPOINTS, "sb": endpoint("sb", "servicebus", service_port="99999")}
    with pytest.raises(InvalidRoute) as err:
        resolve_route(rule("my-rest", {"path": "/a"}, "sb", {"path": "/b"}), endpoints)
    assert err.value.field == "spec.properties.service_port"


def test_paths_are_compared_without_slash_noise() -> None:
    assert normalize_path("test") == normalize_path("/test/") == "/test"


@pytest.mark.parametrize("payload", [b"", b'{"t": 21.5}', "grüße".encode(), bytes(range(256))])
def test_payloads_survive_the_json_link_unchanged(payload: bytes) -> None:
    text, encoding = encode_payload(payload)
    assert decode_payload(text, encoding) == payload
    assert encoding is (Encoding.BASE64 if payload == bytes(range(256)) else Encoding.UTF8)


def test_bad_base64_is_a_named_error() -> None:
    with pytest.raises(BadRequest) as err:
        decode_payload("***", Encoding.BASE64)
    assert err.value.field == "body.payload"
