"""One error root for everything edgefleet reports to a user or a peer.

    EdgefleetError                 reason, HTTP code, optional field path
    ├── InvalidObject      422     a field is missing, of the wrong type or not allowed
    ├── BadRequest         400     the request itself is malformed (bad JSON/YAML, bad query)
    ├── Unauthorized       401     no or unknown credentials
    ├── Forbidden          403     credentials known, action not allowed
    ├── NotFound           404
    ├── Conflict           409     stale resourceVersion
    │   └── AlreadyExists  409
    ├── Gone               410     watch asked for history that was compacted away
    ├── TooLarge           413
    ├── RateLimited        429
    ├── FrameDecodeError   400     a websocket frame that is not a valid Envelope
    ├── Unavailable        503
    ├── GatewayTimeout     504
    ├── BadGateway         502
    └── StoreFull          507     a database reached its size cap (or the disk is full)

Every error renders as a Kubernetes-style ``Status`` body so that API clients,
efctl and the link all speak the same shape.
"""

from __future__ import annotations

from typing import Any, ClassVar


class EdgefleetError(Exception):
    reason: ClassVar[str] = "InternalError"
    code: ClassVar[int] = 500

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": self.reason,
            "message": self.message,
            "code": self.code,
        }
        if self.field is not None:
            body["details"] = {"field": self.field}
        return body

    def __str__(self) -> str:
        if self.field:
            return f"{self.field}: {self.message}"
        return self.message


class InvalidObject(EdgefleetError):
    reason = "Invalid"
    code = 422


class BadRequest(EdgefleetError):
    reason = "BadRequest"
    code = 400


class Unauthorized(EdgefleetError):
    reason = "Unauthorized"
    code = 401


class Forbidden(EdgefleetError):
    reason = "Forbidden"
    code = 403


class NotFound(EdgefleetError):
    reason = "NotFound"
    code = 404


class Conflict(EdgefleetError):
    reason = "Conflict"
    code = 409


class AlreadyExists(Conflict):
    reason = "AlreadyExists"


class Gone(EdgefleetError):
    reason = "Expired"
    code = 410


class TooLarge(EdgefleetError):
    reason = "RequestEntityTooLarge"
    code = 413


class RateLimited(EdgefleetError):
    reason = "TooManyRequests"
    code = 429


class FrameDecodeError(EdgefleetError):
    reason = "BadFrame"
    code = 400


class Unavailable(EdgefleetError):
    """The thing asked for exists but cannot be reached now (a node not connected, a
    service switched off)."""

    reason = "ServiceUnavailable"
    code = 503


class GatewayTimeout(EdgefleetError):
    reason = "Timeout"
    code = 504


class BadGateway(EdgefleetError):
    """Something we relayed to (an edge service, a rule's target URL) failed."""

    reason = "BadGateway"
    code = 502


class StoreFull(EdgefleetError):
    """A write was refused because the database holding it reached its configured size
    cap or the disk is full.  Nothing of the write was stored; reads and deletes still
    work, and the same write succeeds once space is freed or the cap raised."""

    reason = "InsufficientStorage"
    code = 507


TRANSIENT_CODES = frozenset({RateLimited.code, Unavailable.code, StoreFull.code})
"""Codes that refuse a message for now, not for what it is: the same message, sent
again later, can succeed (the edge keeps such upstream messages and resends them)."""


_BY_REASON: dict[str, type[EdgefleetError]] = {
    cls.reason: cls
    for cls in (
        InvalidObject, BadRequest, Unauthorized, Forbidden, NotFound, Conflict,
        AlreadyExists, Gone, TooLarge, RateLimited, FrameDecodeError, Unavailable,
        GatewayTimeout, BadGateway, StoreFull,
    )
}


def error_from_status(body: dict[str, Any]) -> EdgefleetError:
    """Rebuild a typed error from a Status body (used by clients of the API and link)."""
    cls = _BY_REASON.get(str(body.get("reason")), EdgefleetError)
    details = body.get("details") or {}
    field = details.get("field") if isinstance(details, dict) else None
    return cls(str(body.get("message", "unknown error")), field=field)
