"""Who may do what, in one table, checked by the services themselves.

The panel and the API check the same table before calling a service, but the service checks
again: a route that forgets its check still cannot approve, publish or change users.
Admin is not a super-role: an admin cannot approve announcements unless they also hold the
decision_maker role (four eyes stay four eyes).
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from comms.enums import Role
from comms.errors import PermissionDenied

if TYPE_CHECKING:
    from comms.users.models import User


class Action(StrEnum):
    READ = "read"
    INCIDENT_OPEN = "incident.open"
    INCIDENT_MANAGE = "incident.manage"  # severity, status, role assignments
    INCIDENT_LOG = "incident.log"  # notes, decisions, actions
    DRAFT_WRITE = "draft.write"  # create, edit, submit, withdraw
    DRAFT_APPROVE = "draft.approve"  # approve or reject
    ROLE_GRANT_DECIDE = "role_grant.approve"  # approve or reject giving decision_maker
    DELIVERY_MANAGE = "delivery.manage"  # retry, resend, dismiss
    DESTINATION_MANAGE = "destination.manage"
    USER_MANAGE = "user.manage"
    TOKEN_MANAGE = "token.manage"  # noqa: S105 - an action name, not a secret
    AUDIT_READ = "audit.read"
    DETECTION_WRITE = "detection.write"
    DETECTION_TRIAGE = "detection.triage"  # dismiss, merge, attach, escalate clusters


ALL_ROLES = frozenset(Role)

ALLOWED: dict[Action, frozenset[Role]] = {
    Action.READ: ALL_ROLES,
    Action.INCIDENT_OPEN: ALL_ROLES,
    Action.INCIDENT_MANAGE: frozenset({Role.INCIDENT_LEADER, Role.ADMIN}),
    Action.INCIDENT_LOG: ALL_ROLES,
    Action.DRAFT_WRITE: frozenset({Role.COMMS_MANAGER}),
    Action.DRAFT_APPROVE: frozenset({Role.DECISION_MAKER}),
    Action.ROLE_GRANT_DECIDE: frozenset({Role.DECISION_MAKER}),
    Action.DELIVERY_MANAGE: frozenset({Role.COMMS_MANAGER, Role.INCIDENT_LEADER, Role.ADMIN}),
    Action.DESTINATION_MANAGE: frozenset({Role.ADMIN}),
    Action.USER_MANAGE: frozenset({Role.ADMIN}),
    Action.TOKEN_MANAGE: frozenset({Role.ADMIN}),
    Action.AUDIT_READ: frozenset({Role.ADMIN, Role.DECISION_MAKER, Role.INCIDENT_LEADER}),
    Action.DETECTION_WRITE: ALL_ROLES,
    Action.DETECTION_TRIAGE: frozenset({Role.INCIDENT_LEADER, Role.RESPONDER, Role.ADMIN}),
}


def can(user: User | None, action: Action) -> bool:
    return user is not None and user.has_role(*ALLOWED[action])


def require(user: User, action: Action) -> None:
    """Raise PermissionDenied unless ``user`` is active and holds a role allowed ``action``."""
    if not user.active:
        raise PermissionDenied(f"{user.username} is disabled", rule="user.disabled")
    if not can(user, action):
        roles = ", ".join(sorted(ALLOWED[action]))
        raise PermissionDenied(
            f"{user.username} may not {action.value} (needs one of: {roles})",
            rule=f"permission.{action.value}",
        )
