"""The detections inbox and cluster pages over HTTP (issue 11, item 7): order and counts, hostile
reporter text shown inert, triage only for triage roles, and every refusal a form error."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, select

from comms.audit.models import AuditEvent
from comms.clock import FrozenClock
from comms.db import Database
from comms.detections import service
from comms.detections.models import Cluster, ClusterStatus, DetectionSource
from comms.incidents.models import Incident
from comms.settings import Settings
from tests.panel.conftest import PanelClient

# A checksummed address with one letter's case changed: a typo or a tampered address.
TAMPERED = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"
HOSTILE = (
    "<script>alert(1)</script> [click](https://evil.example/claim) @everyone "
    "\u202eelbavig\u202c and\u200bhidden"
)


async def record(
    db: Database,
    settings: Settings,
    text: str,
    member: str,
    *,
    name: str = "",
    message_url: str = "",
) -> int:
    """One community report through the real service (which clusters it); its cluster's id."""
    async with db.transaction() as session:
        detection, _created = await service.record(
            session,
            service.Report(
                source=DetectionSource.DISCORD,
                text=text,
                reporter_id=member,
                reporter_name=name or member,
                message_url=message_url,
            ),
            settings=settings,
        )
        assert detection.cluster_id is not None
        return detection.cluster_id


async def cluster_of(db: Database, cluster_id: int) -> Cluster:
    async with db.transaction() as session:
        found = await session.get(Cluster, cluster_id)
        assert found is not None
        return found


async def audit_count(db: Database) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(AuditEvent)) or 0)


def triage_forms(html: str, cluster_id: int) -> list[str]:
    return re.findall(rf'action="/reports/clusters/{cluster_id}/(\w+)"', html)


async def test_inbox_lists_live_clusters_newest_first_with_counts(
    world: dict[str, Any],
    make_client: Any,
    db: Database,
    panel_settings: Settings,
    clock: FrozenClock,
) -> None:
    drain = await record(db, panel_settings, f"drainer {TAMPERED} is emptying the pool", "m1")
    clock.advance(minutes=1)
    assert await record(db, panel_settings, f"{TAMPERED} stole my funds", "m2") == drain
    clock.advance(minutes=1)
    phish = await record(db, panel_settings, "claim at https://examp1e.org/claim now", "m3")
    clock.advance(minutes=1)
    noise = await record(db, panel_settings, "gm", "m4")
    clock.advance(minutes=1)
    assert await record(db, panel_settings, f"again {TAMPERED}", "m1") == drain
    assert len({drain, phish, noise}) == 3

    lead: PanelClient = make_client()
    await lead.login("leo")
    assert (
        await lead.post(f"/reports/clusters/{noise}/dismiss", {"reason": "chatter"})
    ).status_code == 303

    inbox = await lead.get("/reports")
    assert inbox.status_code == 200
    assert 'data-poll="/reports/rows"' in inbox.text and 'href="/reports"' in inbox.text
    order = [int(n) for n in re.findall(r'<tr id="cluster-(\d+)"', inbox.text)]
    assert order == [drain, phish, noise]  # live first, newest first; dismissed last
    rows = dict(zip(order, inbox.text.split('<tr id="cluster-')[1:], strict=True))
    cells = re.findall(r"<td>(\d+)</td>", rows[drain])
    assert cells[:2] == ["3", "2"]  # 3 reports from 2 distinct members
    assert "CHECKSUM INVALID" in rows[drain] and "2026-01-01 12:00 UTC" in rows[drain]
    assert ">phishing<" in rows[phish] and "LOOK-ALIKE DOMAIN" in rows[phish]
    assert ">dismissed<" in rows[noise]

    fragment = await lead.get("/reports/rows")
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert 'data-count="2"' in fragment.text  # two live clusters
    assert [int(n) for n in re.findall(r'<tr id="cluster-(\d+)"', fragment.text)] == order


