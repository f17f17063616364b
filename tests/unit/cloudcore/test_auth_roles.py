"""The role table: what each role may do to which kind, and what a refusal says."""

from __future__ import annotations

import pytest

import protocol.kinds  # noqa: F401  (registers every kind)
from cloudcore.auth import Principal, Role, Verb, authorize
from protocol.errors import Forbidden
from protocol.resources import REGISTRY

DEVICE = REGISTRY.by_kind("Device")
NODE = REGISTRY.by_kind("Node")
READS = (Verb.GET, Verb.LIST, Verb.WATCH)
WRITES = (Verb.CREATE, Verb.UPDATE, Verb.DELETE)


def allowed(role: Role, verb: Verb, kind: object) -> bool:
    try:
        authorize(Principal("u", role), verb, kind)  # type: ignore[arg-type]
    except Forbidden:
        return False
    return True


@pytest.mark.parametrize("kind", REGISTRY.all(), ids=lambda k: k.kind)
def test_everyone_reads_every_kind(kind: object) -> None:
    for role in Role:
        for verb in READS:
            assert allowed(role, verb, kind)


def test_viewer_writes_nothing() -> None:
    for kind in REGISTRY.all():
        for verb in (*WRITES, Verb.UPDATE_STATUS):
            assert not allowed(Role.VIEWER, verb, kind)
    assert not allowed(Role.VIEWER, Verb.CREATE, None)


def test_operator_writes_workloads_and_devices_but_not_fleet_or_policy_kinds() -> None:
    fleet_and_policy = {"Node", "NodeGroup", "PropagationPolicy", "OverridePolicy", "Queue"}
    for kind in REGISTRY.all():
        for verb in WRITES:
            assert allowed(Role.OPERATOR, verb, kind) == (kind.kind not in fleet_and_policy)
        assert not allowed(Role.OPERATOR, Verb.UPDATE_STATUS, kind)
    assert not allowed(Role.OPERATOR, Verb.CREATE, None)


def test_admin_does_everything() -> None:
    for kind in [*REGISTRY.all(), None]:
        for verb in Verb:
            assert allowed(Role.ADMIN, verb, kind)


def test_refusals_name_the_user_role_verb_and_resource() -> None:
    with pytest.raises(Forbidden, match=r"^user 'bob' \(viewer\) may not update devices$"):
        authorize(Principal("bob", Role.VIEWER), Verb.UPDATE, DEVICE)
    with pytest.raises(Forbidden, match=r"may not update nodes/status$"):
        authorize(Principal("olga", Role.OPERATOR), Verb.UPDATE_STATUS, NODE)
    with pytest.raises(Forbidden, match=r"^user 'olga' \(operator\) may not create users$"):
        authorize(Principal("olga", Role.OPERATOR), Verb.CREATE, None, resource="users")
