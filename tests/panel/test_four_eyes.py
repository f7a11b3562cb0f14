"""Four eyes stay four eyes (issue 9): each attack of the security review, over HTTP, first
reproduced and then refused. Who may approve is part of the gate."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, select

from comms.db import Database
from comms.drafts.models import Approval
from comms.enums import Role
from tests.factories import make_user
from tests.panel.conftest import EXPLOIT_VARS, PanelClient


def draft_form(world: dict[str, Any], **overrides: str) -> list[tuple[str, str]]:
    values = {**EXPLOIT_VARS, **overrides}
    items = [("template", "active-exploit-initial")]
    items += [(f"var.{k}", v) for k, v in values.items()]
    items += [("destinations", "discord-announcements"), ("destinations", "telegram-announcements")]
    return items


async def create_draft(browser: PanelClient, world: dict[str, Any], action: str = "save") -> int:
    key = world["incident"].key
    created = await browser.post(
        f"/incidents/{key}/drafts", [*draft_form(world), ("action", action)]
    )
    assert created.status_code == 303, created.text
    return int(created.headers["location"].rsplit("/", 1)[1])


async def edit_draft(
    browser: PanelClient,
    world: dict[str, Any],
    draft_id: int,
    version: int,
    action: str,
    **vars: str,
) -> None:
    await browser.get(f"/drafts/{draft_id}/edit")
    edited = await browser.post(
        f"/drafts/{draft_id}/edit",
        [*draft_form(world, **vars), ("expected_version", str(version)), ("action", action)],
    )
    assert edited.status_code == 303, edited.text


async def approve(browser: PanelClient, draft_id: int) -> Any:
    """Post an approval of the version on screen (also when the page offers no button: an
    attacker posts the form anyway)."""
    page = await browser.get(f"/drafts/{draft_id}")
    shown = re.search(r'class="hash" title="([0-9a-f]{64})"', page.text)
    assert shown, page.text
    return await browser.post(f"/drafts/{draft_id}/approve", {"expected_hash": shown.group(1)})


async def approvals(db: Database) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(Approval)) or 0)


async def test_an_intermediate_editor_cannot_approve_their_own_words(
    world: dict[str, Any], make_client: Any, db: Database
) -> None:
    """Finding 2: rex (Communication Manager and Decision Maker) rewrites carol's draft, carol
    adds one dot and submits; rex's approval must not count, nor be recorded."""
    async with db.transaction() as session:
        await make_user(session, "rex", Role.COMMS_MANAGER, Role.DECISION_MAKER)
    carol: PanelClient = make_client()
    await carol.login("carol")
    rex: PanelClient = make_client()
    await rex.login("rex")
    draft_id = await create_draft(carol, world)
    await edit_draft(
        rex, world, draft_id, 1, "save", summary="Funds are safe; keep using the bridge"
    )
    await edit_draft(
        carol, world, draft_id, 2, "submit", summary="Funds are safe; keep using the bridge."
    )
    page = await rex.get(f"/drafts/{draft_id}")
    assert "Approve version" not in page.text and "approval.contributor" in page.text
    refused = await approve(rex, draft_id)
    assert refused.status_code == 409, refused.status_code
    assert "approval.contributor" in refused.text
    assert "version 2" in refused.text
    assert await approvals(db) == 0
    dave: PanelClient = make_client()
    await dave.login("dave")
    assert (await approve(dave, draft_id)).status_code == 303
    assert "1 of 2 approvals" in (await dave.get(f"/drafts/{draft_id}")).text


async def user_id(db: Database, username: str) -> int:
    from comms.users import service as users

    async with db.transaction() as session:
        return (await users.require_user(session, username=username)).id


async def set_active(admin: PanelClient, db: Database, username: str, active: bool) -> None:
    target = await user_id(db, username)
    await admin.get(f"/admin/users/{target}")
    done = await admin.post(f"/admin/users/{target}/active", {"active": "yes" if active else "no"})
    assert done.status_code == 303, done.text