async def test_hostile_reporter_text_is_inert(
    world: dict[str, Any], make_client: Any, db: Database, panel_settings: Settings
) -> None:
    cluster_id = await record(
        db,
        panel_settings,
        f"{HOSTILE} {TAMPERED}",
        "m1",
        name="<img src=x onerror=alert(2)>\u202eevil",
        message_url="javascript:alert(3)",
    )
    assert (
        await record(
            db,
            panel_settings,
            f"same drainer {TAMPERED}",
            "m2",
            message_url="https://discord.com/channels/1/2/3",
        )
        == cluster_id
    )
    responder: PanelClient = make_client()
    await responder.login("rita")
    for path in (f"/reports/clusters/{cluster_id}", "/reports", "/reports/rows"):
        html = (await responder.get(path)).text
        assert "<script>alert" not in html and "<img src=x" not in html, path
        assert 'href="javascript:' not in html.lower(), path
        assert not re.search(r"<a\b[^>]*evil\.example", html), path
        assert "\u202e" not in html and "\u200b" not in html, path
    page = (await responder.get(f"/reports/clusters/{cluster_id}")).text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "[click](https://evil.example/claim) @everyone" in page  # plain text, not a link
    assert "\\u202eelbavig\\u202c and\\u200bhidden" in page  # visible, cannot reorder
    assert "&lt;img src=x onerror=alert(2)&gt;\\u202eevil" in page
    assert '<bdi dir="auto">' in page
    assert "javascript:alert(3)" in page  # shown as text, as "not a web link"
    assert re.search(
        r'<a href="https://discord.com/channels/1/2/3" rel="noopener noreferrer nofollow"', page
    )


async def test_triage_forms_and_posts_need_a_triage_role(
    world: dict[str, Any], make_client: Any, db: Database, panel_settings: Settings
) -> None:
    cluster_id = await record(db, panel_settings, f"drainer {TAMPERED}", "m1")
    cm: PanelClient = make_client()
    await cm.login("carol")
    before = await audit_count(db)  # after the login's own audit event
    page = await cm.get(f"/reports/clusters/{cluster_id}")
    assert page.status_code == 200 and "drainer" in page.text
    assert triage_forms(page.text, cluster_id) == []
    for action, form in (
        ("dismiss", {"reason": "noise"}),
        ("merge", {"other": "C-1"}),
        ("attach", {"incident": world["incident"].key}),
        ("escalate", {"severity": "P1"}),
    ):
        refused = await cm.post(f"/reports/clusters/{cluster_id}/{action}", form)
        assert refused.status_code == 403 and "permission." in refused.text, action
    assert (await cluster_of(db, cluster_id)).status is ClusterStatus.OPEN
    assert await audit_count(db) == before

    for username in ("leo", "rita", "ada"):
        browser: PanelClient = make_client()
        await browser.login(username)
        shown = triage_forms(
            (await browser.get(f"/reports/clusters/{cluster_id}")).text, cluster_id
        )
        assert shown == ["escalate", "attach", "merge", "dismiss"], username


async def test_escalate_opens_an_incident_and_goes_to_it(
    world: dict[str, Any], make_client: Any, db: Database, panel_settings: Settings
) -> None:
    cluster_id = await record(db, panel_settings, f"drainer {TAMPERED}", "m1")
    lead: PanelClient = make_client()
    await lead.login("leo")
    bad = await lead.post(f"/reports/clusters/{cluster_id}/escalate", {"severity": "P9"})
    assert bad.status_code == 422 and 'id="err-severity"' in bad.text
    assert "not a severity" in bad.text
    assert (await cluster_of(db, cluster_id)).status is ClusterStatus.OPEN

    done = await lead.post(
        f"/reports/clusters/{cluster_id}/escalate", {"severity": "P2", "title": ""}
    )
    assert done.status_code == 303
    location = done.headers["location"]
    assert location.startswith("/incidents/INC-")
    key = location.rsplit("/", 1)[1]
    incident_page = await lead.get(location)
    assert incident_page.status_code == 200 and "Escalated from community reports" in (
        incident_page.text
    )
    async with db.transaction() as session:
        incident = await session.scalar(select(Incident).where(Incident.key == key))
        assert incident is not None and incident.severity == "P2"
    assert (await cluster_of(db, cluster_id)).status is ClusterStatus.ESCALATED
    inbox = await lead.get("/reports")
    assert f'<a href="/incidents/{key}">{key}</a>' in inbox.text
    again = await lead.post(f"/reports/clusters/{cluster_id}/escalate", {"severity": "P2"})
    assert again.status_code == 409 and "cluster.decided" in again.text


