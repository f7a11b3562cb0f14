"""Vocabulary shared by every domain (and by settings), kept free of imports."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What a person may do in the service. One person may hold several."""

    ADMIN = "admin"
    COMMS_MANAGER = "comms_manager"
    DECISION_MAKER = "decision_maker"
    INCIDENT_LEADER = "incident_leader"
    SCRIBE = "scribe"
    RESPONDER = "responder"


class Severity(StrEnum):
    """P1 critical .. P5 informational; when in doubt, the higher one."""

    P1 = "P1"
    P2 = "P2"
    P3 = "P3"
    P4 = "P4"
    P5 = "P5"

    @property
    def label(self) -> str:
        return _SEVERITY_LABELS[self]


_SEVERITY_LABELS = {
    Severity.P1: "critical",
    Severity.P2: "high",
    Severity.P3: "moderate",
    Severity.P4: "low",
    Severity.P5: "info",
}


class Platform(StrEnum):
    DISCORD = "discord"
    TELEGRAM = "telegram"
