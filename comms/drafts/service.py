"""Drafts through their life: write, edit, submit, approve or reject, withdraw.

Every mutation locks the draft row first, so two Decision Makers approving at the same moment
both see each other's approval, and an edit racing an approval cannot slip between the count
and the status change.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer, raiseload, selectinload

from comms.audit import service as audit
from comms.clock import utcnow
from comms.destinations.models import Destination
from comms.drafts import gate
from comms.drafts.gate import Quorum, evaluate
from comms.drafts.models import (
    EDITABLE,
    Approval,
    ApprovalVoid,
    Decision,
    Draft,
    DraftStatus,
    DraftVersion,
)
from comms.drafts.payload import DraftOptions, build_plan
from comms.drafts.plan import AnnouncementPlan
from comms.enums import Severity
from comms.errors import Conflict, FieldProblem, InvalidInput, NotFound, RuleViolation
from comms.incidents import service as incidents
from comms.incidents.models import Incident, LogKind
from comms.outbox import notify
from comms.outbox import service as outbox
from comms.outbox.models import Delivery, DeliveryState
from comms.permissions import Action, require
from comms.rendering import (
    TemplateSpec,
    check_values,
    registry_for,
    render_context,
    validate_values,
)
from comms.settings import Settings
from comms.text import clean_text
from comms.users.models import User

REASON_MAX = 2000


async def require_draft(session: AsyncSession, *, draft_id: int, field: str = "draft") -> Draft:
    draft = await session.get(Draft, draft_id)
    if draft is None:
        raise NotFound(f"no draft #{draft_id}", field=field)
    return draft


async def _lock(session: AsyncSession, draft_id: int) -> Draft:
    """Re-read the draft under a row lock (PostgreSQL) with fresh approvals."""
    draft = await session.get(
        Draft, draft_id, with_for_update={"of": Draft}, populate_existing=True
    )
    if draft is None:
        raise NotFound(f"no draft #{draft_id}", field="draft")
    await session.refresh(draft, ["approvals", "destinations", "incident"])
    return draft


_LIST_DEFERRED = (Draft.payload, Draft.variables, Draft.warnings)


async def list_drafts(
    session: AsyncSession,
    *,
    incident: Incident | None = None,
    statuses: set[DraftStatus] | None = None,
    author: User | None = None,
    with_quorum: bool = False,
) -> list[Draft]:
    """Drafts, most recently changed first. Lists show a draft's state, not its words: the
    rendered texts (every destination's, tens of kB) and the variables stay in the database.
    ``with_quorum`` also loads what ``quorum`` reads (approvals, destinations); without it,
    those and the incident's people are not loaded either. Whatever is left out fails loudly
    if read."""
    options: list[Any] = [defer(column, raiseload=True) for column in _LIST_DEFERRED]
    if not with_quorum:
        options += [
            raiseload(Draft.approvals),
            raiseload(Draft.destinations),
            selectinload(Draft.incident).raiseload(Incident.assignments),
        ]
    query = select(Draft).options(*options).order_by(Draft.updated_at.desc(), Draft.id.desc())
    if incident is not None:
        query = query.where(Draft.incident_id == incident.id)
    if statuses:
        query = query.where(Draft.status.in_([s.value for s in statuses]))
    if author is not None:
        query = query.where(Draft.author_id == author.id)
    return list((await session.scalars(query)).all())


async def versions(session: AsyncSession, *, draft: Draft) -> list[DraftVersion]:
    query = (
        select(DraftVersion).where(DraftVersion.draft_id == draft.id).order_by(DraftVersion.version)
    )
    return list((await session.scalars(query)).all())


async def get_version(session: AsyncSession, *, draft_id: int, version: int) -> DraftVersion | None:
    return await session.scalar(
        select(DraftVersion).where(
            DraftVersion.draft_id == draft_id, DraftVersion.version == version
        )
    )


def quorum(
    draft: Draft,
    *,
    settings: Settings,
    now: datetime | None = None,
    plan: AnnouncementPlan | None = None,
) -> Quorum:
    """``plan`` is the draft's current plan when the caller has it (``plans_of``); else it is
    parsed from the draft's payload, which must then be loaded."""
    return evaluate(
        draft,
        severity=Severity(draft.incident.severity),
        settings=settings,
        now=now or utcnow(),
        destinations=draft.destinations,
        plan=plan,
    )


_PLANS: OrderedDict[tuple[int, int, str], AnnouncementPlan] = OrderedDict()
_PLANS_KEPT = 512


async def plans_of(session: AsyncSession, rows: Sequence[Draft]) -> dict[int, AnnouncementPlan]:
    """The current plan of each listed draft (``list_drafts`` leaves payloads unread).

    A list page evaluates every draft's quorum, which needs its plan; reading and parsing every
    draft's renderings on every page view cost more than the rest of the dashboard. A plan is
    kept per (draft, version, content hash): a version's payload never changes, and a draft
    whose row moved on since the list was read gets the plan its row now holds.
    """
    found: dict[int, AnnouncementPlan] = {}
    missing = []
    for draft in rows:
        key = (draft.id, draft.version, draft.content_hash)
        if key in _PLANS:
            _PLANS.move_to_end(key)
            found[draft.id] = _PLANS[key]
        else:
            missing.append(draft.id)
    if missing:
        fetched = await session.execute(
            select(Draft.id, Draft.version, Draft.content_hash, Draft.payload).where(
                Draft.id.in_(missing)
            )
        )
        for draft_id, version, content_hash, payload in fetched:
            plan = AnnouncementPlan.from_json(payload)
            found[draft_id] = plan
            _PLANS[(draft_id, version, content_hash)] = plan
        while len(_PLANS) > _PLANS_KEPT:
            _PLANS.popitem(last=False)
    return found


def _check_destinations(destinations: list[Destination]) -> None:
    if not destinations:
        raise InvalidInput(FieldProblem("destinations", "choose at least one destination"))
    names = [d.name for d in destinations]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidInput(FieldProblem("destinations", f"listed twice: {', '.join(duplicates)}"))


async def _freeze(
    session: AsyncSession,
    *,
    draft: Draft,
    spec: TemplateSpec,
    values: dict[str, str],
    destinations: list[Destination],
    options: DraftOptions,
    settings: Settings,
    editor: User,
    reason: str,
) -> None:
    """Render, hash and store version ``draft.version`` as a frozen snapshot."""
    plan = build_plan(
        draft_id=draft.id,
        version=draft.version,
        spec=spec,
        values=values,
        ctx=render_context(settings, draft.incident),
        destinations=destinations,
        options=options,
        correction_of=draft.correction_of_id,
    )
    payload = plan.to_json()
    digest = plan.content_hash
    warnings = check_values(
        spec,
        values,
        official_domains=settings.official_domains,
        known_contracts=settings.known_contracts,
    )
    draft.variables = values
    draft.options = options.to_json()
    draft.publish_at = options.publish_at
    draft.payload = payload
    draft.content_hash = digest
    draft.warnings = [{"code": w.code, "message": w.message, "field": w.field} for w in warnings]
    draft.destinations = list(destinations)
    draft.last_editor_id = editor.id
    if editor.id not in draft.contributor_ids:
        draft.contributor_ids = [*draft.contributor_ids, editor.id]
    draft.updated_at = utcnow()
    session.add(
        DraftVersion(
            draft_id=draft.id,
            version=draft.version,
            content_hash=digest,
            payload=payload,
            variables=values,
            editor_id=editor.id,
            reason=reason,
            created_at=draft.updated_at,
        )
    )
    await session.flush()


async def create(
    session: AsyncSession,
    *,
    incident: Incident,
    template: str,
    variables: Mapping[str, str],
    destinations: list[Destination],
    actor: User,
    settings: Settings,
    options: DraftOptions | None = None,
    correction_of: Draft | None = None,
) -> Draft:
    require(actor, Action.DRAFT_WRITE)
    spec = registry_for(settings).get(template)
    if spec.audience != "public":
        raise InvalidInput(FieldProblem("template", f"{template} is an internal template"))
    if not incident.is_open:
        raise RuleViolation("incident.closed", f"{incident.key} is closed", field="incident")
    values = validate_values(spec, variables)
    _check_destinations(destinations)
    if correction_of is not None:
        if correction_of.incident_id != incident.id:
            raise InvalidInput(FieldProblem("correction_of", "must belong to the same incident"))
        if correction_of.status not in (
            DraftStatus.PUBLISHED,
            DraftStatus.PARTIALLY_FAILED,
        ):
            raise InvalidInput(
                FieldProblem("correction_of", f"draft #{correction_of.id} has not been published")
            )
    if getattr(spec, "is_correction", False) and correction_of is None:
        raise InvalidInput(
            FieldProblem(
                "correction_of", "a correction names the published announcement it corrects"
            )
        )
    now = utcnow()
    draft = Draft(
        incident_id=incident.id,
        template=spec.name,
        version=1,
        status=DraftStatus.DRAFT,
        author_id=actor.id,
        last_editor_id=actor.id,
        contributor_ids=[],
        content_hash="",
        created_at=now,
        updated_at=now,
        correction_of_id=correction_of.id if correction_of else None,
    )
    session.add(draft)
    await session.flush()
    await session.refresh(draft, ["incident", "approvals", "destinations"])
    await _freeze(
        session,
        draft=draft,
        spec=spec,
        values=values,
        destinations=destinations,
        options=options or DraftOptions(),
        settings=settings,
        editor=actor,
        reason="created",
    )
    await incidents.log(
        session,
        incident=incident,
        kind=LogKind.COMMS,
        actor=actor,
        text=f"Draft #{draft.id} ({spec.name}) started",
    )
    await audit.record(
        session,
        actor=actor.username,
        action="draft.create",
        target=f"draft:{draft.id}",
        details={
            "incident": incident.key,
            "template": spec.name,
            "version": 1,
            "content_hash": draft.content_hash,
        },
    )
    return draft


async def edit(
    session: AsyncSession,
    *,
    draft: Draft,
    actor: User,
    settings: Settings,
    variables: Mapping[str, str] | None = None,
    replace_variables: bool = False,
    destinations: list[Destination] | None = None,
    options: DraftOptions | None = None,
    expected_version: int | None = None,
) -> Draft:
    """Make a new version: earlier approvals stop counting, an approved draft is reviewed again."""
    require(actor, Action.DRAFT_WRITE)
    return await _revise(
        session,
        draft_id=draft.id,
        editor=actor,
        actor=actor,
        settings=settings,
        variables=variables,
        replace_variables=replace_variables,
        destinations=destinations,
        options=options,
        expected_version=expected_version,
        reason="edited",
    )


async def _revise(
    session: AsyncSession,
    *,
    draft_id: int,
    editor: User,
    actor: User | None,
    settings: Settings,
    reason: str,
    variables: Mapping[str, str] | None = None,
    replace_variables: bool = False,
    destinations: list[Destination] | None = None,
    options: DraftOptions | None = None,
    expected_version: int | None = None,
) -> Draft:
    draft = await _lock(session, draft_id)
    status = draft.status
    if expected_version is not None and expected_version != draft.version:
        raise Conflict(
            f"draft #{draft.id} is at version {draft.version}, not {expected_version}; "
            "reload and apply your change again",
            field="version",
        )
    if status not in EDITABLE:
        raise RuleViolation("draft.not_editable", f"draft #{draft.id} is {status.value}")
    if status is DraftStatus.APPROVED and not await outbox.all_unsent(session, draft=draft):
        raise RuleViolation(
            "draft.not_editable",
            f"draft #{draft.id} is already being published; write a correction instead",
        )
    spec = registry_for(settings).get(draft.template)
    merged = (
        dict(variables or {}) if replace_variables else {**draft.variables, **(variables or {})}
    )
    values = validate_values(spec, merged)
    new_destinations = list(draft.destinations) if destinations is None else destinations
    _check_destinations(new_destinations)
    new_options = options or DraftOptions.from_json(draft.options)
    if status is DraftStatus.APPROVED:
        await outbox.cancel_unsent(session, draft=draft, reason=f"draft {reason} after approval")
    old_hash, old_version = draft.content_hash, draft.version
    draft.version += 1
    await _freeze(
        session,
        draft=draft,
        spec=spec,
        values=values,
        destinations=new_destinations,
        options=new_options,
        settings=settings,
        editor=editor,
        reason=reason,
    )
    if status is DraftStatus.REJECTED:
        draft.status = DraftStatus.DRAFT
    elif status is DraftStatus.APPROVED:
        draft.status = DraftStatus.IN_REVIEW
        draft.approved_at = None
    voided = [
        a for a in draft.approvals if a.content_hash == old_hash and a.decision == Decision.APPROVE
    ]
    await incidents.log(
        session,
        incident=draft.incident,
        kind=LogKind.COMMS,
        actor=actor,
        text=(
            f"Draft #{draft.id} {reason}: v{old_version} → v{draft.version}"
            + (f"; {len(voided)} approval(s) of v{old_version} no longer count" if voided else "")
        ),
    )
    await audit.record(
        session,
        actor=actor.username if actor else audit.SYSTEM_ACTOR,
        action="draft.edit",
        target=f"draft:{draft.id}",
        details={
            "from_version": old_version,
            "version": draft.version,
            "from_hash": old_hash,
            "content_hash": draft.content_hash,
            "voided_approvals": len(voided),
            "reason": reason,
        },
    )
    return draft


async def submit(session: AsyncSession, *, draft: Draft, actor: User, settings: Settings) -> Draft:
    """Put the draft in review and queue the approval request to the Decision Makers."""
    require(actor, Action.DRAFT_WRITE)
    draft = await _lock(session, draft.id)
    status = draft.status
    if status is DraftStatus.REJECTED:
        raise RuleViolation(
            "draft.resubmit_unchanged",
            f"draft #{draft.id} was rejected; edit it before submitting again",
        )
    if status is not DraftStatus.DRAFT:
        raise RuleViolation("draft.not_submittable", f"draft #{draft.id} is {status.value}")
    if not draft.incident.is_open:
        raise RuleViolation("incident.closed", f"{draft.incident.key} is closed")
    draft.status = DraftStatus.IN_REVIEW
    draft.submitted_at = utcnow()
    await incidents.log(
        session,
        incident=draft.incident,
        kind=LogKind.COMMS,
        actor=actor,
        text=f"Draft #{draft.id} v{draft.version} ({draft.template}) submitted for approval",
    )
    await audit.record(
        session,
        actor=actor.username,
        action="draft.submit",
        target=f"draft:{draft.id}",
        details={"version": draft.version, "content_hash": draft.content_hash},
    )
    await notify.approval_request(session, draft=draft, settings=settings)
    return draft


def _check_expected(draft: Draft, expected_hash: str | None) -> None:
    if expected_hash is not None and expected_hash != draft.content_hash:
        raise Conflict(
            f"draft #{draft.id} changed since you loaded it (now version {draft.version}, "
            f"hash {draft.content_hash[:12]}); review the new version",
            field="content_hash",
        )


async def approve(
    session: AsyncSession,
    *,
    draft: Draft,
    actor: User,
    settings: Settings,
    expected_hash: str | None = None,
) -> Draft:
    """Record an approval of the current version; on reaching quorum, write the outbox."""
    require(actor, Action.DRAFT_APPROVE)
    draft = await _lock(session, draft.id)
    _check_expected(draft, expected_hash)
    refusal = gate.may_approve(
        draft, actor, settings=settings, versions=await versions(session, draft=draft)
    )
    if refusal is not None:
        raise RuleViolation(refusal.rule, refusal.message)
    now = utcnow()
    blocked = quorum(draft, settings=settings, now=now).blocked
    if blocked:  # nothing can count (severity or a destination changed): render it again first
        raise RuleViolation("approval.stale_render", blocked)
    approval = Approval(
        draft_id=draft.id,
        version=draft.version,
        content_hash=draft.content_hash,
        approver_id=actor.id,
        decision=Decision.APPROVE,
        at=now,
    )
    session.add(approval)
    await session.flush()
    await session.refresh(approval, ["approver", "void"])
    await session.refresh(draft, ["approvals"])
    await audit.record(
        session,
        actor=actor.username,
        action="draft.approve",
        target=f"draft:{draft.id}",
        details={"version": draft.version, "content_hash": draft.content_hash},
    )
    state = quorum(draft, settings=settings, now=now)
    await incidents.log(
        session,
        incident=draft.incident,
        kind=LogKind.COMMS,
        actor=actor,
        text=f"Draft #{draft.id} v{draft.version} approved by {actor.username} "
        f"({state.have} of {state.needed})",
    )
    if state.met:
        await _mark_approved(session, draft=draft, state=state, now=now)
    return draft


async def _mark_approved(
    session: AsyncSession, *, draft: Draft, state: Quorum, now: datetime
) -> None:
    draft.status = DraftStatus.APPROVED
    draft.approved_at = now
    created = await outbox.enqueue(session, draft=draft, now=now)
    await incidents.log(
        session,
        incident=draft.incident,
        kind=LogKind.COMMS,
        actor=None,
        text=(
            f"Draft #{draft.id} v{draft.version} reached quorum ({state.have} of "
            f"{state.needed}: {', '.join(state.approvers)}); "
            f"{sum(1 for d in created if d.state == 'pending')} deliveries queued"
            + (f" for {draft.publish_at:%Y-%m-%d %H:%M} UTC" if draft.publish_at else "")
        ),
    )
    await audit.record(
        session,
        actor=audit.SYSTEM_ACTOR,
        action="draft.approved",
        target=f"draft:{draft.id}",
        details={
            "version": draft.version,
            "content_hash": draft.content_hash,
            "approvers": state.approvers,
            "needed": state.needed,
            "deliveries": [d.id for d in created],
        },
    )


async def reject(
    session: AsyncSession,
    *,
    draft: Draft,
    actor: User,
    reason: str,
    expected_hash: str | None = None,
) -> Draft:
    """Send the draft back to its author with a reason."""
    require(actor, Action.DRAFT_APPROVE)
    why = clean_text("reason", reason, limit=REASON_MAX)
    if not why:
        raise InvalidInput(FieldProblem("reason", "a rejection needs a reason"))
    draft = await _lock(session, draft.id)
    _check_expected(draft, expected_hash)
    if draft.status != DraftStatus.IN_REVIEW:
        raise RuleViolation(
            "approval.not_in_review", f"draft #{draft.id} is {draft.status}, not in review"
        )
    rejection = Approval(
        draft_id=draft.id,
        version=draft.version,
        content_hash=draft.content_hash,
        approver_id=actor.id,
        decision=Decision.REJECT,
        reason=why,
        at=utcnow(),
    )
    session.add(rejection)
    draft.status = DraftStatus.REJECTED
    draft.rejection_reason = why
    await session.flush()
    await session.refresh(rejection, ["approver", "void"])
    await session.refresh(draft, ["approvals"])
    await incidents.log(
        session,
        incident=draft.incident,
        kind=LogKind.COMMS,
        actor=actor,
        text=f"Draft #{draft.id} v{draft.version} rejected by {actor.username}",
        rationale=why,
    )
    await audit.record(
        session,
        actor=actor.username,
        action="draft.reject",
        target=f"draft:{draft.id}",
        details={"version": draft.version, "content_hash": draft.content_hash, "reason": why},
    )
    return draft


async def withdraw(session: AsyncSession, *, draft: Draft, actor: User, reason: str) -> Draft:
    require(actor, Action.DRAFT_WRITE)
    why = clean_text("reason", reason, limit=REASON_MAX)
    if not why:
        raise InvalidInput(FieldProblem("reason", "say why the draft is withdrawn"))
    draft = await _lock(session, draft.id)
    if draft.status not in EDITABLE:
        raise RuleViolation("draft.not_withdrawable", f"draft #{draft.id} is {draft.status}")
    if draft.status == DraftStatus.APPROVED:
        await outbox.cancel_unsent(session, draft=draft, reason="draft withdrawn")
    draft.status = DraftStatus.WITHDRAWN
    await incidents.log(
        session,
        incident=draft.incident,
        kind=LogKind.COMMS,
        actor=actor,
        text=f"Draft #{draft.id} withdrawn",
        rationale=why,
    )
    await audit.record(
        session,
        actor=actor.username,
        action="draft.withdraw",
        target=f"draft:{draft.id}",
        details={"version": draft.version, "reason": why},
    )
    return draft


async def rerender_open_drafts(
    session: AsyncSession, *, incident: Incident, actor: User, settings: Settings
) -> list[Draft]:
    """After a severity change: re-render every unsent draft, voiding its approvals.

    The quorum and the @everyone rule depend on severity, so what was approved under the old
    severity is not what would be approved now.
    """
    touched = []
    for draft in await list_drafts(session, incident=incident, statuses=set(EDITABLE)):
        if draft.status == DraftStatus.APPROVED and not await outbox.all_unsent(
            session, draft=draft
        ):
            continue  # already going out; the change applies to the next announcement
        touched.append(
            await _revise(
                session,
                draft_id=draft.id,
                editor=draft.last_editor,
                actor=actor,
                settings=settings,
                reason=f"re-rendered for severity {incident.severity}",
            )
        )
    return touched


async def void_approvals_of(
    session: AsyncSession, *, user: User, reason: str, actor: User | None, settings: Settings
) -> list[Draft]:
    """Void ``user``'s approvals of every draft not yet published, for good.

    Called when a Decision Maker is disabled or loses the role. Their approvals already stopped
    counting (the gate checks approvers' standing at every count); voiding them means restoring
    the person later does not bring them back: they approve again, seeing the version as it is
    then. A draft that was approved with such an approval and has not started going out goes
    back to review, its deliveries cancelled, so its state always follows the gate. Returns the
    drafts sent back to review.
    """
    now = utcnow()
    open_statuses = [
        DraftStatus.IN_REVIEW,
        DraftStatus.APPROVED,
        DraftStatus.PUBLISHING,
    ]
    approvals = (
        await session.scalars(
            select(Approval)
            .join(Draft, Draft.id == Approval.draft_id)
            .where(
                Approval.approver_id == user.id,
                Approval.decision == Decision.APPROVE,
                ~Approval.void.has(),
                Draft.status.in_(open_statuses),
            )
        )
    ).all()
    for approval in approvals:
        session.add(
            ApprovalVoid(
                approval_id=approval.id,
                at=now,
                reason=f"{user.username} {reason} after approving ({now:%Y-%m-%d %H:%M} UTC)",
            )
        )
    await session.flush()
    rewound: list[Draft] = []
    for draft_id in sorted({a.draft_id for a in approvals}):
        draft = await _lock(session, draft_id)
        await audit.record(
            session,
            actor=actor.username if actor else audit.SYSTEM_ACTOR,
            action="approval.voided",
            target=f"draft:{draft.id}",
            details={"approver": user.username, "reason": reason, "version": draft.version},
        )
        if draft.status != DraftStatus.APPROVED or quorum(draft, settings=settings, now=now).met:
            continue
        if not await outbox.all_unsent(session, draft=draft):
            continue  # already going out: the worker refuses what is left, delivery by delivery
        cancelled = await outbox.cancel_unsent(
            session, draft=draft, reason=f"quorum no longer met: {user.username} {reason}"
        )
        draft.status = DraftStatus.IN_REVIEW
        draft.approved_at = None
        await incidents.log(
            session,
            incident=draft.incident,
            kind=LogKind.COMMS,
            actor=actor,
            text=(
                f"Draft #{draft.id} v{draft.version} is back in review: {user.username} {reason}, "
                f"so the quorum no longer stands; {cancelled} queued deliveries cancelled"
            ),
        )
        rewound.append(draft)
    return rewound


async def hold_for_new_approval(
    session: AsyncSession, *, draft_id: int, reason: str, settings: Settings
) -> Draft | None:
    """An approved version can no longer go out as approved (a destination became stricter
    than its rendering). If nothing of it has gone out yet, render the draft again for its
    destinations as they are now: a new version, its approvals void, back in review, and the
    Decision Makers asked again. Returns the draft when it did; None when part of the version
    is already out (the held delivery then waits for a person).
    """
    draft = await _lock(session, draft_id)
    if draft.status not in (DraftStatus.APPROVED, DraftStatus.PUBLISHING):
        return None
    current = [
        d
        for d in await outbox.for_draft(session, draft_id=draft.id)
        if d.draft_version == draft.version
    ]
    gone = (DeliveryState.SENT, DeliveryState.SENDING, DeliveryState.UNCERTAIN)
    if any(d.state in gone or d.platform_message_ids for d in current):
        return None
    await outbox.cancel_unsent(session, draft=draft, reason=f"held: {reason}")
    for delivery in current:
        if delivery.state == DeliveryState.HELD:  # settled by the new version
            delivery.state = DeliveryState.CANCELLED
            delivery.last_error += f"; the draft went back to review as version {draft.version + 1}"
    draft.status = DraftStatus.IN_REVIEW
    draft.approved_at = None
    await session.flush()
    revised = await _revise(
        session,
        draft_id=draft.id,
        editor=draft.last_editor,
        actor=None,
        settings=settings,
        reason=f"re-rendered for new approval ({reason})"[:200],
    )
    await notify.approval_request(session, draft=revised, settings=settings)
    return revised


async def hold_delivery(
    session: AsyncSession,
    *,
    delivery: Delivery,
    name: str,
    conflicts: list[str],
    settings: Settings,
) -> Draft | None:
    """A destination became stricter than what was approved for it: send nothing there, say
    why, and send the draft back to review when nothing of it has gone out yet (returned)."""
    reason = f"{name}: {'; '.join(conflicts)} since approval"
    delivery.state = DeliveryState.HELD
    delivery.last_error = f"held: {reason}; the announcement needs a new approval"
    delivery.updated_at = utcnow()
    await audit.record(
        session,
        actor=audit.SYSTEM_ACTOR,
        action="delivery.held",
        target=f"delivery:{delivery.id}",
        details={"draft": delivery.draft_id, "version": delivery.draft_version, "reason": reason},
    )
    draft = await session.get(Draft, delivery.draft_id)
    if draft is not None:
        await notify.delivery_problem(session, delivery=delivery, draft=draft, settings=settings)
    await session.flush()
    return await hold_for_new_approval(
        session, draft_id=delivery.draft_id, reason=reason, settings=settings
    )


async def recheck_destination(
    session: AsyncSession, *, destination: Destination, settings: Settings
) -> list[Draft]:
    """After a destination's settings changed: hold, now rather than at their time, the approved
    deliveries to it that have not gone out and that it no longer allows as approved."""
    waiting = (
        await session.scalars(
            select(Delivery).where(
                Delivery.destination_id == destination.id,
                Delivery.state.in_(outbox.UNSENT),
                Delivery.attempts == 0,
            )
        )
    ).all()
    rewound = []
    for delivery in waiting:
        version = await get_version(
            session, draft_id=delivery.draft_id, version=delivery.draft_version
        )
        draft = await session.get(Draft, delivery.draft_id)
        item = version.plan.delivery_to(destination.id) if version else None
        if item is None or draft is None:
            continue
        conflicts = gate.destination_conflicts(
            item, destination, draft.options, after_approval=True
        )
        if conflicts:
            held = await hold_delivery(
                session,
                delivery=delivery,
                name=destination.name,
                conflicts=conflicts,
                settings=settings,
            )
            if held is not None:
                rewound.append(held)
    return rewound
