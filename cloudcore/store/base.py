"""The store interface every backend implements.

Semantics (the same for sqlite and, later, etcd):

* One monotonic ``resourceVersion`` counter per store.  Every create, update, status
  update and delete takes the next value; it is a decimal string on objects and an
  ``int`` in this interface.
* ``metadata.uid`` (uuid4) and ``metadata.creationTimestamp`` (RFC 3339, UTC) are set at
  creation and never change; ``metadata.generation`` starts at 1 and grows by one each
  time ``spec`` changes.
* Users write ``spec``/``metadata.labels``/``metadata.annotations`` through
  :meth:`Store.apply`; the stored ``status`` is kept as it was.  Only the system writes
  ``status``, through :meth:`Store.update_status`.
* Optimistic concurrency: a write carrying ``expected_rv`` (or a non-empty
  ``metadata.resourceVersion`` for :meth:`Store.apply`) that is not the stored one
  raises :class:`~protocol.errors.Conflict` and changes nothing.
* :meth:`Store.watch` yields every change with a resourceVersion greater than
  ``from_rv``, in order, first from the history and then live.  History older than the
  compaction point raises :class:`~protocol.errors.Gone`.
* :meth:`Store.write_many` makes many writes in one transaction (a controller placing
  thousands of replicas pays for one durable commit, not thousands); each write
  succeeds or fails exactly as the single call would, and each change is still its own
  resourceVersion and its own watch event.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from protocol.errors import EdgefleetError, NotFound
from protocol.events import EventType
from protocol.selectors import Selector


@dataclass(frozen=True)
class WatchEvent:
    type: EventType
    object: dict[str, Any]  # for DELETED: the last state, with the delete's resourceVersion
    rv: int

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type.value, "object": self.object}


@dataclass(frozen=True)
class Create:
    """:meth:`Store.create` as one write of a batch."""

    obj: dict[str, Any]


@dataclass(frozen=True)
class Apply:
    """:meth:`Store.apply` as one write of a batch."""

    obj: dict[str, Any]


@dataclass(frozen=True)
class UpdateStatus:
    """:meth:`Store.update_status` as one write of a batch."""

    kind: str
    namespace: str | None
    name: str
    status: dict[str, Any]
    expected_rv: int | None = None


@dataclass(frozen=True)
class Delete:
    """:meth:`Store.delete` as one write of a batch."""

    kind: str
    namespace: str | None
    name: str
    expected_rv: int | None = None


Write = Create | Apply | UpdateStatus | Delete
WriteResult = dict[str, Any] | EdgefleetError
"""The stored object (as the single call returns it), or why that write was refused."""


class Store(Protocol):
    async def apply(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create the object, or update spec, labels and annotations of an existing
        one.  Returns the stored object and whether it was created.  ``obj`` is
        already validated; ``metadata.resourceVersion``, when non-empty, is a
        precondition.  An update that changes nothing returns the stored object
        unchanged (no new resourceVersion)."""
        ...

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create only; :class:`~protocol.errors.AlreadyExists` if the key is taken."""
        ...

    async def update_status(
        self, kind: str, namespace: str | None, name: str, status: dict[str, Any],
        expected_rv: int | None = None,
    ) -> dict[str, Any]:
        ...

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        ...

    async def list(
        self, kind: str, namespace: str | None = None, selector: Selector | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """Objects of ``kind`` (all namespaces when ``namespace`` is None) matching the
        label selector, sorted by namespace and name, and the store's current
        resourceVersion (a watch from it misses nothing)."""
        ...

    async def delete(
        self, kind: str, namespace: str | None, name: str, expected_rv: int | None = None,
    ) -> dict[str, Any]:
        """Remove the object; returns its last state carrying the delete's new
        resourceVersion."""
        ...

    async def write_many(self, writes: Sequence[Write]) -> builtins.list[WriteResult]:
        """Make ``writes`` in order as one transaction.  Each is checked as its single
        call would be, against the store as the earlier writes of the batch left it; one
        that is refused (NotFound, Conflict, AlreadyExists, an object that is not JSON)
        changes nothing and its error takes its place in the result, the others go ahead.
        What succeeds commits together and then reaches watchers as one event per change,
        in order, with consecutive resourceVersions.  A failure of the transaction itself
        (the store is full, the disk fails) writes nothing and is raised.  Unlike the
        single calls' results, the stored objects returned may be shared with watchers:
        read them, do not modify them."""
        ...

    def watch(self, from_rv: int, kinds: frozenset[str] | None = None) -> AsyncIterator[WatchEvent]:
        ...

    def current_rv(self) -> int:
        ...

    async def close(self) -> None:
        ...


def node_exists_in(store: Store) -> Callable[[str], Awaitable[bool]]:
    """Whether ``store`` holds a Node of a name, as the callable the hub, the edge
    downloads and the revoker take (a deleted node's certificate gets nothing)."""
    async def node_exists(node: str) -> bool:
        try:
            await store.get("Node", None, node)
            return True
        except NotFound:
            return False
    return node_exists
