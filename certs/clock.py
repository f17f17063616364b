"""How far a node's clock is from the cloud's, and whether that is too far (stdlib only).

Certificates and join tokens are checked against wall clocks on two machines. cloudcore
has one tolerance for the difference (``nodes.clockSkewSeconds``, 5 minutes by
default): certificates are backdated by it, join tokens are forgiven it, a node never
calls its certificate expired before it has passed, and a join from a node whose clock
is further off is refused with the size of the difference, because certificates would
otherwise fail later in ways that name no clock at all.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from certs.errors import CertError


class ClockSkewError(CertError):
    """The node's clock differs from the cloud's by more than the tolerance."""

    def __init__(self, skew: timedelta, tolerance: timedelta) -> None:
        self.skew = skew
        self.tolerance = tolerance
        super().__init__(
            f"this node's clock is {describe_skew(skew)} the cloud's, more than the "
            f"{format_duration(tolerance)} tolerated (nodes.clockSkewSeconds); set the "
            "node's clock (NTP) and try again"
        )


def clock_skew(node_time: datetime, cloud_time: datetime) -> timedelta:
    """Positive when the node's clock is ahead of the cloud's."""
    return node_time - cloud_time


# The two readings compared are taken a network transit apart (a TLS handshake on a slow
# link, a busy event loop), so a difference this small says nothing about the clocks.
MEASUREMENT_SLACK = timedelta(seconds=5)


def check_clock_skew(
    node_time: datetime,
    cloud_time: datetime,
    tolerance: timedelta,
    *,
    slack: timedelta = MEASUREMENT_SLACK,
) -> timedelta:
    """The skew (node minus cloud) if within ``tolerance`` (+ ``slack`` for the time
    between the two readings), else ClockSkewError naming the skew and the tolerance."""
    skew = clock_skew(node_time, cloud_time)
    if abs(skew) > tolerance + slack:
        raise ClockSkewError(skew, tolerance)
    return skew


def describe_skew(skew: timedelta) -> str:
    """``7m12s ahead of`` / ``2h0m0s behind`` / ``in step with``."""
    if skew == timedelta(0):
        return "in step with"
    return f"{format_duration(abs(skew))} {'ahead of' if skew > timedelta(0) else 'behind'}"


def format_duration(span: timedelta) -> str:
    """``1d2h3m4s``, ``5m0s``, ``42s``, ``0.25s``: whole units, largest first."""
    seconds = span.total_seconds()
    if seconds < 1:
        return f"{seconds:g}s"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{minutes}m{secs}s" if minutes or hours or days else f"{secs}s"
    if hours or days:
        text = f"{hours}h{text}"
    if days:
        text = f"{days}d{text}"
    return text
