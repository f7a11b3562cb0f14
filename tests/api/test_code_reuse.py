"""An authenticator code, once checked, is used up whatever happens next (issue 9, finding 4).

The attack: an approval whose code was checked fails afterwards (409, the draft changed), the
transaction rolls back, the code's consumption with it, and the same code then approves.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from comms.clock import FrozenClock
from comms.db import Database
from comms.drafts.models import Approval
from comms.settings import Settings
from tests.panel.conftest import PanelClient, _draft_id_for, current_code, enrol_totp

STALE = "0" * 64


async def _approvals(db: Database) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(Approval)) or 0)


async def test_api_code_is_spent_by_a_failed_approval(
    world: dict[str, Any],
    app: FastAPI,
    db: Database,
    panel_settings: Settings,
    token_for: Any,
    clock: FrozenClock,
) -> None:
    secret = await enrol_totp(db, app, "dave")
    draft_id = await _draft_id_for(db, world, panel_settings, submit=True)
    dm = await token_for("dave", "read", "approve")
    clock.advance(seconds=30)
    code = current_code(secret)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as api:
        shown = (await api.get(f"/api/v1/drafts/{draft_id}", headers=dm)).json()
        stale = await api.post(
            f"/api/v1/drafts/{draft_id}/approve",
            json={"expected_hash": STALE},
            headers={**dm, "X-Comms-TOTP": code},
        )
        assert stale.status_code == 409
        replay = await api.post(
            f"/api/v1/drafts/{draft_id}/approve",
            json={"expected_hash": shown["content_hash"]},
            headers={**dm, "X-Comms-TOTP": code},
        )
    assert replay.status_code == 403, replay.text
    assert await _approvals(db) == 0


async def test_panel_code_is_spent_by_a_failed_approval(
    world: dict[str, Any],
    app: FastAPI,
    db: Database,
    panel_settings: Settings,
    make_client: Any,
    clock: FrozenClock,
) -> None:
    secret = await enrol_totp(db, app, "dave")
    draft_id = await _draft_id_for(db, world, panel_settings, submit=True)
    # Dave in two browsers, both signed in long enough ago that approving needs a step-up.
    first: PanelClient = make_client()
    second: PanelClient = make_client()
    for browser in (first, second):
        clock.advance(seconds=30)
        await browser.login("dave")
        await browser.post("/login/totp", {"code": current_code(secret)})
    clock.advance(minutes=10)
    page = await second.get(f"/drafts/{draft_id}")
    shown = re.search(r'name="expected_hash" value="([0-9a-f]{64})"', page.text)
    assert shown
    await first.get(f"/drafts/{draft_id}")
    code = current_code(secret)
    stale = await first.post(
        f"/drafts/{draft_id}/approve", {"expected_hash": STALE, "credential": code}
    )
    assert stale.status_code == 409
    replay = await second.post(
        f"/drafts/{draft_id}/approve", {"expected_hash": shown.group(1), "credential": code}
    )
    assert replay.status_code == 401, replay.status_code
    assert "not valid" in replay.text
    assert await _approvals(db) == 0
