"""Access rules, declared on every route and enforced for every request (deny by default).

Each endpoint carries a ``Rule`` set with ``@allow(...)``. The app-wide guard reads it from the
matched endpoint; an endpoint without one is refused with 403, and a test walks the route table
to make sure none is missing. The rule is the permission table's ``Action`` (the same table the
services check again), or one of the few states that need no action: public pages (login),
the half-logged-in second-factor and enrolment pages, and one's own account.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from comms.permissions import Action

F = TypeVar("F", bound=Callable[..., Any])
RULE_ATTR = "__comms_rule__"
APART_ATTR = "__comms_writes_apart__"


class Gate(StrEnum):
    PUBLIC = "public"  # anyone, no session needed (login form, health)
    PENDING = "pending"  # a session past the password, second factor pending (or full)
    ENROL = "enrol"  # a session that must enrol 2FA first (or full)
    SELF = "self"  # any fully logged-in user, acting on their own account
    ACTION = "action"  # a fully logged-in user (or token) allowed ``action``


@dataclass(frozen=True)
class Rule:
    gate: Gate
    action: Action | None = None

    def describe(self) -> str:
        return self.action.value if self.action else self.gate.value


def allow(rule: Action | Gate) -> Callable[[F], F]:
    """Declare who may call an endpoint. Put it under the route decorator."""
    declared = Rule(Gate.ACTION, rule) if isinstance(rule, Action) else Rule(rule)

    def mark(func: F) -> F:
        setattr(func, RULE_ATTR, declared)
        return func

    return mark


def rule_of(endpoint: Any) -> Rule | None:
    found = getattr(endpoint, RULE_ATTR, None)
    return found if isinstance(found, Rule) else None


def writes_apart(func: F) -> F:
    """Declare that an endpoint writes through one of the app's shared writers (a group
    commit in ``PanelState``), not in its request's transaction. Its request then reads in a
    read-only transaction: on SQLite it must not hold the write lock the writer waits for."""
    setattr(func, APART_ATTR, True)
    return func


def writes_apart_of(endpoint: Any) -> bool:
    return getattr(endpoint, APART_ATTR, False) is True
