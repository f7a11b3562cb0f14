"""Every page does its job over HTTP: incidents, the Incident Log, admin, audit, bad input."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, select, text

from comms.audit.models import AuditEvent
from comms.db import Database
from comms.incidents.models import Incident
from comms.settings import Settings
from tests.panel.conftest import PanelClient, _draft_id_for


async def test_incident_pages_and_log(world: dict[str, Any], make_client: Any) -> None:
    key = world["incident"].key
    lead: PanelClient = make_client()
    await lead.login("leo")
    page = await lead.get(f"/incidents/{key}")
    assert page.status_code == 200 and "Incident Log" in page.text
    # The role list names the policy's roles (it once showed a Python method's repr).
    assert '<option value="incident_leader">Incident Leader</option>' in page.text
    assert "built-in method" not in page.text
    ok = await lead.post(f"/incidents/{key}/severity", {"severity": "P2", "rationale": "Contained"})
    assert ok.status_code == 303
    missing = await lead.post(f"/incidents/{key}/severity", {"severity": "P1", "rationale": ""})
    assert missing.status_code == 422 and "rationale" in missing.text
    assert (
        await lead.post(f"/incidents/{key}/status", {"status": "investigating"})
    ).status_code == 303
    bad_move = await lead.post(f"/incidents/{key}/status", {"status": "detected"})
    assert bad_move.status_code == 409 and "cannot go from investigating" in bad_move.text
    assign = await lead.post(f"/incidents/{key}/assign", {"role": "scribe", "username": "sam"})
    assert assign.status_code == 303
    decision = await lead.post(
        f"/incidents/{key}/log", {"kind": "decision", "text": "Pause bridge"}
    )
    assert decision.status_code == 422 and "rationale" in decision.text
    logged = await lead.post(
        f"/incidents/{key}/log", {"kind": "action", "text": "Pause the bridge", "owner": "leo"}
    )
    assert logged.status_code == 303
    page = await lead.get(f"/incidents/{key}")
    assert "Pause the bridge" in page.text and "Severity P1 → P2" in page.text
    export = await lead.get(f"/incidents/{key}/export.md")
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/markdown")
    assert "attachment" in export.headers["content-disposition"]
    assert "## Timeline" in export.text and "Pause the bridge" in export.text

    # Acknowledging a hand-off that nobody offered is refused with a clear message.
    scribe: PanelClient = make_client()
    await scribe.login("sam")
    refused = await scribe.post(f"/incidents/{key}/ack")
    assert refused.status_code == 409  # nothing pending


async def test_open_incident_form_bad_input(
    world: dict[str, Any], client: PanelClient, db: Database
) -> None:
    await client.login("carol")
    async with db.transaction() as session:
        before = await session.scalar(select(func.count()).select_from(Incident))
    too_long = await client.post("/incidents", {"title": "x" * 250, "severity": "P1"})
    assert too_long.status_code == 422 and "the limit is 200" in too_long.text
    assert 'value="' + "x" * 250 in too_long.text  # what was typed is kept
    bad_sev = await client.post("/incidents", {"title": "Frontend down", "severity": "P9"})
    assert bad_sev.status_code == 422 and "not a severity" in bad_sev.text
    oversized = await client.post("/incidents", {"title": "x" * 400, "severity": "P1"})
    assert oversized.status_code == 422 and "title" in oversized.text
    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Incident)) == before
    created = await client.post("/incidents", {"title": "Frontend down", "severity": "p2"})
    assert created.status_code == 303 and created.headers["location"].startswith("/incidents/INC-")


async def test_unknown_ids_and_wrong_types(world: dict[str, Any], client: PanelClient) -> None:
    await client.login("ada")
    for path in (
        "/drafts/424242",
        "/incidents/INC-1999-0001",
        "/admin/users/99999",
        "/drafts/424242/deliveries",
    ):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert "no " in response.text.lower()
    wrong = await client.get("/drafts/abc")
    assert wrong.status_code == 422 and "draft_id" in wrong.text
    # Beyond any row id (ids are 32-bit on PostgreSQL): refused, never a driver overflow.
    huge = "99999999999999999999"
    for path, name in (
        (f"/drafts/{huge}", "draft_id"),
        (f"/drafts/{huge}/deliveries", "draft_id"),
        (f"/admin/users/{huge}", "user_id"),
        (f"/audit?before={huge}", "before"),
    ):
        response = await client.get(path)
        assert response.status_code == 422, (path, response.status_code)
        assert name in response.text, path
    for path in (f"/deliveries/{huge}/retry", f"/admin/destinations/{huge}/compromised"):
        refused = await client.post(path, {})
        assert refused.status_code == 422, (path, refused.status_code)
    assert (await client.get("/no/such/page")).status_code == 404


async def test_draft_editor_bad_input_keeps_the_form(
    world: dict[str, Any], client: PanelClient, db: Database, panel_settings: Settings
) -> None:
    await client.login("carol")
    key = world["incident"].key
    form = [
        ("template", "active-exploit-initial"),
        ("var.summary", "x" * 2000),
        ("var.funds_status", "maybe"),
        ("var.next_update", "tomorrow"),
        ("destinations", "discord-announcements"),
        ("action", "save"),
    ]
    response = await client.post(f"/incidents/{key}/drafts", form)
    assert response.status_code == 422
    for field in ("summary", "funds status", "next update", "affected"):
        assert f"<strong>{field}</strong>" in response.text, field
    none_chosen = await client.post(
        f"/incidents/{key}/drafts",
        [("template", "custom"), ("var.message", "hello"), ("action", "save")],
    )
    assert none_chosen.status_code == 422 and "choose at least one destination" in none_chosen.text
    draft_id = await _draft_id_for(db, world, panel_settings, submit=False)
    stale = await client.post(
        f"/drafts/{draft_id}/edit",
        [
            ("expected_version", "7"),
            ("var.summary", "s"),
            ("var.affected", "a"),
            ("var.funds_status", "safe"),
            ("var.next_update", "2030-01-01T10:00Z"),
            ("destinations", "discord-announcements"),
            ("action", "save"),
        ],
    )
    assert stale.status_code == 409 and "reload" in stale.text
    withdraw = await client.post(f"/drafts/{draft_id}/withdraw", {"reason": ""})
    assert withdraw.status_code == 422
    submitted = await client.post(f"/drafts/{draft_id}/submit")
    assert submitted.status_code == 303
    again = await client.post(f"/drafts/{draft_id}/submit")
    assert again.status_code == 409 and "in_review" in again.text


async def test_reject_needs_a_reason(
    world: dict[str, Any], make_client: Any, db: Database, panel_settings: Settings
) -> None:
    draft_id = await _draft_id_for(db, world, panel_settings, submit=True)
    dm: PanelClient = make_client()
    await dm.login("dave")
    page = await dm.get(f"/drafts/{draft_id}")
    content_hash = re.search(r'name="expected_hash" value="([0-9a-f]{64})"', page.text)
    assert content_hash
    empty = await dm.post(
        f"/drafts/{draft_id}/reject", {"reason": " ", "expected_hash": content_hash.group(1)}
    )
    assert empty.status_code == 422 and "needs a reason" in empty.text
    ok = await dm.post(
        f"/drafts/{draft_id}/reject",
        {"reason": "Name the bridge", "expected_hash": content_hash.group(1)},
    )
    assert ok.status_code == 303
    cm: PanelClient = make_client()
    await cm.login("carol")
    mine = await cm.get("/")
    assert "rejected" in mine.text
    assert "Rejected: Name the bridge" in (await cm.get(f"/drafts/{draft_id}")).text
    # The author cannot approve; the page offers no decision to them.
    assert "Approve version" not in (await cm.get(f"/drafts/{draft_id}")).text


async def test_admin_users_tokens_destinations_audit(
    world: dict[str, Any], client: PanelClient, db: Database
) -> None:
    await client.login("ada")
    created = await client.post(
        "/admin/users",
        [
            ("username", "nina"),
            ("display_name", "Nina"),
            ("password", "a long enough passphrase"),
            ("roles", "decision_maker"),
        ],
    )
    assert created.status_code == 303
    dup = await client.post(
        "/admin/users",
        [("username", "nina"), ("password", "another passphrase"), ("roles", "scribe")],
    )
    assert dup.status_code == 409 and "already exists" in dup.text
    short = await client.post(
        "/admin/users", [("username", "olga"), ("password", "short"), ("roles", "scribe")]
    )
    assert short.status_code == 422 and "at least 12" in short.text
    token_page = await client.post(
        "/admin/tokens", [("username", "nina"), ("name", "bot"), ("scopes", "read")]
    )
    assert token_page.status_code == 200
    raw = re.search(
        r'<code class="secret" id="new-token">(cmt_[A-Za-z0-9_-]+)</code>', token_page.text
    )
    assert raw
    listing = await client.get("/admin/tokens")
    assert raw.group(1) not in listing.text and raw.group(1)[:12] in listing.text
    dest = await client.post(
        "/admin/destinations",
        {
            "name": "tg-news",
            "platform": "telegram",
            "target": "@newsroom",
            "visibility": "public",
            "crosspost": "on",
        },
    )
    assert dest.status_code == 422 and "exists only on Discord" in dest.text
    dest_id = world["destinations"]["telegram"].id
    compromised = await client.post(
        f"/admin/destinations/{dest_id}/compromised", {"reason": "Admin account phished"}
    )
    assert compromised.status_code == 303
    assert "COMPROMISED" in (await client.get("/admin/destinations")).text
    audit = await client.get("/audit")
    assert "Chain intact" in audit.text and "destination.compromised" in audit.text
    async with db.transaction() as session:
        event = await session.scalar(select(AuditEvent).where(AuditEvent.action == "user.create"))
        assert event is not None
    # Tamper as someone with database access would: past the append-only guard.
    async with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
        else:
            await conn.execute(text("DROP TRIGGER IF EXISTS audit_events_no_update"))
        await conn.execute(
            text(f"UPDATE audit_events SET actor = 'mallory' WHERE seq = {event.seq}")
        )
        if conn.dialect.name == "postgresql":
            await conn.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))
    tampered = await client.get("/audit")
    assert "Chain BROKEN" in tampered.text and f"#{event.seq}" in tampered.text