async def test_dismiss_needs_a_reason(
    world: dict[str, Any], make_client: Any, db: Database, panel_settings: Settings
) -> None:
    cluster_id = await record(db, panel_settings, f"drainer {TAMPERED}", "m1")
    lead: PanelClient = make_client()
    await lead.login("leo")
    before = await audit_count(db)
    empty = await lead.post(f"/reports/clusters/{cluster_id}/dismiss", {"reason": "  "})
    assert empty.status_code == 422
    assert 'id="err-reason"' in empty.text and "is required" in empty.text
    assert triage_forms(empty.text, cluster_id)  # the page again, forms and all
    assert (await cluster_of(db, cluster_id)).status is ClusterStatus.OPEN
    assert await audit_count(db) == before

    ok = await lead.post(f"/reports/clusters/{cluster_id}/dismiss", {"reason": "known scam"})
    assert ok.status_code == 303 and ok.headers["location"] == f"/reports/clusters/{cluster_id}"
    dismissed = await cluster_of(db, cluster_id)
    assert dismissed.status is ClusterStatus.DISMISSED and dismissed.reason == "known scam"
    page = await lead.get(f"/reports/clusters/{cluster_id}")
    assert "Dismissed" in page.text and "known scam" in page.text
    assert triage_forms(page.text, cluster_id) == []
    twice = await lead.post(f"/reports/clusters/{cluster_id}/dismiss", {"reason": "again"})
    assert twice.status_code == 409 and "cluster.decided" in twice.text


async def test_attach_and_merge(
    world: dict[str, Any], make_client: Any, db: Database, panel_settings: Settings
) -> None:
    first = await record(db, panel_settings, f"drainer {TAMPERED}", "m1")
    second = await record(db, panel_settings, "claim at https://examp1e.org/claim", "m2")
    third = await record(db, panel_settings, "gm", "m3")
    assert len({first, second, third}) == 3
    key = world["incident"].key
    responder: PanelClient = make_client()
    await responder.login("rita")

    unknown = await responder.post(f"/reports/clusters/{first}/attach", {"incident": "INC-1"})
    assert unknown.status_code == 422 and 'id="err-incident"' in unknown.text
    attached = await responder.post(f"/reports/clusters/{first}/attach", {"incident": key})
    assert attached.status_code == 303
    assert (await cluster_of(db, first)).status is ClusterStatus.ESCALATED
    assert "Community reports attached: C-" in (await responder.get(f"/incidents/{key}")).text

    itself = await responder.post(f"/reports/clusters/{second}/merge", {"other": f"C-{second}"})
    assert itself.status_code == 422 and 'id="err-other"' in itself.text
    nowhere = await responder.post(f"/reports/clusters/{second}/merge", {"other": "C-999999"})
    assert nowhere.status_code == 422 and "no cluster C-999999" in nowhere.text
    junk = await responder.post(f"/reports/clusters/{second}/merge", {"other": "twelve"})
    assert junk.status_code == 422 and 'id="err-other"' in junk.text
    merged = await responder.post(f"/reports/clusters/{second}/merge", {"other": f"C-{third}"})
    assert merged.status_code == 303
    assert merged.headers["location"] == f"/reports/clusters/{third}"
    source, target = await cluster_of(db, second), await cluster_of(db, third)
    assert source.status is ClusterStatus.MERGED and source.merged_into_id == third
    assert target.reports == 2 and target.reporters == 2
    page = await responder.get(f"/reports/clusters/{third}")
    assert "examp1e.org" in page.text and "LOOK-ALIKE DOMAIN" in page.text


async def test_an_escalated_cluster_offers_the_first_alert_prefilled(
    world: dict[str, Any],
    make_client: Any,
    db: Database,
    panel_settings: Settings,
    clock: FrozenClock,
) -> None:
    bridge = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"
    settings = panel_settings.model_copy(update={"known_contracts": {bridge.lower(): "ETH bridge"}})
    cluster_id = await record(db, settings, f"{bridge} is being drained {HOSTILE}", "m1")
    lead: PanelClient = make_client()
    await lead.login("leo")
    escalated = await lead.post(f"/reports/clusters/{cluster_id}/escalate", {"severity": "P1"})
    assert escalated.status_code == 303
    key = escalated.headers["location"].rsplit("/", 1)[1]

    cm: PanelClient = make_client()
    await cm.login("carol")
    page = await cm.get(f"/reports/clusters/{cluster_id}")
    link = (
        f"/incidents/{key}/drafts/new?template=active-exploit-initial&amp;from_cluster={cluster_id}"
    )
    assert link in page.text
    editor = await cm.get(link.replace("&amp;", "&"))
    assert editor.status_code == 200
    assert bridge in editor.text  # the affected contract, from the reports' entities
    assert "Since 12:00 UTC on 01 January 2026, community members have reported" in editor.text
    assert "elbavig" not in editor.text and "evil.example" not in editor.text  # no reporter words
    missing = await cm.get(f"/incidents/{key}/drafts/new?from_cluster=99999")
    assert missing.status_code == 404
