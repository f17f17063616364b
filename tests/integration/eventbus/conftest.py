from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from edgecore.eventbus.broker import BrokerConfig, EmbeddedBroker
from edgecore.eventbus.client import BusClient
from tests.integration.eventbus.peers import PahoPeer
from tests.mosquitto import Mosquitto


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    with Mosquitto() as broker:
        yield broker


@pytest.fixture
async def embedded() -> AsyncIterator[EmbeddedBroker]:
    broker = EmbeddedBroker(BrokerConfig(host="127.0.0.1", port=0))
    await broker.start()
    yield broker
    await broker.stop()


@pytest.fixture
async def peers() -> AsyncIterator[Callable[..., PahoPeer]]:
    made: list[PahoPeer] = []

    def make(port: int, client_id: str, **kw: Any) -> PahoPeer:
        peer = PahoPeer(port, client_id, **kw)
        made.append(peer)
        return peer

    yield make
    for peer in made:
        await peer.close()


@pytest.fixture
async def bus_clients() -> AsyncIterator[Callable[..., BusClient]]:
    made: list[BusClient] = []

    def make(url: str, client_id: str = "edgecore-test", **kw: Any) -> BusClient:
        client = BusClient(url, client_id, **kw)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.stop()
