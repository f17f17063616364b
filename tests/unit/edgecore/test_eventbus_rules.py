"""Pure rules of the EventBus: which listen addresses count as loopback, what a broker
config and a broker URL may contain."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edgecore.eventbus.broker import BrokerConfig, is_loopback_host
from edgecore.eventbus.client import parse_broker_url


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "127.255.0.9", "::1"])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize("host", ["", "0.0.0.0", "::", "192.168.1.10", "10.0.0.1",
                                  "2001:db8::1", "::ffff:10.0.0.1"])
def test_addresses_that_are_not_loopback(host: str) -> None:
    assert not is_loopback_host(host)


def test_broker_config_defaults_to_loopback_1883() -> None:
    config = BrokerConfig()
    assert (config.host, config.port, config.password_file) == ("127.0.0.1", 1883, None)


@pytest.mark.parametrize("bad", ["", "a/#/b", "a/b#", "a/+b", "##"])
def test_acl_filters_must_be_valid(bad: str) -> None:
    with pytest.raises(ValidationError):
        BrokerConfig(acl={"dev": [bad]})
    with pytest.raises(ValidationError):
        BrokerConfig(publish_acl={"dev": [bad]})


def test_acl_accepts_kubeedge_filters() -> None:
    config = BrokerConfig(acl={"dev": ["$hw/events/device/default/dev/#", "+/user/#"]})
    assert config.acl["dev"][1] == "+/user/#"


def test_unknown_config_keys_are_refused() -> None:
    with pytest.raises(ValidationError):
        BrokerConfig.model_validate({"hots": "0.0.0.0"})


@pytest.mark.parametrize(("url", "expected"), [
    ("tcp://127.0.0.1:1883", ("127.0.0.1", 1883)),
    ("tcp://localhost", ("localhost", 1883)),
    ("mqtt://10.1.2.3:11883", ("10.1.2.3", 11883)),
    ("tcp://[::1]:1884", ("::1", 1884)),
])
def test_broker_urls(url: str, expected: tuple[str, int]) -> None:
    assert parse_broker_url(url) == expected


@pytest.mark.parametrize("url", ["127.0.0.1:1883", "ssl://h:8883", "tcp://:1883",
                                 "tcp://h:notaport"])
def test_bad_broker_urls(url: str) -> None:
    with pytest.raises(ValueError):
        parse_broker_url(url)
