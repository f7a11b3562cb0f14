"""The approval gate: which approvals count toward the quorum, right now.

Counting is a pure function of the draft, its approvals, the approvers' current roles, the
configuration and the time, and it runs every time anyone asks (the panel, the API, the
approving transaction, and the publisher just before it sends). Nothing is cached, so a revoked
Decision Maker or an expired approval stops counting at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from comms.drafts.models import Approval, Decision, Draft
from comms.enums import Role, Severity
from comms.settings import Settings


@dataclass(frozen=True)
class ApprovalStanding:
    approval: Approval
    counts: bool
    reason: str  # why it does or does not count, for the approval view


@dataclass(frozen=True)
class Quorum:
    needed: int
    standings: tuple[ApprovalStanding, ...]
    blocked: str | None = None  # a reason no approval can count (e.g. severity changed)

    @property
    def have(self) -> int:
        return sum(1 for s in self.standings if s.counts)

    @property
    def met(self) -> bool:
        return self.blocked is None and self.have >= self.needed

    @property
    def approvers(self) -> list[str]:
        return [s.approval.approver.username for s in self.standings if s.counts]


def _standing(
    approval: Approval, draft: Draft, *, settings: Settings, now: datetime, seen: set[int]
) -> ApprovalStanding:
    def no(reason: str) -> ApprovalStanding:
        return ApprovalStanding(approval, False, reason)

    if approval.decision != Decision.APPROVE.value:
        return no(f"rejected: {approval.reason}")
    if approval.content_hash != draft.content_hash or approval.version != draft.version:
        return no(f"given for version {approval.version}; the content has changed since")
    approver = approval.approver
    if not approver.active:
        return no(f"{approver.username} has been disabled")
    if not approver.has_role(Role.DECISION_MAKER):
        return no(f"{approver.username} no longer holds the decision_maker role")
    if not settings.allow_self_approval:
        if approver.id == draft.author_id:
            return no(f"{approver.username} wrote this draft")
        if approver.id == draft.last_editor_id:
            return no(f"{approver.username} made the last edit")
    if settings.approval_ttl_minutes is not None:
        expiry = approval.at + timedelta(minutes=settings.approval_ttl_minutes)
        if now >= expiry:
            return no(f"expired at {expiry:%H:%M} UTC")
    if approver.id in seen:
        return no(f"{approver.username} already counted once")
    seen.add(approver.id)
    return ApprovalStanding(approval, True, "counts")


def evaluate(draft: Draft, *, severity: Severity, settings: Settings, now: datetime) -> Quorum:
    """Count the approvals that are valid for the draft's current content hash."""
    seen: set[int] = set()
    standings = tuple(
        _standing(a, draft, settings=settings, now=now, seen=seen) for a in draft.approvals
    )
    blocked = None
    rendered_for = draft.payload.get("severity")
    if rendered_for != severity.value:
        blocked = (
            f"the incident is now {severity.value} but this version was rendered for "
            f"{rendered_for}; it must be re-rendered"
        )
    return Quorum(needed=settings.quorum_for(severity), standings=standings, blocked=blocked)
