"""``comms detection``: what the community and the monitoring systems reported."""

from __future__ import annotations

import click
from sqlalchemy.ext.asyncio import AsyncSession

from comms.cli.base import AppContext, cli, emit, in_session
from comms.detections import service as detections
from comms.text import one_line_inert


@cli.group()
def detection() -> None:
    """Community reports and monitoring alerts."""


@detection.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@in_session
async def detection_list(app: AppContext, session: AsyncSession, as_json: bool, limit: int) -> None:
    """List detections, newest first (reporters' text shown inert: it is untrusted)."""

    document = [
        detections.detection_document(d)
        for d in await detections.list_detections(session, limit=limit)
    ]

    def text() -> str:
        lines = []
        for d in document:
            who = d["reporter"]["name"] or d["origin"] or d["submitted_by"] or "-"
            said = d["title"] or d["text"]
            lines.append(
                f"{d['reference']:<8} {d['received_at'][:19]}  {d['source']:<12} "
                f"{one_line_inert(who, limit=24):<24} {len(d['entities']):>2} entities  "
                f"{one_line_inert(said, limit=60)}"
            )
        return "\n".join(lines) or "(no detections)"

    emit(document, as_json, text)
