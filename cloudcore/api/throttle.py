"""Per-token request limits for the REST API.

One token bucket per API user: a script with an operator or viewer token that loops
on the API gets ``429 TooManyRequests`` (with ``Retry-After`` and, as Kubernetes
does, ``details.retryAfterSeconds``) instead of starving everyone else.  Admins are
exempt, as Kubernetes' API Priority and Fairness exempts ``system:masters``: they are
the ones who must still get in to repair an overloaded site, and their tokens are the
ones an operator cannot obtain.  Limits are per user name, so every token of a user
shares one budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from cloudcore.auth import Principal, Role
from protocol.errors import RateLimited
from protocol.ratelimit import TokenBucket


class ApiRateLimited(RateLimited):
    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after)))

    def to_status(self) -> dict[str, Any]:
        body = super().to_status()
        body["details"] = {"retryAfterSeconds": int(self.retry_after_header)}
        return body


class TokenThrottle:
    def __init__(self, rate: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, principal: Principal) -> None:
        """Spend one request of ``principal``'s budget or raise :class:`ApiRateLimited`."""
        if principal.role is Role.ADMIN:
            return
        bucket = self._buckets.get(principal.name)
        if bucket is None:
            # Users are created by admins only, so this dict stays as small as the list
            # of users; no eviction needed.
            bucket = self._buckets[principal.name] = TokenBucket(self.rate, self.burst)
        if not bucket.allow(self._clock()):
            retry = 1.0 / self.rate
            raise ApiRateLimited(
                f"user {principal.name!r} exceeds {self.rate:g} requests/s "
                f"(burst {self.burst}); retry in {retry:.2g} s", retry)
