"""The Incident Log as Markdown, in the policy's Incident Log layout.

Sections: title, summary table, roles, communication channels, timeline (``HH:MM UTC - event``),
investigation, actions, decisions, resolution, communications sent, post-incident, links.
Text typed by people is escaped so a pasted report cannot inject HTML or break a table.
"""

from __future__ import annotations

import re
from datetime import datetime

from comms.incidents.models import (
    Incident,
    IncidentLogEntry,
    IncidentRole,
    LogKind,
)

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|#])")


def md(text: str) -> str:
    """Escape Markdown and HTML metacharacters and fold newlines into one line."""
    one_line = " ".join(text.split())
    return _MD_SPECIAL.sub(r"\\\1", one_line)


def _time(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "-"


def filename(incident: Incident) -> str:
    """``YYYY-MM-DD-brief-description.md`` as the policy names Incident Log files."""
    slug = re.sub(r"[^a-z0-9]+", "-", incident.title.lower()).strip("-")[:60].strip("-")
    return f"{incident.opened_at:%Y-%m-%d}-{slug or incident.key.lower()}.md"


def _span(start: datetime | None, end: datetime | None) -> str:
    """``1 h 05 min`` between two times, or ``-`` when either is unknown."""
    if start is None or end is None:
        return "-"
    minutes = max(0, int((end - start).total_seconds() // 60))
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def render_markdown(incident: Incident, entries: list[IncidentLogEntry]) -> str:
    status = incident.status
    detected = incident.detected_at or incident.opened_at
    first_public = incident.first_public_update_at
    lines: list[str] = [f"# {incident.key}: {md(incident.title)}", ""]
    lines += [
        "## Summary",
        "",
        "| Field | Value |",
        "| --- | --- |",
        f"| Status | {status.summary} ({status.value}) |",
        f"| Severity | {incident.severity} |",
        f"| Start time | {_time(incident.opened_at)} |",
        f"| Detected | {_time(incident.detected_at or incident.opened_at)}"
        f"{' (first community report)' if incident.detected_at else ''} |",
        f"| Time to detect | {_span(incident.detected_at, incident.opened_at)} |",
        f"| Time to first public announcement | {_span(detected, first_public)} |",
        f"| Mitigation time | {_time(incident.mitigated_at)} |",
        f"| Resolution time | {_time(incident.resolved_at)} |",
        f"| Affected services | {md(incident.affected_services) or '-'} |",
        "",
    ]
    if incident.summary:
        lines += [md(incident.summary), ""]

    lines += ["## Roles", "", "| Role | Person | Since |", "| --- | --- | --- |"]
    for role in IncidentRole:
        for assignment in incident.holders(role):
            lines.append(
                f"| {role.label} | {md(assignment.user.display_name)} "
                f"({md(assignment.user.username)}) | {_time(assignment.acknowledged_at)} |"
            )
    pending = incident.pending_leader
    if pending is not None:
        lines.append(
            f"| Incident Leader (offered, not yet acknowledged) | {md(pending.user.username)} "
            f"| {_time(pending.assigned_at)} |"
        )
    lines += [
        "",
        "## Communication channels",
        "",
        f"- Call: {md(incident.call_link) or '-'}",
        f"- Chat channel: {md(incident.chat_channel) or '-'}",
        "",
        "## Timeline",
        "",
    ]
    day = None
    for entry in entries:
        if entry.at.date() != day:
            day = entry.at.date()
            lines += [f"### {day.isoformat()}", ""]
        who = f" ({md(entry.actor.username)})" if entry.actor else ""
        why = f" — rationale: {md(entry.rationale)}" if entry.rationale else ""
        lines.append(f"- {entry.at:%H:%M} UTC - [{entry.kind}] {md(entry.text)}{why}{who}")
    if not entries:
        lines.append("- (no entries)")

    notes = [e for e in entries if e.kind == LogKind.NOTE.value]
    lines += ["", "## Investigation", "", "### What we know", ""]
    lines += [f"- {md(e.text)}" for e in notes] or ["- (nothing recorded yet)"]

    actions = [e for e in entries if e.kind == LogKind.ACTION.value]
    lines += ["", "## Actions", "", "| Time | Action | Owner | Due |", "| --- | --- | --- | --- |"]
    for entry in actions:
        owner = md(entry.owner.username) if entry.owner else "unassigned"
        lines.append(
            f"| {entry.at:%H:%M} UTC | {md(entry.text)} | {owner} | {_time(entry.due_at)} |"
        )

    decisions = [e for e in entries if e.kind == LogKind.DECISION.value]
    lines += ["", "## Decisions", ""]
    lines += [
        f"- {e.at:%H:%M} UTC - {md(e.text)} (rationale: {md(e.rationale)})" for e in decisions
    ] or ["- (none recorded)"]

    lines += [
        "",
        "## Resolution summary",
        "",
        f"- Mitigated: {_time(incident.mitigated_at)}",
        f"- Resolved: {_time(incident.resolved_at)}",
        "",
        "## Communications sent",
        "",
        "| Time | Channel | Summary |",
        "| --- | --- | --- |",
    ]
    for entry in entries:
        if entry.kind == LogKind.COMMS.value and entry.channel:
            lines.append(f"| {_time(entry.at)} | {md(entry.channel)} | {md(entry.text)} |")
    lines += [
        "",
        "## Post-incident",
        "",
        "- Post-mortem: required for P1-P3, within a week of resolution"
        if incident.severity in ("P1", "P2", "P3")
        else "- Post-mortem: optional for P4-P5",
        "",
        "## Links and evidence",
        "",
    ]
    links = sorted(set(re.findall(r"https://[^\s|)]+", " ".join(e.text for e in entries))))
    lines += [f"- <{link}>" for link in links] or ["- (none)"]
    return "\n".join(lines) + "\n"
