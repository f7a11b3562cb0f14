"""One JSON-ready description of a draft, shared by the CLI, the panel and the API."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from comms.clock import utcnow
from comms.drafts import service as drafts
from comms.drafts.models import Draft
from comms.outbox import service as outbox
from comms.settings import Settings


async def draft_document(
    session: AsyncSession, *, draft: Draft, settings: Settings
) -> dict[str, Any]:
    state = drafts.quorum(draft, settings=settings, now=utcnow())
    standing = {s.approval.id: s for s in state.standings}
    deliveries = await outbox.for_draft(session, draft_id=draft.id)
    plan = draft.plan
    # A scheduled draft whose time has come but which is not approved yet waits, flagged.
    overdue = (
        draft.publish_at is not None
        and draft.status in ("draft", "in_review", "rejected")
        and utcnow() >= draft.publish_at
    )
    return {
        "id": draft.id,
        "incident": draft.incident.key,
        "severity": draft.incident.severity,
        "template": draft.template,
        "version": draft.version,
        "status": draft.status,
        "content_hash": draft.content_hash,
        "author": draft.author.username,
        "last_editor": draft.last_editor.username,
        "destinations": [d.name for d in draft.destinations],
        "variables": draft.variables,
        "options": draft.options,
        "publish_at": draft.publish_at.isoformat() if draft.publish_at else None,
        "overdue": overdue,
        "correction_of": draft.correction_of_id,
        "rendered": {"discord": list(plan.discord), "telegram": list(plan.telegram)},
        "payload": draft.payload,
        "approvals": [
            {
                "by": a.approver.username,
                "decision": a.decision,
                "version": a.version,
                "content_hash": a.content_hash,
                "at": a.at.isoformat(),
                "reason": a.reason,
                "counts": standing[a.id].counts,
                "why": standing[a.id].reason,
            }
            for a in draft.approvals
        ],
        "quorum": {
            "needed": state.needed,
            "have": state.have,
            "met": state.met,
            "blocked": state.blocked,
        },
        "warnings": draft.warnings,
        "rejection_reason": draft.rejection_reason,
        "deliveries": [
            {
                "id": d.id,
                "destination": d.destination.name,
                "platform": d.destination.platform,
                "state": d.state,
                "attempts": d.attempts,
                "version": d.draft_version,
                "message_ids": d.platform_message_ids,
                "sent_at": d.sent_at.isoformat() if d.sent_at else None,
                "last_error": d.last_error,
            }
            for d in deliveries
        ],
    }
