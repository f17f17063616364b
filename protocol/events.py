"""Watch event types, shared by the cloud API's watch and the edge metaserver's watch
(one JSON object per line: ``{"type": "ADDED|MODIFIED|DELETED", "object": {...}}``)."""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
