"""The main journey over HTTP: draft, preview, submit, two approvals, an edit voiding one."""

from __future__ import annotations

import re
from typing import Any

from comms.db import Database
from comms.drafts import service as drafts
from tests.panel.conftest import EXPLOIT_VARS, PanelClient


def _draft_form(world: dict[str, Any], **overrides: str) -> list[tuple[str, str]]:
    values = {**EXPLOIT_VARS, **overrides}
    items = [("template", "active-exploit-initial"), ("incident", world["incident"].key)]
    items += [(f"var.{k}", v) for k, v in values.items()]
    items += [("destinations", "discord-announcements"), ("destinations", "telegram-announcements")]
    return items


async def test_draft_submit_approve_with_quorum_two(
    world: dict[str, Any], make_client: Any, db: Database
) -> None:
    key = world["incident"].key
    cm: PanelClient = make_client()
    assert (await cm.login("carol")).status_code == 303
    page = await cm.get(f"/incidents/{key}/drafts/new?template=active-exploit-initial")
    assert page.status_code == 200, page.text
    preview = await cm.post(
        f"/incidents/{key}/drafts", [*_draft_form(world), ("action", "preview")]
    )
    assert preview.status_code == 200, preview.text
    assert "draining the bridge pool" in preview.text
    assert "msg msg-discord" in preview.text and "msg msg-telegram" in preview.text
    created = await cm.post(f"/incidents/{key}/drafts", [*_draft_form(world), ("action", "submit")])
    assert created.status_code == 303, created.text
    location = created.headers["location"]
    draft_id = int(location.rsplit("/", 1)[1])

    dm1: PanelClient = make_client()
    await dm1.login("dave")
    dash = await dm1.get("/")
    assert f"/drafts/{draft_id}" in dash.text
    view = await dm1.get(location)
    assert view.status_code == 200
    content_hash = re.search(r'name="expected_hash" value="([0-9a-f]{64})"', view.text)
    assert content_hash
    approved = await dm1.post(f"{location}/approve", {"expected_hash": content_hash.group(1)})
    assert approved.status_code == 303, approved.text
    view = await dm1.get(location)
    assert "1 of 2 approvals" in view.text

    # An edit after one approval voids it, and the panel says so.
    edit = await cm.get(f"{location}/edit")
    assert edit.status_code == 200
    form = _draft_form(world, summary="An attacker drained the bridge pool.")
    edited = await cm.post(
        f"{location}/edit", [*form, ("expected_version", "1"), ("action", "save")]
    )
    assert edited.status_code == 303, edited.text
    view = await dm1.get(location)
    assert "0 of 2 approvals" in view.text
    assert "does not count" in view.text

    # Approving with the old hash: a clear conflict, nothing recorded.
    stale = await dm1.post(f"{location}/approve", {"expected_hash": content_hash.group(1)})
    assert stale.status_code == 409
    assert "changed since you loaded it" in stale.text

    new_hash = re.search(r'name="expected_hash" value="([0-9a-f]{64})"', stale.text)
    assert new_hash and new_hash.group(1) != content_hash.group(1)
    assert (
        await dm1.post(f"{location}/approve", {"expected_hash": new_hash.group(1)})
    ).status_code == 303
    dm2: PanelClient = make_client()
    await dm2.login("erin")
    assert (
        await dm2.post(f"{location}/approve", {"expected_hash": new_hash.group(1)})
    ).status_code == 303
    async with db.transaction() as session:
        draft = await drafts.require_draft(session, draft_id=draft_id)
        assert draft.status == "approved"
    deliveries = await dm2.get(f"{location}/deliveries")
    assert "discord-announcements" in deliveries.text
