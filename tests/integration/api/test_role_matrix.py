"""Every cell of the role matrix in docs/security.md, checked against the running API.

The document is the promise users read; this test makes it impossible for the code and
the document to disagree.  For each resource row, role and verb it sends the request a
client would send and asks one question: was it refused *because of the role* (403 and
"may not ...")?  Anything else — 200, 404, 422, a 403 because Nodes are created by the
system — means authorisation let it through.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import protocol.kinds  # noqa: F401  (registers every kind)
from cloudcore.artifacts import ArtifactStore
from cloudcore.auth import Role
from cloudcore.revocation import NodeRevoker, RevocationList
from protocol.resources import REGISTRY
from tests.integration.api.api_harness import RunningApi, running_api

MATRIX_DOC = Path(__file__).resolve().parents[3] / "docs" / "security.md"
NO_SUCH = "0" * 64  # a well-formed artifact digest nobody pushed, a name nobody used

# The words of the document, spelled out into the verbs a request can exercise.
WORDS = {
    "read": {"get", "list", "watch"},
    "write": {"create", "update", "delete"},
    "status": {"status"},
    "create": {"create"},
    "update": {"update"},
    "delete": {"delete"},
    "-": set(),
}
KIND_VERBS = ("get", "list", "watch", "create", "update", "delete", "status")
OTHER_ROWS = {"artifacts": ("get", "list", "create", "delete"),
              "users": ("create",), "join tokens": ("create",),
              "node revocations": ("create",)}


def read_matrix() -> dict[str, dict[str, set[str]]]:
    """resource -> role -> allowed verbs, parsed from the document's table."""
    text = MATRIX_DOC.read_text()
    table = text.split("<!-- role-matrix:begin -->")[1].split("<!-- role-matrix:end -->")[0]
    rows = [line for line in table.strip().splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert sorted(header[1:]) == sorted(r.value for r in Role), header
    matrix: dict[str, dict[str, set[str]]] = {}
    for line in rows[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        matrix[cells[0]] = {}
        for role, cell in zip(header[1:], cells[1:], strict=True):
            verbs: set[str] = set()
            for word in re.split(r",\s*", cell):
                assert word in WORDS, f"unknown word {word!r} in the matrix row {cells[0]}"
                verbs |= WORDS[word]
            matrix[cells[0]][role] = verbs
    return matrix


MATRIX = read_matrix()


def test_the_matrix_covers_every_kind_and_endpoint() -> None:
    # Kinds that tests register for themselves (group test.edgefleet.io) are not ours.
    served = {k.kind for k in REGISTRY.all() if not k.group.startswith("test.")}
    assert set(MATRIX) == served | set(OTHER_ROWS)


def kind_request(client: httpx.Client, kind_name: str, verb: str) -> httpx.Response:
    kind = REGISTRY.by_kind(kind_name)
    ns = "default" if kind.namespaced else None
    collection, item = kind.collection_path(ns), kind.object_path(ns, "nobody")
    if verb == "get":
        return client.get(item)
    if verb == "list":
        return client.get(collection)
    if verb == "watch":
        # Only the head of the stream matters: authorisation happens before it opens.
        with client.stream("GET", collection, params={"watch": "true"}) as r:
            r.close()
            return r
    if verb == "create":
        return client.post(collection, json={})
    if verb == "update":
        return client.put(item, json={})
    if verb == "delete":
        return client.delete(item)
    assert verb == "status"
    return client.put(item + "/status", json={})


def other_request(client: httpx.Client, row: str, verb: str) -> httpx.Response:
    if row == "artifacts":
        return {"get": lambda: client.get(f"/artifacts/{NO_SUCH}"),
                "list": lambda: client.get("/artifacts"),
                "create": lambda: client.post("/artifacts", content=b"matrix"),
                "delete": lambda: client.delete(f"/artifacts/{NO_SUCH}")}[verb]()
    path = {"users": "/auth/users", "join tokens": "/auth/jointokens",
            "node revocations": "/auth/nodes/nobody/revoke"}[row]
    return client.post(path, json={"ttl": "bogus"} if row == "join tokens" else {})


def refused_for_role(r: httpx.Response) -> bool:
    return r.status_code == 403 and " may not " in r.json()["message"]


async def no_node(node: str) -> bool:
    return False


@pytest.fixture
def api(tmp_path: Path) -> Iterator[RunningApi]:
    # The conftest's API has neither artifacts nor revocation; the matrix has both rows.
    revoker = NodeRevoker(RevocationList.open(tmp_path / "revocations.db"),
                          node_exists=no_node, cut_off=no_node)
    with running_api(tmp_path, artifacts=ArtifactStore.open(tmp_path / "artifacts"),
                     revoker=revoker) as server:
        yield server


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_every_cell_of_the_role_matrix_holds(api: RunningApi, role: Role) -> None:
    token = api.admin_token if role is Role.ADMIN else api.user(f"matrix-{role}", role)
    wrong: list[str] = []
    with api.client(token) as client:
        for row, by_role in MATRIX.items():
            verbs = OTHER_ROWS.get(row, KIND_VERBS)
            for verb in verbs:
                if row in OTHER_ROWS:
                    r = other_request(client, row, verb)
                else:
                    r = kind_request(client, row, verb)
                allowed = verb in by_role[role.value]
                if refused_for_role(r) == allowed:
                    wrong.append(f"{row} {verb}: document says "
                                 f"{'allowed' if allowed else 'refused'}, API answered "
                                 f"{r.status_code} {r.text[:120]}")
    assert wrong == []
