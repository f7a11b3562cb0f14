"""The error hierarchy every layer speaks.

Services raise these; the CLI turns them into exit codes (a refused rule exits 3 with one line),
the panel into an error page and the API into one JSON error schema. ``field`` names the input
that was wrong, ``rule`` the policy that refused, so the person at the keyboard knows what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldProblem:
    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.field}: {self.problem}"


class CommsError(Exception):
    """Base class. ``status`` is the HTTP status the web layers use."""

    status = 400
    code = "error"

    def __init__(self, message: str, *, field: str | None = None, rule: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.rule = rule

    def __str__(self) -> str:
        if self.field and not self.message.startswith(self.field):
            return f"{self.field}: {self.message}"
        return self.message


class InvalidInput(CommsError):
    """One or more fields are wrong; every problem is listed, nothing was written."""

    code = "invalid_input"
    status = 422

    def __init__(self, problems: list[FieldProblem] | FieldProblem) -> None:
        self.problems = problems if isinstance(problems, list) else [problems]
        first = self.problems[0]
        message = "; ".join(str(p) for p in self.problems)
        super().__init__(message, field=first.field)

    def __str__(self) -> str:
        return self.message


class NotFound(CommsError):
    code = "not_found"
    status = 404


class Conflict(CommsError):
    """The thing changed under you (stale version, duplicate name)."""

    code = "conflict"
    status = 409


class RuleViolation(CommsError):
    """A policy rule refused the action; ``rule`` names it (e.g. ``approval.self_approval``)."""

    code = "rule_violation"
    status = 409

    def __init__(self, rule: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message, field=field, rule=rule)

    def __str__(self) -> str:
        return f"{self.rule}: {self.message}"


class PermissionDenied(CommsError):
    code = "forbidden"
    status = 403

    def __init__(self, message: str = "you are not allowed to do this", *, rule: str | None = None):
        super().__init__(message, rule=rule)


class AuthenticationRequired(CommsError):
    code = "unauthenticated"
    status = 401
