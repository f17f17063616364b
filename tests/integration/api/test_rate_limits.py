"""Per-user request budgets: a looping script gets 429 and changes nothing; admins and
other users are not held up; efctl waits the server's Retry-After out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudcore.api.throttle import TokenThrottle
from cloudcore.auth import Principal, Role
from efctl.client import ApiClient
from efctl.config import EfctlConfig
from protocol.errors import RateLimited
from tests.integration.api.api_harness import RunningApi, running_api
from tests.integration.api.api_objects import device, devices_path

RATE, BURST = 2.0, 3


@pytest.fixture
def api(tmp_path: Path) -> Iterator[RunningApi]:
    with running_api(tmp_path, throttle=TokenThrottle(RATE, BURST)) as server:
        yield server


def test_a_user_past_its_budget_gets_429_and_nothing_changes(api: RunningApi) -> None:
    olga = api.user("olga", Role.OPERATOR)
    with api.client(olga) as c, api.admin() as admin:
        answers = [c.get(devices_path()).status_code for _ in range(BURST)]
        assert answers == [200] * BURST
        r = c.put(devices_path(name="d1"), json=device("d1"))
        assert r.status_code == 429
        assert r.headers["retry-after"] == "1"
        body = r.json()
        assert body["reason"] == "TooManyRequests"
        assert body["message"].startswith("user 'olga' exceeds 2 requests/s (burst 3)")
        assert body["details"] == {"retryAfterSeconds": 1}
        # Refused before the handler ran: the Device was not written.
        assert admin.get(devices_path(name="d1")).status_code == 404

        # Another user has a budget of its own; admins have none to exhaust.
        vic = api.user("vic", Role.VIEWER)
        with api.client(vic) as v:
            assert v.get(devices_path()).status_code == 200
        assert all(admin.get(devices_path()).status_code == 200 for _ in range(4 * BURST))


def test_efctl_waits_out_the_budget_instead_of_failing(api: RunningApi) -> None:
    config = EfctlConfig(server=api.url, certificateAuthorityData=api.ca_pem,
                         token=api.user("olga", Role.OPERATOR))
    started = time.monotonic()
    with ApiClient(config) as client:
        for i in range(BURST + 2):
            code, _ = client.put(devices_path(name=f"d{i}"), device(f"d{i}"))
            assert code == 201
    # Two requests past the burst at 2/s: the client must have waited for them.
    assert time.monotonic() - started >= 1.0
    with api.admin() as admin:
        names = [d["metadata"]["name"] for d in admin.get(devices_path()).json()["items"]]
    assert sorted(names) == [f"d{i}" for i in range(BURST + 2)]


def test_the_budget_refills_at_the_configured_rate() -> None:
    now = [100.0]
    throttle = TokenThrottle(rate=4.0, burst=2, clock=lambda: now[0])
    bob = Principal("bob", Role.VIEWER)
    throttle.check(bob)
    throttle.check(bob)
    with pytest.raises(RateLimited):
        throttle.check(bob)
    now[0] += 0.25  # one request's worth at 4/s
    throttle.check(bob)
    with pytest.raises(RateLimited):
        throttle.check(bob)
