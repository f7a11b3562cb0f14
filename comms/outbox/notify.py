"""Internal notifications, queued in the same transaction as the event they report.

Fixed templates only, private destinations only, and no ping except the responders role a
destination names. Each has a dedup key, so a retried transaction or a second worker cannot
notify twice about the same event.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from comms.destinations import service as destinations
from comms.destinations.models import Destination, InternalUse
from comms.enums import Platform
from comms.errors import CommsError
from comms.incidents.models import Incident
from comms.outbox.models import Delivery, Notification, NotificationState
from comms.rendering import RenderContext, registry_for, render, render_context, validate_values
from comms.settings import Settings
from comms.users.models import User

log = logging.getLogger("comms.notify")


class DraftFacts(Protocol):
    """What the notices say about a draft. ``comms.drafts.models.Draft`` is one; a protocol
    because the drafts service imports this module, and this module imports nothing of drafts."""

    @property
    def id(self) -> int: ...

    @property
    def template(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def content_hash(self) -> str: ...

    @property
    def publish_at(self) -> datetime | None: ...

    @property
    def author(self) -> User: ...

    @property
    def destinations(self) -> Sequence[Destination]: ...

    @property
    def incident(self) -> Incident: ...


async def _queue(
    session: AsyncSession,
    *,
    settings: Settings,
    use: InternalUse,
    kind: str,
    dedup_key: str,
    template: str,
    values: dict[str, str],
    ctx: RenderContext,
    ping: bool = True,
) -> list[Notification]:
    """``ping``: whether a responders notice pings the destination's responders role (an
    escalation does; a routine notice does not)."""
    targets = await destinations.for_internal_use(session, use=use)
    if not targets:
        log.info("no private destination receives %s notifications (%s)", use.value, dedup_key)
        return []
    spec = registry_for(settings).get(template)
    clean = validate_values(spec, {k: v for k, v in values.items() if v})
    rendered = render(spec, clean, ctx)
    queued = []
    for destination in targets:
        key = f"{dedup_key}:dest:{destination.id}"
        if await session.scalar(select(Notification.id).where(Notification.dedup_key == key)):
            continue
        texts = (
            rendered.discord
            if destination.platform == Platform.DISCORD.value
            else rendered.telegram
        )
        note = Notification(
            kind=kind,
            dedup_key=key,
            destination_id=destination.id,
            text="\n\n".join(texts),
            ping_role=destination.responders_role_id
            if use is InternalUse.RESPONDERS and ping
            else "",
        )
        session.add(note)
        queued.append(note)
    await session.flush()
    return queued


async def approval_request(session: AsyncSession, *, draft: DraftFacts, settings: Settings) -> None:
    """Tell the Decision Makers' private destination that a draft waits for them."""
    values = {
        "kind": draft.template,
        "version": str(draft.version),
        "content_hash": draft.content_hash,
        "author": draft.author.username,
        "destinations": ", ".join(d.name for d in draft.destinations),
        "scheduled_for": draft.publish_at.strftime("%Y-%m-%dT%H:%MZ") if draft.publish_at else "",
    }
    try:
        await _queue(
            session,
            settings=settings,
            use=InternalUse.APPROVERS,
            kind="approval_request",
            dedup_key=f"approval:{draft.id}:{draft.content_hash}",
            template="internal-approval-request",
            values=values,
            ctx=render_context(settings, draft.incident),
        )
    except CommsError:  # a notification must never block the announcement itself
        log.exception("could not queue the approval request for draft %s", draft.id)


async def delivery_problem(
    session: AsyncSession, *, delivery: Delivery, draft: DraftFacts, settings: Settings
) -> None:
    """Tell the Communication Manager's private destination that a delivery (of ``draft``)
    needs a person."""
    destination = await session.get(Destination, delivery.destination_id)
    if destination is None:
        return
    values = {
        "destination": destination.name,
        "state": delivery.state,
        "draft": f"#{draft.id} v{delivery.draft_version} ({draft.template})",
        "error": delivery.last_error[:600],
        "attempts": str(delivery.attempts),
    }
    try:
        await _queue(
            session,
            settings=settings,
            use=InternalUse.COMMS,
            kind="delivery_problem",
            dedup_key=f"delivery:{delivery.id}:{delivery.state}:{delivery.attempts}",
            template="internal-delivery-problem",
            values=values,
            ctx=render_context(settings, draft.incident),
        )
    except CommsError:
        log.exception("could not queue the delivery-problem notice for delivery %s", delivery.id)


