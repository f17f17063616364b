"""The embedded amqtt broker: anonymous on loopback only; password + ACL otherwise.

How the authenticated path is exercised: a configured password file switches the
broker to password + ACL mode on any address, loopback included (a production rule,
see broker.py), so these tests run the very code a non-loopback listener runs, on
127.0.0.1.  What cannot be shown here without binding a public address — that a
non-loopback listener *demands* that mode — is covered by the refusal tests (the
broker refuses before it binds anything) and the unit tests of ``is_loopback_host``.
"""

from __future__ import annotations

import socket
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from edgecore.eventbus.broker import (
    BrokerConfig,
    BrokerConfigError,
    EmbeddedBroker,
    set_password,
)
from tests.integration.eventbus.peers import PahoPeer
from tests.mosquitto import free_port

Peers = Callable[..., PahoPeer]


async def test_loopback_broker_serves_anonymous_clients(embedded: EmbeddedBroker,
                                                        peers: Peers) -> None:
    assert not embedded.auth_required
    sub, pub = peers(embedded.bound_port, "app"), peers(embedded.bound_port, "device")
    assert not (await sub.connect()).is_failure
    assert not (await pub.connect()).is_failure
    assert not (await sub.subscribe("sensors/#")).is_failure
    await pub.publish("sensors/room1/temp", b"21.5")
    assert await sub.next_message() == ("sensors/room1/temp", b"21.5")


async def test_kubeedge_dollar_hw_topics_are_carried(embedded: EmbeddedBroker,
                                                     peers: Peers) -> None:
    # Stock amqtt 0.12 drops every PUBLISH to a topic starting with '$'; KubeEdge's
    # device API is all under $hw/ (and mosquitto carries it).
    sub, dev = peers(embedded.bound_port, "edge"), peers(embedded.bound_port, "dev")
    await sub.connect()
    await dev.connect()
    await sub.subscribe("$hw/events/device/+/+/twin/+")
    topic = "$hw/events/device/default/thermo-1/twin/update"
    await dev.publish(topic, b'{"twin":{}}')
    assert await sub.next_message() == (topic, b'{"twin":{}}')


async def test_other_loopback_addresses_are_loopback_too(peers: Peers) -> None:
    # 127.0.0.2 is loopback (all of 127/8 is), so anonymous access stays allowed there.
    broker = EmbeddedBroker(BrokerConfig(host="127.0.0.2", port=0))
    await broker.start()
    try:
        peer = peers(broker.bound_port, "p", host="127.0.0.2")
        assert not (await peer.connect()).is_failure
    finally:
        await broker.stop()


def _nothing_listens(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "192.0.2.10"])
async def test_non_loopback_without_password_file_is_refused(host: str) -> None:
    port = free_port()
    broker = EmbeddedBroker(BrokerConfig(host=host, port=port))
    with pytest.raises(BrokerConfigError) as err:
        await broker.start()
    assert err.value.field == "password_file"
    assert "without authentication" in str(err.value)
    assert "loopback" in str(err.value)
    assert not broker.running
    assert _nothing_listens(port)


async def test_non_loopback_with_passwords_but_no_acl_is_refused(tmp_path: Path) -> None:
    pw = tmp_path / "passwd"
    set_password(pw, "dev1", "s3cret")
    port = free_port()
    # Subscribe ACL only: amqtt would let everyone publish everywhere.
    broker = EmbeddedBroker(BrokerConfig(host="0.0.0.0", port=port, password_file=pw,
                                         acl={"dev1": ["devices/dev1/#"]}))
    with pytest.raises(BrokerConfigError) as err:
        await broker.start()
    assert err.value.field == "publish_acl"
    assert _nothing_listens(port)


async def test_missing_password_file_is_refused(tmp_path: Path) -> None:
    broker = EmbeddedBroker(BrokerConfig(
        port=0, password_file=tmp_path / "nope", acl={"a": ["#"]}, publish_acl={"a": ["#"]}))
    with pytest.raises(BrokerConfigError, match="does not exist"):
        await broker.start()


@pytest.mark.parametrize("content", ["dev1:plaintext\n", "# only a comment\n", "nocolon\n"])
async def test_malformed_password_file_is_refused(tmp_path: Path, content: str) -> None:
    pw = tmp_path / "passwd"
    pw.write_text(content)
    broker = EmbeddedBroker(BrokerConfig(
        port=0, password_file=pw, acl={"dev1": ["#"]}, publish_acl={"dev1": ["#"]}))
    with pytest.raises(BrokerConfigError) as err:
        await broker.start()
    assert err.value.field == "password_file"
    assert not broker.running


