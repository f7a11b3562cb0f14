"""The approval gate: who may approve this version, and which approvals count toward the quorum.

Every rule of the gate lives in this file. Counting is a pure function of the draft, its
approvals, the approvers' current roles, the configuration and the time, and it runs every time
anyone asks (the panel, the API, the approving transaction, and the publisher just before it
sends). Nothing is cached, so a revoked Decision Maker or an expired approval stops counting at
once.

The rules, in the order they are checked:

* only an active Decision Maker approves, once per version, while the draft is in review;
* nobody who created or edited any version of the draft approves it (four eyes), unless
  ``COMMS_ALLOW_SELF_APPROVAL`` is on for a one-person team;
* an approval counts only for the exact content hash (and version) it was given for;
* an approval given by someone later disabled or stripped of the role stops counting at once,
  and for good: it is void (an ``ApprovalVoid`` row), so restoring the person does not revive
  it; they approve again instead, and a draft approved with it goes back to review;
* with ``COMMS_APPROVAL_TTL_MINUTES``, an approval older than that stops counting;
* a draft rendered for another severity than the incident's now counts nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from comms.drafts.models import Approval, Decision, Draft, DraftStatus, DraftVersion
from comms.enums import Role, Severity
from comms.settings import Settings
from comms.users.models import User


@dataclass(frozen=True)
class Refusal:
    """Why a person may not approve (or a delivery may not go out): a rule name and a reason."""

    rule: str
    message: str


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


def contributors(draft: Draft) -> frozenset[int]:
    """Everyone who created or edited any version of the draft (a draft is never edited after
    it is published: a correction is a new draft)."""
    return frozenset({draft.author_id, draft.last_editor_id, *draft.contributor_ids})


def may_approve(
    draft: Draft,
    user: User,
    *,
    settings: Settings,
    versions: Sequence[DraftVersion] = (),
) -> Refusal | None:
    """Whether ``user`` may add an approval to the draft's current version, and if not why.

    ``versions`` (the draft's versions, when the caller has them) only make the refusal name
    the versions the person edited."""
    if not user.has_role(Role.DECISION_MAKER):
        return Refusal(
            "permission.draft.approve", f"{user.username} is not an active Decision Maker"
        )
    if draft.status != DraftStatus.IN_REVIEW.value:
        return Refusal(
            "approval.not_in_review", f"draft #{draft.id} is {draft.status}, not in review"
        )
    if not settings.allow_self_approval:
        if user.id == draft.author_id:
            return Refusal(
                "approval.self_approval",
                "you wrote this draft; another Decision Maker must approve it",
            )
        if user.id == draft.last_editor_id:
            return Refusal(
                "approval.last_editor",
                "you made the last edit; another Decision Maker must approve it",
            )
        if user.id in contributors(draft):
            return Refusal(
                "approval.contributor",
                f"you edited {_versions_by(versions, user)} of this draft; whoever wrote any of "
                "its words cannot approve it: another Decision Maker must",
            )
    if any(
        a.approver_id == user.id
        and a.content_hash == draft.content_hash
        and a.decision == Decision.APPROVE.value
        and a.void is None
        for a in draft.approvals
    ):
        return Refusal("approval.duplicate", f"you already approved version {draft.version}")
    return None


def _versions_by(versions: Sequence[DraftVersion], user: User) -> str:
    edited = sorted(v.version for v in versions if v.editor_id == user.id)
    if not edited:
        return "a version"
    return ("version " if len(edited) == 1 else "versions ") + ", ".join(map(str, edited))


def _standing(
    approval: Approval, draft: Draft, *, settings: Settings, now: datetime, seen: set[int]
) -> ApprovalStanding:
    def no(reason: str) -> ApprovalStanding:
        return ApprovalStanding(approval, False, reason)

    if approval.decision != Decision.APPROVE.value:
        return no(f"rejected: {approval.reason}")
    if approval.content_hash != draft.content_hash or approval.version != draft.version:
        return no(f"given for version {approval.version}; the content has changed since")
    if approval.void is not None:
        return no(f"void: {approval.void.reason}")
    approver = approval.approver
    if not approver.active:
        return no(f"{approver.username} has been disabled")
    if not approver.has_role(Role.DECISION_MAKER):
        return no(f"{approver.username} no longer holds the decision_maker role")
    if not settings.allow_self_approval and approver.id in contributors(draft):
        return no(f"{approver.username} wrote or edited a version of this draft")
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