async def role_grant(
    session: AsyncSession, *, settings: Settings, grant_id: int, event: str, values: dict[str, str]
) -> None:
    """Tell every Decision Maker that the list of people who may approve is changing."""
    await _gate_change(
        session,
        settings=settings,
        dedup_key=f"role_grant:{grant_id}:{event}",
        template="internal-gate-change",
        values={**values, "event": event},
    )


async def gate_settings(
    session: AsyncSession, *, settings: Settings, fingerprint: str, detail: str
) -> None:
    """Tell every Decision Maker that a process started with a weaker approval configuration."""
    await _gate_change(
        session,
        settings=settings,
        dedup_key=f"gate_settings:{fingerprint}",
        template="internal-gate-settings",
        values={"detail": detail[:600]},
    )


async def _gate_change(
    session: AsyncSession,
    *,
    settings: Settings,
    dedup_key: str,
    template: str,
    values: dict[str, str],
) -> None:
    try:
        await _queue(
            session,
            settings=settings,
            use=InternalUse.APPROVERS,
            kind="gate_change",
            dedup_key=dedup_key,
            template=template,
            values=values,
            ctx=render_context(settings),
        )
    except CommsError:
        log.exception("could not queue the gate-change notice %s", dedup_key)


async def platform_status(
    session: AsyncSession, *, settings: Settings, platform: str, event: str, reason: str, key: str
) -> None:
    """Tell the Communication Manager that a platform's deliveries are paused or resumed."""
    try:
        await _queue(
            session,
            settings=settings,
            use=InternalUse.COMMS,
            kind="platform_status",
            dedup_key=f"platform:{platform}:{event}:{key}",
            template="internal-platform-status",
            values={"platform": platform, "event": event, "reason": reason[:600]},
            ctx=render_context(settings),
        )
    except CommsError:
        log.exception("could not queue the %s notice for %s", event, platform)


async def incident_p1(
    session: AsyncSession,
    *,
    settings: Settings,
    incident: Incident,
    event: str,
    by: str,
    leader: str,
    key: str,
) -> None:
    """Tell the Decision Makers at once that an incident is P1 (opened so, or raised)."""
    try:
        await _queue(
            session,
            settings=settings,
            use=InternalUse.APPROVERS,
            kind="incident_p1",
            dedup_key=f"incident:{incident.id}:p1:{key}",
            template="internal-incident-p1",
            values={"event": event, "by": by, "leader": leader},
            ctx=render_context(settings, incident),
        )
    except CommsError:
        log.exception("could not queue the P1 notice for %s", incident.key)


async def leader_handoff(
    session: AsyncSession,
    *,
    settings: Settings,
    incident: Incident,
    event: str,
    leader: str,
    by: str,
    key: str,
    minutes: str = "",
    others: str = "",
) -> None:
    """Ask the offered Incident Leader to acknowledge (``offered``); remind them and alert the
    other Incident Leaders when they have not (``overdue``, which pings the responders role)."""
    try:
        await _queue(
            session,
            settings=settings,
            use=InternalUse.RESPONDERS,
            kind="leader_handoff",
            dedup_key=f"handoff:{key}:{event}",
            template="internal-leader-handoff",
            values={
                "event": event,
                "leader": leader,
                "by": by,
                "minutes": minutes,
                "others": others,
            },
            ctx=render_context(settings, incident),
            ping=event == "overdue",
        )
    except CommsError:
        log.exception("could not queue the hand-off notice for %s", incident.key)


async def update_due(
    session: AsyncSession,
    *,
    settings: Settings,
    incident: Incident,
    stage: str,
    due: datetime,
    promised: bool,
    cadence: str,
) -> None:
    """The public-update cadence: the Communication Manager before and when due; when overdue,
    the Decision Makers and the responders (pinged: the community is waiting)."""
    overdue = stage == "overdue"
    # One key for both uses: a destination that serves both gets one notice (the pinged one).
    uses = (InternalUse.RESPONDERS, InternalUse.APPROVERS) if overdue else (InternalUse.COMMS,)
    for use in uses:
        try:
            await _queue(
                session,
                settings=settings,
                use=use,
                kind="update_due",
                dedup_key=f"cadence:{incident.id}:{due:%Y%m%dT%H%M%S}:{stage}",
                template="internal-update-due",
                values={
                    "stage": stage,
                    "due": due.strftime("%Y-%m-%dT%H:%MZ"),
                    "basis": "promised" if promised else "cadence",
                    "cadence": cadence,
                },
                ctx=render_context(settings, incident),
                ping=overdue,
            )
        except CommsError:
            log.exception("could not queue the %s update reminder for %s", stage, incident.key)