async def test_a_restored_approver_approves_again_and_the_draft_follows_the_gate(
    world: dict[str, Any], make_client: Any, db: Database, clock: Any
) -> None:
    """Finding 5: dave approves, is disabled, erin approves, dave is enabled again. Before, the
    gate counted 2 of 2 while the draft stayed in review with nothing queued and dave could not
    approve again. Now an approval that stopped counting is void for good (the page says why)
    and its approver may approve again; the second approval queues the deliveries."""
    from comms.drafts.models import DraftStatus
    from comms.outbox.models import Delivery

    carol: PanelClient = make_client()
    await carol.login("carol")
    draft_id = await create_draft(carol, world, action="submit")
    dave: PanelClient = make_client()
    await dave.login("dave")
    assert (await approve(dave, draft_id)).status_code == 303
    admin: PanelClient = make_client()
    await admin.login("ada")
    await set_active(admin, db, "dave", False)
    erin: PanelClient = make_client()
    await erin.login("erin")
    assert (await approve(erin, draft_id)).status_code == 303
    clock.advance(seconds=5)
    await set_active(admin, db, "dave", True)
    page = await erin.get(f"/drafts/{draft_id}")
    assert "1 of 2 approvals" in page.text
    assert "void" in page.text and "disabled" in page.text
    dave = make_client()
    await dave.login("dave")
    again = await approve(dave, draft_id)
    assert again.status_code == 303, again.text
    async with db.transaction() as session:
        from comms.drafts import service as drafts

        draft = await drafts.require_draft(session, draft_id=draft_id)
        assert draft.status == DraftStatus.APPROVED.value
        queued = (
            await session.scalars(select(Delivery).where(Delivery.draft_id == draft_id))
        ).all()
        assert {d.state for d in queued} == {"pending"}


async def test_an_approved_draft_goes_back_to_review_when_an_approver_loses_the_role(
    world: dict[str, Any], make_client: Any, db: Database, panel_settings: Any
) -> None:
    """The other direction: a scheduled announcement approved by dave and erin; dave loses the
    decision_maker role before it goes out. The quorum no longer stands, so the draft is back
    in review, its deliveries cancelled (not left for the worker to refuse one by one)."""
    from comms.drafts.models import DraftStatus
    from comms.outbox.models import Delivery

    carol: PanelClient = make_client()
    await carol.login("carol")
    key = world["incident"].key
    created = await carol.post(
        f"/incidents/{key}/drafts",
        [*draft_form(world), ("options.publish_at", "2030-01-01 12:00"), ("action", "submit")],
    )
    draft_id = int(created.headers["location"].rsplit("/", 1)[1])
    for name in ("dave", "erin"):
        browser: PanelClient = make_client()
        await browser.login(name)
        assert (await approve(browser, draft_id)).status_code == 303
    admin: PanelClient = make_client()
    await admin.login("ada")
    target = await user_id(db, "dave")
    await admin.get(f"/admin/users/{target}")
    changed = await admin.post(f"/admin/users/{target}/roles", {"roles": "responder"})
    assert changed.status_code == 303, changed.text
    async with db.transaction() as session:
        from comms.drafts import service as drafts

        draft = await drafts.require_draft(session, draft_id=draft_id)
        assert draft.status == DraftStatus.IN_REVIEW.value
        states = (
            await session.scalars(select(Delivery.state).where(Delivery.draft_id == draft_id))
        ).all()
        assert set(states) == {"cancelled"}
        quorum = drafts.quorum(draft, settings=panel_settings)
        assert quorum.have == 1 and not quorum.met


