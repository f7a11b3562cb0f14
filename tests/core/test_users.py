"""Users, roles, passwords and the permission table."""

from __future__ import annotations

import re

import pytest

from comms.db import Database
from comms.enums import Role
from comms.errors import Conflict, InvalidInput, PermissionDenied
from comms.permissions import Action, require
from comms.users import service as users
from tests.factories import PASSWORD, make_user


async def test_password_is_argon2id_with_owasp_parameters(db: Database) -> None:
    async with db.transaction() as session:
        user = await make_user(session, "alice", Role.COMMS_MANAGER)
    match = re.match(r"^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$", user.password_hash)
    assert match, user.password_hash
    memory, time_cost = int(match[1]), int(match[2])
    assert memory >= 19456 and time_cost >= 2
    assert PASSWORD not in user.password_hash


async def test_verify_password(db: Database) -> None:
    async with db.transaction() as session:
        user = await make_user(session, "alice")
    assert users.verify_password(user, PASSWORD)
    assert not users.verify_password(user, PASSWORD + "x")
    assert not users.verify_password(None, PASSWORD)


async def test_several_roles(db: Database) -> None:
    async with db.transaction() as session:
        user = await make_user(session, "alice", Role.COMMS_MANAGER, Role.SCRIBE)
    async with db.transaction() as session:
        again = await users.require_user(session, username="ALICE")
        assert again.role_set == {Role.COMMS_MANAGER, Role.SCRIBE}
    assert user.has_role(Role.SCRIBE)


async def test_duplicate_username_refused(db: Database) -> None:
    async with db.transaction() as session:
        await make_user(session, "alice")
    with pytest.raises(Conflict) as caught:
        async with db.transaction() as session:
            await make_user(session, "alice")
    assert caught.value.field == "username"


@pytest.mark.parametrize(
    ("username", "password", "roles", "field"),
    [
        ("a", PASSWORD, [Role.SCRIBE], "username"),
        ("Bad Name!", PASSWORD, [Role.SCRIBE], "username"),
        ("alice", "short", [Role.SCRIBE], "password"),
        ("alice", PASSWORD, [], "roles"),
    ],
)
async def test_bad_input_names_the_field(
    db: Database, username: str, password: str, roles: list[Role], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        async with db.transaction() as session:
            await users.create(session, username=username, password=password, roles=roles)
    assert field in {p.field for p in caught.value.problems}
    async with db.transaction() as session:
        assert await users.list_users(session) == []


async def test_unknown_role_is_named() -> None:
    with pytest.raises(InvalidInput, match="unknown role 'wizard'"):
        users.parse_roles(["wizard"])


async def test_disabled_user_loses_every_permission(db: Database) -> None:
    async with db.transaction() as session:
        admin = await make_user(session, "ada", Role.ADMIN)
        dm = await make_user(session, "dave", Role.DECISION_MAKER)
        require(dm, Action.DRAFT_APPROVE)
        await users.set_active(session, user=dm, active=False, actor=admin)
        with pytest.raises(PermissionDenied):
            require(dm, Action.DRAFT_APPROVE)
        with pytest.raises(PermissionDenied):
            require(dm, Action.READ)


async def test_admin_is_not_an_approver(db: Database) -> None:
    async with db.transaction() as session:
        admin = await make_user(session, "ada", Role.ADMIN)
    with pytest.raises(PermissionDenied, match=r"draft\.approve"):
        require(admin, Action.DRAFT_APPROVE)


async def test_only_admins_manage_users(db: Database) -> None:
    async with db.transaction() as session:
        cm = await make_user(session, "carol", Role.COMMS_MANAGER)
        with pytest.raises(PermissionDenied):
            await users.create(
                session, username="eve", password=PASSWORD, roles=[Role.ADMIN], actor=cm
            )
