"""Corrections from the panel and the API (issue 9, finding 7), with the CLI's rules: the same
incident, a published original, and through approval; the review page shows the original next
to the correction."""

from __future__ import annotations

import re

import httpx
from pydantic import SecretStr

from approvals.app import create_app
from comms.auth import tokens
from comms.db import Database
from comms.drafts import service as drafts
from comms.outbox.worker import Worker
from comms.settings import Settings
from comms.users import service as users
from tests.panel.conftest import PanelClient
from tests.publishing.conftest import World, approved_draft

CORRECTION = {
    "original_posted_at": "2026-01-01T12:00Z",
    "original_summary": "our alert about the bridge",
    "wrong": "It said the ETH bridge was drained.",
    "correct": "Only the USDC pool of the bridge was affected.",
}


def _panel(db: Database, settings: Settings) -> PanelClient:
    chosen = settings.model_copy(
        update={
            "secret_key": SecretStr("panel-corrections-test-secret-0123456789abc"),
            "require_2fa_for": [],
        }
    )
    return PanelClient(create_app(settings=chosen, database=db))


async def test_the_panel_writes_a_correction_of_a_published_announcement(
    db: Database, pub_settings: Settings, world: World, worker: Worker
) -> None:
    original = await approved_draft(db, world, pub_settings)
    await worker.run_until_settled(within=30)
    cm = _panel(db, pub_settings)
    try:
        assert (await cm.login("carol")).status_code == 303
        page = await cm.get(f"/drafts/{original.id}")
        link = re.search(
            r'href="(/incidents/[^"]+/drafts/new\?template=correction&amp;correction_of=\d+)"',
            page.text,
        )
        assert link, page.text
        editor = await cm.get(link.group(1).replace("&amp;", "&"))
        assert editor.status_code == 200
        assert f'name="correction_of" value="{original.id}"' in editor.text
        form = [("template", "correction"), ("correction_of", str(original.id))]
        form += [(f"var.{k}", v) for k, v in CORRECTION.items()]
        form += [("destinations", "dc-announcements"), ("destinations", "tg-announcements")]
        created = await cm.post(
            f"/incidents/{world.incident.key}/drafts", [*form, ("action", "submit")]
        )
        assert created.status_code == 303, created.text
        review = await cm.get(created.headers["location"])
        assert f"Corrects draft #{original.id}" in review.text
        assert "The announcement it corrects" in review.text
        assert "draining the ETH bridge" in review.text  # the original's text, side by side
        assert "Only the USDC pool" in review.text
        correction_id = int(created.headers["location"].rsplit("/", 1)[1])
        async with db.transaction() as session:
            made = await drafts.require_draft(session, draft_id=correction_id)
            assert made.correction_of_id == original.id and made.status == "in_review"
        # Same rules as the CLI: a correction names a published announcement.
        bad = await cm.post(
            f"/incidents/{world.incident.key}/drafts",
            [
                ("template", "correction"),
                ("correction_of", "999999"),
                *form[2:],
                ("action", "save"),
            ],
        )
        assert bad.status_code == 404 and "correction_of" in bad.text
        missing = await cm.post(
            f"/incidents/{world.incident.key}/drafts",
            [("template", "correction"), *form[2:], ("action", "save")],
        )
        assert missing.status_code == 422 and "correction of" in missing.text
    finally:
        await cm.aclose()


async def test_the_api_writes_a_correction(
    db: Database, pub_settings: Settings, world: World, worker: Worker
) -> None:
    original = await approved_draft(db, world, pub_settings)
    await worker.run_until_settled(within=30)
    pending = await approved_draft(db, world, pub_settings, to=("dc_news",))
    async with db.transaction() as session:
        carol = await users.require_user(session, username=world.team["cm"].username)
        raw, _t = await tokens.create(
            session,
            user=carol,
            name="t",
            scopes=[tokens.Scope.READ, tokens.Scope.DRAFT],
            actor=None,
        )
    app = create_app(
        settings=pub_settings.model_copy(
            update={"secret_key": SecretStr("api-corrections-test-secret-0123456789abcd")}
        ),
        database=db,
    )
    body = {
        "incident": world.incident.key,
        "template": "correction",
        "variables": CORRECTION,
        "destinations": ["dc-announcements"],
        "correction_of": original.id,
    }
    headers = {"Authorization": f"Bearer {raw}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as api:
        made = await api.post("/api/v1/drafts", json=body, headers=headers)
        assert made.status_code == 201, made.text
        assert made.json()["correction_of"] == original.id
        not_published = await api.post(
            "/api/v1/drafts", json={**body, "correction_of": pending.id}, headers=headers
        )
        assert not_published.status_code == 422
        assert not_published.json()["error"]["field"] == "correction_of"