async def test_one_admin_cannot_make_up_a_quorum_alone(
    world: dict[str, Any], make_client: Any, db: Database
) -> None:
    """Finding 1, the attack as the review ran it: an admin gives the decision_maker role to
    their own account, creates a second account with that role whose password they know, and
    approves a P1 draft from both. Now: nobody changes their own roles, and a new Decision Maker
    counts only once existing Decision Makers (the P1 quorum) approve the grant."""
    from comms.drafts.models import DraftStatus
    from comms.outbox.models import Delivery

    carol: PanelClient = make_client()
    await carol.login("carol")
    draft_id = await create_draft(carol, world, action="submit")
    ada: PanelClient = make_client()
    await ada.login("ada")
    own = await user_id(db, "ada")
    await ada.get(f"/admin/users/{own}")
    self_grant = await ada.post(
        f"/admin/users/{own}/roles", [("roles", "admin"), ("roles", "decision_maker")]
    )
    assert self_grant.status_code == 409 and "roles.self" in self_grant.text
    await ada.get("/admin/users")
    created = await ada.post(
        "/admin/users",
        [
            ("username", "puppet"),
            ("password", "a puppet's long password"),
            ("roles", "decision_maker"),
            ("roles", "responder"),
        ],
    )
    assert created.status_code == 303, created.text
    user_page = await ada.get(created.headers["location"])
    assert "awaiting approval" in user_page.text
    puppet: PanelClient = make_client()
    assert (await puppet.login("puppet", "a puppet's long password")).status_code == 303
    refused = await approve(puppet, draft_id)
    assert refused.status_code == 403 and "permission.draft.approve" in refused.text
    assert await approvals(db) == 0
    async with db.transaction() as session:
        from comms.drafts import service as drafts

        draft = await drafts.require_draft(session, draft_id=draft_id)
        assert draft.status == DraftStatus.IN_REVIEW.value
        sent = (await session.scalars(select(Delivery).where(Delivery.draft_id == draft_id))).all()
        assert sent == []


async def test_a_new_decision_maker_counts_once_the_decision_makers_approve(
    world: dict[str, Any], make_client: Any, db: Database
) -> None:
    """Granting decision_maker is a change the existing Decision Makers approve, like a
    multisig's owners approving a new owner: every Decision Maker is told, the grant needs the
    P1 quorum (two here), the requester and the new person cannot approve it, and only then
    does the role count."""
    from comms.outbox.models import Notification

    ada: PanelClient = make_client()
    await ada.login("ada")
    target = await user_id(db, "leo")
    await ada.get(f"/admin/users/{target}")
    asked = await ada.post(
        f"/admin/users/{target}/roles",
        [("roles", "incident_leader"), ("roles", "decision_maker")],
    )
    assert asked.status_code == 303, asked.text
    async with db.transaction() as session:
        notes = (await session.scalars(select(Notification))).all()
        assert any("Decision Maker role for leo: requested" in n.text for n in notes), notes
    leo: PanelClient = make_client()
    await leo.login("leo")
    grants = await leo.get("/role-grants")
    grant = re.search(r'action="/role-grants/(\d+)/approve"', grants.text)
    assert grants.status_code == 403 or grant is None  # not a Decision Maker (yet)
    dave: PanelClient = make_client()
    await dave.login("dave")
    listing = await dave.get("/role-grants")
    found = re.search(r'action="/role-grants/(\d+)/approve"', listing.text)
    assert found, listing.text
    grant_id = found.group(1)
    assert "leo" in listing.text and "0 of 2" in listing.text
    first = await dave.post(f"/role-grants/{grant_id}/approve", {})
    assert first.status_code == 303, first.text
    twice = await dave.post(f"/role-grants/{grant_id}/approve", {})
    assert twice.status_code == 409 and "already approved" in twice.text
    leo_page = await leo.get("/")
    assert "decision_maker" not in leo_page.text.split("roles")[1][:80]
    erin: PanelClient = make_client()
    await erin.login("erin")
    second = await erin.post(f"/role-grants/{grant_id}/approve", {})
    assert second.status_code == 303, second.text
    async with db.transaction() as session:
        from comms.enums import Role as R
        from comms.users import service as users

        leo_user = await users.require_user(session, username="leo")
        assert leo_user.has_role(R.DECISION_MAKER)