def test_set_password_writes_argon2_entries_0600_and_replaces(tmp_path: Path) -> None:
    pw = tmp_path / "passwd"
    set_password(pw, "dev1", "first")
    set_password(pw, "dev2", "other")
    set_password(pw, "dev1", "second")
    assert stat.S_IMODE(pw.stat().st_mode) == 0o600
    entries = dict(line.split(":", 1) for line in pw.read_text().splitlines())
    assert sorted(entries) == ["dev1", "dev2"]
    hasher = PasswordHash((Argon2Hasher(),))
    assert entries["dev1"].startswith("$argon2")
    assert hasher.verify("second", entries["dev1"])
    assert not hasher.verify("first", entries["dev1"])
    assert hasher.verify("other", entries["dev2"])
    for bad in ("", "a:b", "a b", "anonymous"):
        with pytest.raises(ValueError):
            set_password(pw, bad, "x")


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[EmbeddedBroker]:
    pw = tmp_path / "passwd"
    set_password(pw, "dev1", "dev1-pass")
    set_password(pw, "watcher", "watcher-pass")
    broker = EmbeddedBroker(BrokerConfig(
        host="127.0.0.1", port=0, password_file=pw,
        acl={"dev1": ["devices/dev1/#"], "watcher": ["devices/#", "$hw/events/#"]},
        publish_acl={"dev1": ["devices/dev1/#", "$hw/events/device/default/dev1/#"],
                     "watcher": ["watcher/#"]}))
    await broker.start()
    yield broker
    await broker.stop()


async def test_password_file_turns_authentication_on(secured: EmbeddedBroker,
                                                     peers: Peers) -> None:
    port = secured.bound_port
    assert secured.auth_required
    good = await peers(port, "d1", username="dev1", password="dev1-pass").connect()
    assert not good.is_failure
    wrong = await peers(port, "d1b", username="dev1", password="nope").connect()
    assert wrong.is_failure and "authorized" in str(wrong).lower()
    unknown = await peers(port, "x", username="mallory", password="dev1-pass").connect()
    assert unknown.is_failure
    anonymous = await peers(port, "anon").connect()
    assert anonymous.is_failure


async def test_publish_acl_drops_what_is_outside_it(secured: EmbeddedBroker,
                                                    peers: Peers) -> None:
    port = secured.bound_port
    watcher = peers(port, "w", username="watcher", password="watcher-pass")
    dev1 = peers(port, "d1", username="dev1", password="dev1-pass")
    await watcher.connect()
    await dev1.connect()
    assert not (await watcher.subscribe("devices/#")).is_failure
    assert not (await watcher.subscribe("$hw/events/#")).is_failure

    await dev1.publish("devices/dev2/temp", b"forged")          # outside dev1's ACL
    await dev1.publish("$hw/events/device/default/dev2/twin/update", b"forged")
    await dev1.publish("devices/dev1/temp", b"21.5")            # inside
    await dev1.publish("$hw/events/device/default/dev1/twin/update", b"{}")
    # The broker handles one connection's publishes in order, so once the allowed ones
    # (and a last marker) have arrived, the forged ones before them were processed too.
    got = {await watcher.next_message(), await watcher.next_message()}
    assert got == {("devices/dev1/temp", b"21.5"),
                   ("$hw/events/device/default/dev1/twin/update", b"{}")}
    await dev1.publish("devices/dev1/marker", b"end")
    assert await watcher.next_message() == ("devices/dev1/marker", b"end")
    assert watcher.messages.empty()


async def test_subscribe_acl_refuses_foreign_topics(secured: EmbeddedBroker,
                                                    peers: Peers) -> None:
    dev1 = peers(secured.bound_port, "d1", username="dev1", password="dev1-pass")
    await dev1.connect()
    assert (await dev1.subscribe("devices/dev2/#")).is_failure
    assert (await dev1.subscribe("#")).is_failure
    assert not (await dev1.subscribe("devices/dev1/cmd")).is_failure


async def test_restart_keeps_the_port_and_serves_again(embedded: EmbeddedBroker,
                                                       peers: Peers) -> None:
    port = embedded.bound_port
    await embedded.stop()
    assert _nothing_listens(port)
    await embedded.start()
    assert embedded.bound_port == port
    assert not (await peers(port, "again").connect()).is_failure
