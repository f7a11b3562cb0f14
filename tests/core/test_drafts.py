"""Drafts and the approval gate: every rule of DESIGN.md, through the real services."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from comms.clock import FrozenClock
from comms.db import Database
from comms.destinations import service as destinations
from comms.drafts import service as drafts
from comms.drafts.models import Draft, DraftStatus
from comms.drafts.payload import DraftOptions
from comms.enums import Role, Severity
from comms.errors import Conflict, InvalidInput, NotFound, PermissionDenied, RuleViolation
from comms.flows import change_severity
from comms.incidents import service as incidents
from comms.outbox import service as outbox
from comms.outbox.models import Notification
from comms.settings import Settings
from comms.users import service as users
from tests.factories import make_destinations, make_incident, make_team

VARS = {
    "summary": "An attacker is draining the ETH bridge.",
    "affected": "Bridge contracts on mainnet",
    "funds_status": "at_risk",
    "next_update": "2026-01-01T13:00Z",
}


async def _setup(db: Database, severity: Severity = Severity.P1) -> dict:
    async with db.transaction() as session:
        team = await make_team(session)
        dests = await make_destinations(session)
        inc = await make_incident(session, team["lead"], severity)
    return {**team, **{f"dest_{k}": v for k, v in dests.items()}, "incident": inc}


async def _draft(
    db: Database, ctx: dict, settings: Settings, *, submit: bool = True, **overrides: object
) -> Draft:
    async with db.transaction() as session:
        inc = await incidents.require_incident(session, key=ctx["incident"].key)
        chosen = [
            await destinations.require_destination(session, name=n)
            for n in ("discord-announcements", "telegram-announcements")
        ]
        draft = await drafts.create(
            session,
            incident=inc,
            template="active-exploit-initial",
            variables={**VARS, **overrides},
            destinations=chosen,
            actor=ctx["cm"],
            settings=settings,
        )
        if submit:
            draft = await drafts.submit(session, draft=draft, actor=ctx["cm"], settings=settings)
    return draft


async def _approve(
    db: Database, draft: Draft, actor: object, settings: Settings, **kwargs: object
) -> Draft:
    async with db.transaction() as session:
        found = await drafts.require_draft(session, draft_id=draft.id)
        return await drafts.approve(session, draft=found, actor=actor, settings=settings, **kwargs)  # type: ignore[arg-type]


async def _edit(
    db: Database, draft: Draft, actor: object, settings: Settings, **variables: str
) -> Draft:
    async with db.transaction() as session:
        found = await drafts.require_draft(session, draft_id=draft.id)
        return await drafts.edit(
            session, draft=found, actor=actor, settings=settings, variables=variables
        )  # type: ignore[arg-type]


async def test_draft_has_versioned_hash_and_rendered_payload(
    db: Database, settings: Settings
) -> None:
    ctx = await _setup(db)
    draft = await _draft(db, ctx, settings, submit=False)
    assert draft.version == 1 and draft.status == "draft"
    assert re.fullmatch(r"[0-9a-f]{64}", draft.content_hash)
    deliveries = draft.payload["deliveries"]
    assert [d["destination"]["name"] for d in deliveries] == [
        "discord-announcements",
        "telegram-announcements",
    ]
    discord, telegram = deliveries
    # P1, the template asks for @everyone and the Discord destination allows it.
    assert discord["mentions"] == ["everyone"] and discord["messages"][0].startswith("@everyone")
    assert telegram["mentions"] == [] and "@everyone" not in telegram["messages"][0]
    assert discord["pin"] and discord["crosspost"] and discord["thread_updates"]
    assert "An attacker is draining the ETH bridge." in telegram["messages"][0]


async def test_everyone_needs_p1(db: Database, settings: Settings) -> None:
    ctx = await _setup(db, Severity.P2)
    draft = await _draft(db, ctx, settings, submit=False)
    assert all(d["mentions"] == [] for d in draft.payload["deliveries"])
    assert not any("@everyone" in m for d in draft.payload["deliveries"] for m in d["messages"])


async def test_quorum_of_one_approves_and_writes_the_outbox(
    db: Database, settings: Settings
) -> None:
    ctx = await _setup(db)
    draft = await _draft(db, ctx, settings)
    assert draft.status == "in_review"
    approved = await _approve(db, draft, ctx["dm1"], settings)
    assert approved.status == "approved"
    async with db.transaction() as session:
        rows = await outbox.for_draft(session, draft_id=draft.id)
    assert [(r.destination.name, r.state, r.content_hash == draft.content_hash) for r in rows] == [
        ("discord-announcements", "pending", True),
        ("telegram-announcements", "pending", True),
    ]
    assert len({r.idempotency_key for r in rows}) == 2
    assert all(len(r.idempotency_key) <= 22 for r in rows)


async def test_compromised_destination_is_skipped(db: Database, settings: Settings) -> None:
    ctx = await _setup(db)
    draft = await _draft(db, ctx, settings)
    async with db.transaction() as session:
        tg = await destinations.require_destination(session, name="telegram-announcements")
        await destinations.mark_compromised(
            session, destination=tg, reason="bot token leaked", actor=None
        )
    await _approve(db, draft, ctx["dm1"], settings)
    async with db.transaction() as session:
        rows = await outbox.for_draft(session, draft_id=draft.id)
    states = {r.destination.name: (r.state, r.last_error) for r in rows}
    assert states["discord-announcements"] == ("pending", "")
    assert states["telegram-announcements"][0] == "skipped"
    assert "bot token leaked" in states["telegram-announcements"][1]


async def test_quorum_of_two_needs_two_distinct_decision_makers(
    db: Database, settings: Settings
) -> None:
    two = settings.model_copy(
        update=dict(approval_quorum={**settings.approval_quorum, Severity.P1: 2})
    )
    ctx = await _setup(db)
    draft = await _draft(db, ctx, two)
    after_one = await _approve(db, draft, ctx["dm1"], two)
    assert after_one.status == "in_review"
    assert drafts.quorum(after_one, settings=two).have == 1
    with pytest.raises(RuleViolation) as caught:
        await _approve(db, draft, ctx["dm1"], two)
    assert caught.value.rule == "approval.duplicate"
    after_two = await _approve(db, draft, ctx["dm2"], two)
    assert after_two.status == "approved"
    assert drafts.quorum(after_two, settings=two).approvers == ["dave", "erin"]


async def test_author_cannot_approve_unless_allowed(db: Database, settings: Settings) -> None:
    ctx = await _setup(db)
    async with db.transaction() as session:
        cm = await users.require_user(session, username="carol")
        await users.set_roles(session, user=cm, roles=[Role.COMMS_MANAGER, Role.DECISION_MAKER])
    draft = await _draft(db, {**ctx, "cm": cm}, settings)
    with pytest.raises(RuleViolation) as caught:
        await _approve(db, draft, cm, settings)
    assert caught.value.rule == "approval.self_approval"
    solo = settings.model_copy(update=dict(allow_self_approval=True))
    assert (await _approve(db, draft, cm, solo)).status == "approved"


async def test_last_editor_cannot_approve(db: Database, settings: Settings) -> None:
    ctx = await _setup(db)
    async with db.transaction() as session:
        dm = await users.require_user(session, username="dave")
        await users.set_roles(session, user=dm, roles=[Role.DECISION_MAKER, Role.COMMS_MANAGER])
    draft = await _draft(db, ctx, settings)
    edited = await _edit(db, draft, dm, settings, affected="Bridge and router contracts")
    assert edited.last_editor_id == dm.id
    with pytest.raises(RuleViolation) as caught:
        await _approve(db, edited, dm, settings)
    assert caught.value.rule == "approval.last_editor"
    assert (await _approve(db, edited, ctx["dm2"], settings)).status == "approved"


async def test_only_decision_makers_approve(db: Database, settings: Settings) -> None:
    ctx = await _setup(db)
    draft = await _draft(db, ctx, settings)
    for who in ("lead", "admin", "scribe", "cm"):
        with pytest.raises(PermissionDenied):
            await _approve(db, draft, ctx[who], settings)


async def test_edit_voids_approvals_and_returns_to_review(db: Database, settings: Settings) -> None:
    two = settings.model_copy(
        update=dict(approval_quorum={**settings.approval_quorum, Severity.P1: 2})
    )
    ctx = await _setup(db)
    draft = await _draft(db, ctx, two)
    await _approve(db, draft, ctx["dm1"], two)
    edited = await _edit(db, draft, ctx["cm"], two, affected="Bridge contracts only")
    assert (edited.version, edited.status) == (2, "in_review")
    assert edited.content_hash != draft.content_hash
    state = drafts.quorum(edited, settings=two)
    assert state.have == 0
    assert state.standings[0].reason == "given for version 1; the content has changed since"
    await _approve(db, edited, ctx["dm2"], two)
    # dave's earlier approval was for version 1; he must approve again.
    final = await _approve(db, edited, ctx["dm1"], two)
    assert final.status == "approved"


async def test_edit_after_approval_cancels_the_queued_deliveries(
    db: Database, settings: Settings
) -> None:
    ctx = await _setup(db)
    draft = await _draft(db, ctx, settings)
    await _approve(db, draft, ctx["dm1"], settings)
    edited = await _edit(db, draft, ctx["cm"], settings, affected="Corrected scope")
    assert edited.status == "in_review"
    async with db.transaction() as session:
        rows = await outbox.for_draft(session, draft_id=draft.id)
    assert {r.state for r in rows} == {"cancelled"}


async def test_stale_hash_is_refused(db: Database, settings: Settings) -> None:
    ctx = await _setup(db)
    draft = await _draft(db, ctx, settings)
    shown_hash = draft.content_hash
    await _edit(db, draft, ctx["cm"], settings, affected="Something else")
    with pytest.raises(Conflict) as caught:
        await _approve(db, draft, ctx["dm1"], settings, expected_hash=shown_hash)
    assert caught.value.field == "content_hash"
    async with db.transaction() as session:
        again = await drafts.require_draft(session, draft_id=draft.id)
        assert again.status == "in_review" and not again.approvals


async def test_revoked_decision_maker_stops_counting(db: Database, settings: Settings) -> None:
    two = settings.model_copy(
        update=dict(approval_quorum={**settings.approval_quorum, Severity.P1: 2})
    )
    ctx = await _setup(db)
    draft = await _draft(db, ctx, two)
    await _approve(db, draft, ctx["dm1"], two)
    async with db.transaction() as session:
        dave = await users.require_user(session, username="dave")
        await users.set_roles(session, user=dave, roles=[Role.RESPONDER])
        found = await drafts.require_draft(session, draft_id=draft.id)
        state = drafts.quorum(found, settings=two)
    assert state.have == 0
    assert "no longer holds the decision_maker role" in state.standings[0].reason
    after = await _approve(db, draft, ctx["dm2"], two)
    assert after.status == "in_review"  # erin alone is 1 of 2


async def test_disabled_decision_maker_stops_counting(db: Database, settings: Settings) -> None:
    ctx = await _setup(db)
    draft = await _draft(db, ctx, settings)
    await _approve(db, draft, ctx["dm1"], settings)
    async with db.transaction() as session:
        dave = await users.require_user(session, username="dave")
        await users.set_active(session, user=dave, active=False)
        found = await drafts.require_draft(session, draft_id=draft.id)
        assert drafts.quorum(found, settings=settings).have == 0


async def test_approvals_expire(db: Database, settings: Settings, clock: FrozenClock) -> None:
    expiring = settings.model_copy(
        update=dict(
            approval_ttl_minutes=30, approval_quorum={**settings.approval_quorum, Severity.P1: 2}
        )
    )
    ctx = await _setup(db)
    draft = await _draft(db, ctx, expiring)
    await _approve(db, draft, ctx["dm1"], expiring)
    clock.advance(minutes=31)
    after = await _approve(db, draft, ctx["dm2"], expiring)
    assert after.status == "in_review"
    state = drafts.quorum(after, settings=expiring)
    assert state.have == 1 and "expired" in state.standings[0].reason


async def test_rejection_needs_a_reason_and_goes_back_to_the_author(
    db: Database, settings: Settings
) -> None:
    ctx = await _setup(db)
    draft = await _draft(db, ctx, settings)
    with pytest.raises(InvalidInput) as caught:
        async with db.transaction() as session:
            await drafts.reject(session, draft=draft, actor=ctx["dm1"], reason="   ")
    assert caught.value.field == "reason"
    async with db.transaction() as session:
        rejected = await drafts.reject(
            session, draft=draft, actor=ctx["dm1"], reason="Do not say funds are at risk yet"
        )
    assert rejected.status == "rejected"
    with pytest.raises(RuleViolation):
        async with db.transaction() as session:
            await drafts.submit(session, draft=rejected, actor=ctx["cm"], settings=settings)
    edited = await _edit(db, rejected, ctx["cm"], settings, funds_status="under_review")
    assert edited.status == "draft"
    async with db.transaction() as session:
        again = await drafts.submit(session, draft=edited, actor=ctx["cm"], settings=settings)
    assert again.status == "in_review"


async def test_severity_change_rerenders_and_voids(db: Database, settings: Settings) -> None:
    two = settings.model_copy(
        update=dict(approval_quorum={**settings.approval_quorum, Severity.P1: 2})
    )
    ctx = await _setup(db, Severity.P2)
    draft = await _draft(db, ctx, two)
    await _approve(db, draft, ctx["dm1"], two)  # P2 quorum is 1: approved
    async with db.transaction() as session:
        inc = await incidents.require_incident(session, key=ctx["incident"].key)
        touched = await change_severity(
            session,
            incident=inc,
            severity=Severity.P1,
            actor=ctx["lead"],
            rationale="funds confirmed moving",
            settings=two,
        )
    assert [d.id for d in touched] == [draft.id]
    async with db.transaction() as session:
        found = await drafts.require_draft(session, draft_id=draft.id)
        state = drafts.quorum(found, settings=two)
        rows = await outbox.for_draft(session, draft_id=draft.id)
    assert (found.version, found.status, state.have, state.needed) == (2, "in_review", 0, 2)
    assert found.payload["deliveries"][0]["messages"][0].startswith("@everyone")
    assert {r.state for r in rows} == {"cancelled"}


async def test_submit_queues_an_approval_request(db: Database, settings: Settings) -> None:
    ctx = await _setup(db)
    draft = await _draft(db, ctx, settings)
    async with db.transaction() as session:
        notes = list((await session.scalars(select(Notification))).all())
    assert [(n.kind, n.destination.name) for n in notes] == [
        ("approval_request", "discord-responders")
    ]
    assert draft.content_hash[:12] in notes[0].text
    assert "@everyone" not in notes[0].text


@pytest.mark.parametrize(
    ("template", "variables", "field"),
    [
        ("no-such-template", VARS, "template"),
        ("active-exploit-initial", {**VARS, "colour": "red"}, "variables.colour"),
        (
            "active-exploit-initial",
            {k: v for k, v in VARS.items() if k != "summary"},
            "variables.summary",
        ),
        (
            "active-exploit-initial",
            {**VARS, "status_url": "http://example.org"},
            "variables.status_url",
        ),
        ("active-exploit-initial", {**VARS, "contract": "0x1234"}, "variables.contract"),
        ("active-exploit-initial", {**VARS, "next_update": "tomorrow"}, "variables.next_update"),
        ("internal-report-ack", {"reference": "R-1"}, "template"),
    ],
)
async def test_bad_draft_input_names_the_field_and_writes_nothing(
    db: Database, settings: Settings, template: str, variables: dict[str, str], field: str
) -> None:
    ctx = await _setup(db)
    with pytest.raises((InvalidInput, NotFound)) as caught:
        async with db.transaction() as session:
            inc = await incidents.require_incident(session, key=ctx["incident"].key)
            dest = await destinations.require_destination(session, name="discord-announcements")
            await drafts.create(
                session,
                incident=inc,
                template=template,
                variables=variables,
                destinations=[dest],
                actor=ctx["cm"],
                settings=settings,
            )
    error = caught.value
    fields = {p.field for p in error.problems} if isinstance(error, InvalidInput) else {error.field}
    assert field in fields
    async with db.transaction() as session:
        assert list((await session.scalars(select(Draft))).all()) == []


async def test_every_option_changes_the_hash(db: Database, settings: Settings) -> None:
    ctx = await _setup(db)
    draft = await _draft(db, ctx, settings, submit=False)
    hashes = {draft.content_hash}
    async with db.transaction() as session:
        found = await drafts.require_draft(session, draft_id=draft.id)
        for options in (
            DraftOptions(pin=False),
            DraftOptions(silent=True),
            DraftOptions(link_previews=True),
        ):
            found = await drafts.edit(
                session, draft=found, actor=ctx["cm"], settings=settings, options=options
            )
            hashes.add(found.content_hash)
        tg = await destinations.require_destination(session, name="telegram-announcements")
        found = await drafts.edit(
            session, draft=found, actor=ctx["cm"], settings=settings, destinations=[tg]
        )
        hashes.add(found.content_hash)
    assert len(hashes) == 5
    assert found.status == DraftStatus.DRAFT.value
