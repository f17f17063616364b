"""Who may call the REST API, and what each caller may do.

Authentication: every caller presents a bearer token (``efu_`` + 32 random bytes,
url-safe base64).  Only the token's sha256 is stored, in an sqlite file of its own,
so a copy of the file does not let anyone in.  A token is found by looking its hash up
in an index: the comparison happens on a digest of the secret, never on the secret
itself, so response timing says nothing about how much of a guess was right.

Authorisation: a caller has one :class:`Role`; :data:`PERMISSIONS` is the single table
that says which verbs each role may use on which kind.  Later features extend that
table rather than adding checks elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from cloudcore.privatedb import open_private_db
from protocol.errors import AlreadyExists, Forbidden, InvalidObject, Unauthorized
from protocol.resources import KindInfo

log = logging.getLogger(__name__)

TOKEN_PREFIX = "efu_"
_USER_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.@]{0,61}[A-Za-z0-9])?$")


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"


class Verb(StrEnum):
    GET = "get"
    LIST = "list"
    WATCH = "watch"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    # Writing the /status subresource: status is the system's account of the world,
    # so it is a verb of its own rather than an ordinary update.
    UPDATE_STATUS = "update-status"


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role


READ = frozenset({Verb.GET, Verb.LIST, Verb.WATCH})
WRITE = frozenset({Verb.CREATE, Verb.UPDATE, Verb.DELETE})
EVERYTHING = frozenset(Verb)

ANY_KIND = "*"
"""Target key for every kind not named in a role's rules."""
AUTH_API = "auth"
"""Target key for the /auth/* endpoints (creating users and join tokens)."""

# role -> target (a kind name, ANY_KIND or AUTH_API) -> the verbs allowed on it.
# AUTH_API never falls back to ANY_KIND: a role reaches /auth/* only if it says so.
#
# The operator runs the fleet's workloads and devices (Apps, Devices, DeviceModels,
# Rules, twins, artifact pushes); what decides where and how much may run — Nodes,
# NodeGroups, placement/override policies, scheduling Queues — and who may get in
# (users, join tokens, revocation) is the admin's.  docs/security.md shows this table
# as the role matrix, and tests/integration/api/test_role_matrix.py checks every cell
# of that document against the running API.
ADMIN_ONLY_KINDS = ("Node", "NodeGroup", "PropagationPolicy", "OverridePolicy", "Queue")
PERMISSIONS: dict[Role, dict[str, frozenset[Verb]]] = {
    Role.VIEWER: {ANY_KIND: READ},
    Role.OPERATOR: {
        ANY_KIND: READ | WRITE,
        **{kind: READ for kind in ADMIN_ONLY_KINDS},
        # Pushing is the operator's; deleting content that running Apps may still need
        # is the admin's.
        "Artifact": READ | {Verb.CREATE},
    },
    Role.ADMIN: {ANY_KIND: EVERYTHING, AUTH_API: EVERYTHING},
}


def allowed_verbs(role: Role, kind: KindInfo | None) -> frozenset[Verb]:
    rules = PERMISSIONS.get(role, {})
    if kind is None:
        return rules.get(AUTH_API, frozenset())
    return rules.get(kind.kind, rules.get(ANY_KIND, frozenset()))


def authorize(
    principal: Principal, verb: Verb, kind: KindInfo | None, *, resource: str | None = None,
) -> None:
    """Raise :class:`Forbidden` unless ``principal`` may use ``verb`` on ``kind``
    (``None`` = the /auth/* API; ``resource`` then names what is being made, for the
    message, e.g. ``"users"``)."""
    if verb in allowed_verbs(principal.role, kind):
        return
    if kind is None:
        action, target = verb.value, resource or "auth resources"
    elif verb is Verb.UPDATE_STATUS:
        action, target = "update", f"{kind.plural}/status"
    else:
        action, target = verb.value, kind.plural
    raise Forbidden(f"user {principal.name!r} ({principal.role}) may not {action} {target}")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def new_token() -> str:
    raw = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")
    return TOKEN_PREFIX + raw


class TokenAuth:
    """API users and their bearer tokens, kept in one sqlite file.

    Methods are synchronous and thread-safe (one connection behind a lock):
    :meth:`authenticate` is a single indexed read, cheap enough for the event loop;
    :meth:`create` fsyncs, so async callers run it in a thread.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self.path = path

    @classmethod
    def open(cls, path: Path) -> TokenAuth:
        path = Path(path)
        conn = open_private_db(path)
        conn.execute(
            """CREATE TABLE IF NOT EXISTS api_tokens (
                   name TEXT PRIMARY KEY,
                   token_sha256 BLOB NOT NULL UNIQUE,
                   role TEXT NOT NULL,
                   created TEXT NOT NULL
               )"""
        )
        return cls(conn, path)

    def create(self, name: str, role: Role) -> str:
        """Make a user with a fresh token and return the token (shown only this once).
        Names are unique: :class:`AlreadyExists` if ``name`` is taken."""
        # fullmatch: with match() "$" also matched before a final newline, so "bob\n"
        # became a user (found by tests/fuzz).
        if not isinstance(name, str) or not _USER_NAME.fullmatch(name):
            raise InvalidObject(
                f"{name!r} is not a valid user name: letters, digits, '-', '_', '.', '@', "
                "starting and ending with a letter or digit, at most 63 characters",
                field="name",
            )
        role = Role(role)
        token = new_token()
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT INTO api_tokens (name, token_sha256, role, created) "
                    "VALUES (?, ?, ?, ?)",
                    (name, _digest(token), role.value, created),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"user {name!r} already exists", field="name") from None
        log.info("created API user %r with role %s", name, role)
        return token

    def exists(self, name: str) -> bool:
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM api_tokens WHERE name = ?", (name,)
            ).fetchone()
        return row is not None

    def authenticate(self, header_value: str | None) -> Principal:
        """Map an ``Authorization`` header value to the caller, or raise
        :class:`Unauthorized` saying what was wrong with it."""
        if not header_value or not header_value.strip():
            raise Unauthorized(
                "missing bearer token: send the header 'Authorization: Bearer <token>'"
            )
        scheme, _, token = header_value.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        with self._lock:
            row = self._conn.execute(
                "SELECT name, role FROM api_tokens WHERE token_sha256 = ?", (_digest(token),)
            ).fetchone()
        if row is None:
            raise Unauthorized("invalid bearer token: no user holds this token")
        name, role = row
        return Principal(str(name), Role(role))

    def close(self) -> None:
        with self._lock:
            self._conn.close()
