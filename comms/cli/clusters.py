"""``comms cluster`` and triage: what responders do with community reports from the terminal."""

from __future__ import annotations

import click
from sqlalchemy.ext.asyncio import AsyncSession

from comms.cli.base import AppContext, cli, emit, in_session
from comms.detections import triage
from comms.incidents import service as incidents
from comms.text import one_line_inert
from comms.users import service as users


@cli.group()
def cluster() -> None:
    """Clusters of community reports: list, show, dismiss, merge, attach, escalate."""


def _line(d: dict[str, object]) -> str:
    entities = d["entities"]
    assert isinstance(entities, list)
    shown = ", ".join(one_line_inert(str(e["value"]), limit=44) for e in entities[:3])
    incident = f"  -> {d['incident']}" if d["incident"] else ""
    return (
        f"{d['reference']:<7} {d['status']:<9} {d['kind']:<8} {d['reports']:>4} reports "
        f"{d['reporters']:>4} members  last {str(d['last_seen'])[:19]}  {shown}{incident}"
    )


@cluster.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@in_session
async def cluster_list(app: AppContext, session: AsyncSession, as_json: bool, limit: int) -> None:
    """Live clusters first, newest and largest first."""

    document = await triage.documents(session, await triage.list_clusters(session, limit=limit))
    emit(document, as_json, lambda: "\n".join(_line(d) for d in document) or "(no clusters)")


@cluster.command("show")
@click.argument("cluster_id", type=click.IntRange(1, 2_147_483_647))
@click.option("--json", "as_json", is_flag=True)
@in_session
async def cluster_show(
    app: AppContext, session: AsyncSession, cluster_id: int, as_json: bool
) -> None:
    """One cluster, its entities and its newest reports (shown inert)."""

    found = await triage.require_cluster(session, cluster_id)
    (document,) = await triage.documents(session, [found])
    reports = await triage.detections_of(session, found)
    document["detections"] = [
        {
            "reference": d.reference,
            "source": d.source.value,
            "received_at": d.received_at.isoformat(),
            "reporter": d.reporter_name,
            "text": d.text,
            "message_url": d.message_url,
        }
        for d in reports
    ]

    def text() -> str:
        lines = [_line(document), f"first {document['first_seen'][:19]}"]
        lines += [
            f"  {e['type']:<7} {one_line_inert(str(e['value']), limit=70)}  {' '.join(e['flags'])}"
            for e in document["entities"]
        ]
        lines += ["reports:"] + [f"  {triage.sample_line(d)}" for d in reports]
        return "\n".join(lines)

    emit(document, as_json, text)


@cluster.command("dismiss")
@click.argument("cluster_id", type=click.IntRange(1, 2_147_483_647))
@click.option("--reason", required=True)
@click.option("--by", "by", required=True)
@in_session
async def cluster_dismiss(
    app: AppContext, session: AsyncSession, cluster_id: int, reason: str, by: str
) -> None:
    """Not an event (noise, a known issue); the reason is kept and audited."""

    actor = await users.require_user(session, username=by, field="by")
    found = await triage.require_cluster(session, cluster_id)
    await triage.dismiss(session, found, reason=reason, actor=actor)
    click.echo(f"{found.reference} dismissed")


@cluster.command("merge")
@click.argument("cluster_id", type=click.IntRange(1, 2_147_483_647))
@click.argument("other", type=click.IntRange(1, 2_147_483_647))
@click.option("--by", "by", required=True)
@in_session
async def cluster_merge(
    app: AppContext, session: AsyncSession, cluster_id: int, other: int, by: str
) -> None:
    """CLUSTER_ID's reports move into OTHER (one event reported two ways)."""

    actor = await users.require_user(session, username=by, field="by")
    found = await triage.require_cluster(session, cluster_id)
    into = await triage.require_cluster(session, other, field="other")
    await triage.merge(session, found, into, actor=actor)
    click.echo(f"{found.reference} merged into {into.reference}")


@cluster.command("attach")
@click.argument("cluster_id", type=click.IntRange(1, 2_147_483_647))
@click.option("--incident", "key", required=True)
@click.option("--by", "by", required=True)
@in_session
async def cluster_attach(
    app: AppContext, session: AsyncSession, cluster_id: int, key: str, by: str
) -> None:
    """The reports belong to an incident already open (written to its Incident Log)."""

    actor = await users.require_user(session, username=by, field="by")
    found = await triage.require_cluster(session, cluster_id)
    incident = await incidents.require_incident(session, key=key)
    await triage.attach(session, found, incident, actor=actor)
    click.echo(f"{found.reference} attached to {incident.key}")


@cluster.command("escalate")
@click.argument("cluster_id", type=click.IntRange(1, 2_147_483_647))
@click.option("--severity", required=True, help="P1 (critical) .. P5 (info).")
@click.option("--title", default=None, help="Default: suggested from the cluster.")
@click.option("--by", "by", required=True)
@in_session
async def cluster_escalate(
    app: AppContext,
    session: AsyncSession,
    cluster_id: int,
    severity: str,
    title: str | None,
    by: str,
) -> None:
    """Open an incident from the cluster; prints its key. Its detection time is the first
    report's."""

    actor = await users.require_user(session, username=by, field="by")
    found = await triage.require_cluster(session, cluster_id)
    incident = await triage.escalate(
        session,
        found,
        severity=incidents.parse_severity(severity),
        actor=actor,
        title=title,
    )
    click.echo(incident.key)