async def monitoring_due(
    session: AsyncSession,
    *,
    settings: Settings,
    incident: Incident,
    since: datetime,
    days: int,
    added: str,
) -> None:
    """Tell the responders (the Incident Leader) that the monitoring period may end."""
    try:
        await _queue(
            session,
            settings=settings,
            use=InternalUse.RESPONDERS,
            kind="monitoring_due",
            dedup_key=f"monitoring:{incident.id}:{since:%Y%m%dT%H%M%S%f}",
            template="internal-monitoring-due",
            values={
                "since": since.strftime("%Y-%m-%dT%H:%MZ"),
                "days": str(days),
                "added": added[:1500],
            },
            ctx=render_context(settings, incident),
            ping=False,
        )
    except CommsError:
        log.exception("could not queue the monitoring notice for %s", incident.key)


EDIT_SPACING = timedelta(seconds=30)  # a kept-up-to-date alert is edited at most this often


ALERT_KINDS = ("responder_alert", "responder_alert_edit")


def alert_cluster_id(note: Notification) -> int | None:
    """The cluster a responders' alert (or its edit) is about, from its dedup key."""
    parts = note.dedup_key.split(":")
    if note.kind not in ALERT_KINDS or len(parts) < 3 or parts[0] != "cluster":
        return None
    return int(parts[1]) if parts[1].isdigit() else None


def alert_text(settings: Settings, values: dict[str, str], platform: Platform) -> str:
    """The responders' alert as one message for ``platform``."""
    spec = registry_for(settings).get("internal-responder-alert")
    rendered = render(
        spec,
        validate_values(spec, {k: v for k, v in values.items() if v}),
        render_context(settings),
    )
    return "\n\n".join(rendered.discord if platform is Platform.DISCORD else rendered.telegram)


async def responder_alert(
    session: AsyncSession,
    *,
    settings: Settings,
    cluster_id: int,
    values: dict[str, str],
    now: datetime,
) -> None:
    """Alert the responders' private destinations about a cluster of community reports
    (``values``: the template's). Once alerted, ``responder_alerts_due`` keeps that message
    up to date. What an alert or its edit says is rendered again when it is sent (the worker's
    refresher, ``comms.detections.alerts.refresher``): it shows the cluster as it is then."""
    key = f"cluster:{cluster_id}:alert"
    exists = await session.scalar(
        select(Notification.id).where(Notification.dedup_key.startswith(f"{key}:dest:")).limit(1)
    )
    if exists is None:
        await _queue(
            session,
            settings=settings,
            use=InternalUse.RESPONDERS,
            kind="responder_alert",
            dedup_key=key,
            template="internal-responder-alert",
            values=values,
            ctx=render_context(settings),
        )
    else:
        await responder_alerts_due(session, cluster_ids=[cluster_id], now=now)


async def responder_alerts_due(
    session: AsyncSession, *, cluster_ids: Sequence[int], now: datetime
) -> None:
    """New reports in alerted clusters: each alert message gets an edit, at most one per 30 s,
    never a new post. An alert not posted yet, or one with an edit already due, needs
    nothing: either goes out rendered with the cluster as it is then. A flood's every batch
    costs two queries here, whatever the number of clusters."""
    originals = list(
        (
            await session.scalars(
                select(Notification).where(
                    or_(
                        *(
                            Notification.dedup_key.startswith(f"cluster:{cid}:alert:dest:")
                            for cid in cluster_ids
                        )
                    )
                )
            )
        ).all()
    )
    posted = [o.id for o in originals if o.state is not NotificationState.PENDING]
    if not posted:
        return
    pending = set(
        (
            await session.scalars(
                select(Notification.edit_of_id).where(
                    Notification.edit_of_id.in_(posted),
                    Notification.state == NotificationState.PENDING,
                )
            )
        ).all()
    )
    for original in originals:
        if original.state is NotificationState.PENDING or original.id in pending:
            continue
        last_edit = await session.scalar(
            select(func.max(Notification.sent_at)).where(Notification.edit_of_id == original.id)
        )
        last = max(t for t in (original.sent_at, last_edit, now - EDIT_SPACING) if t is not None)
        edits = await session.scalar(
            select(func.count())
            .select_from(Notification)
            .where(Notification.edit_of_id == original.id)
        )
        key = original.dedup_key.split(":dest:")[0]
        session.add(
            Notification(
                kind="responder_alert_edit",
                dedup_key=f"{key}:edit:{original.id}:{int(edits or 0) + 1}",
                destination_id=original.destination_id,
                text=original.text,  # replaced by the cluster's state when it is sent
                ping_role=original.ping_role,
                edit_of_id=original.id,
                next_attempt_at=max(now, last + EDIT_SPACING),
            )
        )
    await session.flush()
