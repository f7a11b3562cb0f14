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
* a draft rendered for another severity than the incident's now counts nothing;
* a draft whose destinations became stricter than its rendering (``destination_conflicts``:
  @everyone or crossposting no longer allowed, pinning or notifications turned off where the
  draft relied on the destination's setting, now private) counts nothing until re-rendered;
  after approval such a delivery is held and the draft goes back to review (a looser setting
  never widens what was approved: the approved bytes are what is sent).

Before each delivery leaves, ``may_send`` checks again, under the draft's row lock: the frozen
version still hashes to the approved hash, the draft still holds that version and a publishable
state, the quorum still stands (approvers' standing judged now, approvals' age judged when the
delivery was written), and the destination is part of the approved plan.

The functions, for the service, the panel and the worker: ``may_approve`` (who may approve this
version), ``evaluate`` (what counts toward the quorum), ``may_send`` (whether this delivery may be
sent now), ``destination_conflicts`` (whether a destination still allows what was approved),
``may_approve_grant`` and ``grant_approvals`` (who may approve a new Decision Maker), and
``configuration`` / ``weakened`` (the settings that decide all this).

Who may approve is itself gated:

* nobody changes their own roles (``comms.users.service``);
* granting decision_maker from the panel creates a ``RoleGrant`` that counts only once
  ``grant_quorum`` existing Decision Makers approve it (not the requester, not the person
  receiving it); until then the person does not hold the role. The operator at the CLI, who
  holds the database anyway, creates the first Decision Makers directly;
* the settings that weaken the gate (quorum per severity, self-approval, approval TTL, the grant
  quorum) come only from the environment or the config file, and every process records them
  in the audit log at start (``configuration``, ``weakened``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from comms.destinations.models import Destination
from comms.drafts.models import Approval, Decision, Draft, DraftStatus, DraftVersion
from comms.drafts.plan import AnnouncementPlan, PlannedDelivery
from comms.enums import Role, Severity
from comms.outbox.models import Delivery
from comms.settings import Settings
from comms.users.models import GrantStatus, RoleGrant, User

# Draft states from which an approved version may (still) be sent.
PUBLISHABLE = frozenset(
    {
        DraftStatus.APPROVED,
        DraftStatus.PUBLISHING,
        DraftStatus.PUBLISHED,
        DraftStatus.PARTIALLY_FAILED,
    }
)


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
    if draft.status != DraftStatus.IN_REVIEW:
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
        and a.decision == Decision.APPROVE
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


def configuration(settings: Settings) -> dict[str, Any]:
    """The settings that decide who may approve, as recorded in the audit log at start."""
    return {
        "approval_quorum": {s.value: settings.quorum_for(s) for s in Severity},
        "allow_self_approval": settings.allow_self_approval,
        "approval_ttl_minutes": settings.approval_ttl_minutes,
        "role_grant_quorum": grant_quorum(settings),
    }


def weakened(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """How ``after`` lets fewer or less independent people approve than ``before``."""
    found = []
    old_quorum, new_quorum = before.get("approval_quorum", {}), after["approval_quorum"]
    for severity, count in new_quorum.items():
        if severity in old_quorum and count < old_quorum[severity]:
            found.append(f"{severity} quorum lowered from {old_quorum[severity]} to {count}")
    if after["allow_self_approval"] and not before.get("allow_self_approval", False):
        found.append("self-approval turned on")
    old_ttl, new_ttl = before.get("approval_ttl_minutes"), after["approval_ttl_minutes"]
    if old_ttl is not None and (new_ttl is None or new_ttl > old_ttl):
        found.append(f"approval TTL raised from {old_ttl} min to {new_ttl or 'none'}")
    old_grant = before.get("role_grant_quorum")
    if old_grant is not None and after["role_grant_quorum"] < old_grant:
        found.append(
            f"decision_maker grant quorum lowered from {old_grant} to {after['role_grant_quorum']}"
        )
    return found


def destination_conflicts(
    item: PlannedDelivery,
    destination: Destination,
    options: dict[str, Any],
    *,
    after_approval: bool = False,
) -> list[str]:
    """How ``destination`` as it is now is stricter than what ``item`` (one planned delivery of
    a rendered version, made with the draft's ``options``) would do there.

    Pin and silent count only where the draft left them to the destination: a draft that
    explicitly asked to pin was approved as such. A disabled destination is skipped when the
    quorum is met (the approvers saw it listed); disabled ``after_approval``, it holds.
    """
    found = []
    if after_approval and not destination.enabled:
        found.append("it has been disabled")
    if item.destination.is_public and not destination.is_public:
        found.append("it is now private")
    if item.mentions_everyone and not destination.allow_everyone:
        found.append("@everyone is no longer allowed there")
    if item.crosspost and not destination.crosspost:
        found.append("crossposting has been turned off")
    if item.pin and options.get("pin") is None and not destination.pin:
        found.append("pinning has been turned off")
    if not item.silent and options.get("silent") is None and destination.silent:
        found.append("it now posts silently")
    return found


def grant_quorum(settings: Settings) -> int:
    """Approvals a decision_maker grant needs: COMMS_ROLE_GRANT_QUORUM, else the P1 quorum."""
    return settings.role_grant_quorum or settings.quorum_for(Severity.P1)


def _counts_for_grant(grant: RoleGrant, approver: User) -> bool:
    return approver.has_role(Role.DECISION_MAKER) and approver.id not in (
        grant.requested_by_id,
        grant.user_id,
    )


def grant_approvals(grant: RoleGrant) -> int:
    """Distinct approvals of a grant that count now (approvers still active Decision Makers)."""
    return len({a.approver_id for a in grant.approvals if _counts_for_grant(grant, a.approver)})


def may_approve_grant(grant: RoleGrant, user: User) -> Refusal | None:
    """Whether ``user`` may approve giving ``grant.role`` to ``grant.user``."""
    if not user.has_role(Role.DECISION_MAKER):
        return Refusal(
            "permission.role_grant.approve", f"{user.username} is not an active Decision Maker"
        )
    if grant.status != GrantStatus.PENDING:
        return Refusal("role_grant.not_pending", f"this grant is {grant.status}")
    if user.id == grant.user_id:
        return Refusal("role_grant.self", "nobody approves a role for themselves")
    if user.id == grant.requested_by_id:
        return Refusal(
            "role_grant.requester", "you asked for this grant; other Decision Makers approve it"
        )
    if any(a.approver_id == user.id for a in grant.approvals):
        return Refusal("role_grant.duplicate", "you already approved this grant")
    return None


def _standing(
    approval: Approval, draft: Draft, *, settings: Settings, now: datetime, seen: set[int]
) -> ApprovalStanding:
    def no(reason: str) -> ApprovalStanding:
        return ApprovalStanding(approval, False, reason)

    if approval.decision != Decision.APPROVE:
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


def evaluate(
    draft: Draft,
    *,
    severity: Severity,
    settings: Settings,
    now: datetime,
    destinations: Sequence[Destination] | None = None,
    plan: AnnouncementPlan | None = None,
) -> Quorum:
    """Count the approvals that are valid for the draft's current content hash.

    ``destinations`` (the draft's, as they are now) also block the count when one became
    stricter than this version's rendering; the worker checks its own destination instead."""
    seen: set[int] = set()
    standings = tuple(
        _standing(a, draft, settings=settings, now=now, seen=seen) for a in draft.approvals
    )
    blocked = None
    plan = plan or draft.plan
    rendered_for = plan.severity.value
    if rendered_for != severity.value:
        blocked = (
            f"the incident is now {severity.value} but this version was rendered for "
            f"{rendered_for}; it must be re-rendered"
        )
    for destination in destinations or ():
        item = plan.delivery_to(destination.id)
        problems = destination_conflicts(item, destination, draft.options) if item else []
        if problems and blocked is None:
            blocked = (
                f"{destination.name} changed since this version was rendered: "
                f"{'; '.join(problems)}; edit the draft to render it again"
            )
    return Quorum(needed=settings.quorum_for(severity), standings=standings, blocked=blocked)


def may_send(
    delivery: Delivery,
    draft: Draft,
    version: DraftVersion | None,
    stored_hash: str,
    plan: AnnouncementPlan | None,
    *,
    settings: Settings,
    now: datetime,
) -> str | None:
    """Whether this delivery may be sent now: None, or why not. The final check before bytes
    leave, run by the worker under the draft's row lock just before each delivery.

    ``stored_hash`` is the content hash computed from the version's stored plan (as read back),
    ``plan`` that plan parsed (None when this release cannot read it).

    Who may approve is judged now (a revoked Decision Maker stops counting at once); an
    approval's age is judged when the quorum was met and this delivery was written (its
    ``created_at``), since the approved content includes its publish_at and the outbox's
    retries: an approval TTL bounds how long a quorum may take to gather, not how long a
    scheduled announcement may wait. Whether the destination still allows what was approved is
    ``destination_conflicts`` (the delivery is then held, not refused).
    """
    if version is None:
        return f"version {delivery.draft_version} of draft #{draft.id} is missing"
    if plan is None:
        return "the stored announcement plan cannot be read by this release"
    if stored_hash != delivery.content_hash:
        return "the stored version no longer hashes to the approved content hash"
    if version.content_hash != delivery.content_hash:
        return "the version's recorded hash differs from the delivery's"
    if draft.version != delivery.draft_version or draft.content_hash != delivery.content_hash:
        return (
            f"the draft changed after approval (now version {draft.version}, "
            f"hash {draft.content_hash[:12]})"
        )
    if draft.status not in PUBLISHABLE:
        return f"the draft is {draft.status}"
    quorum = evaluate(
        draft,
        severity=Severity(draft.incident.severity),
        settings=settings,
        now=min(now, delivery.created_at),
        plan=plan,  # the draft's own, as the hashes match: parsed once per fan-out
    )
    if not quorum.met:
        return quorum.blocked or f"the quorum is no longer met ({quorum.have} of {quorum.needed})"
    if plan.delivery_to(delivery.destination_id) is None:
        return "the destination is not part of the approved content"
    return None
