"""Strangers' password guesses never stop an approver who proves possession (issue 9, finding 3).

The attack: about ten anonymous wrong passwords for a Decision Maker's username locked the
account name, and with it the Decision Maker's own step-up in a live session and their API
approval made with a valid token and a valid authenticator code: during an exploit, anyone
could stop the approvers. Guessing stays throttled (and the stranger stays locked out); the
person who proves possession (a session, a token with a code, a browser they signed in from
before) is not, and they and the admins see what happened.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
from fastapi import FastAPI

from comms.clock import FrozenClock
from comms.db import Database
from comms.settings import Settings
from tests.factories import PASSWORD
from tests.panel.conftest import PanelClient, _draft_id_for, current_code, enrol_totp


def _browser(app: FastAPI, ip: str) -> PanelClient:
    browser = PanelClient(app)
    browser.http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(ip, 40000)), base_url="http://testserver"
    )
    return browser


async def _guess(
    app: FastAPI, clock: FrozenClock, username: str, times: int, ip: str = "203.0.113.9"
) -> list[int]:
    """A stranger's wrong passwords, a minute apart (each waits out the slow-down, so the
    account name ends up locked). Returns the statuses; the clock stays at the last guess."""
    stranger = _browser(app, ip)
    await stranger.get("/login")
    statuses = []
    for _ in range(times):
        clock.advance(seconds=61)
        response = await stranger.post("/login", {"username": username, "password": "guess"})
        statuses.append(response.status_code)
    await stranger.aclose()
    assert statuses[-1] == 429, statuses  # locked
    return statuses


async def _hash_on(browser: PanelClient, draft_id: int) -> str:
    page = await browser.get(f"/drafts/{draft_id}")
    shown = re.search(r'name="expected_hash" value="([0-9a-f]{64})"', page.text)
    assert shown, page.text
    return shown.group(1)


async def test_guesses_do_not_stop_a_signed_in_approver(
    world: dict[str, Any],
    app: FastAPI,
    db: Database,
    panel_settings: Settings,
    clock: FrozenClock,
) -> None:
    draft_id = await _draft_id_for(db, world, panel_settings, submit=True)
    dave = _browser(app, "198.51.100.7")
    assert (await dave.login("dave")).status_code == 303
    statuses = await _guess(app, clock, "dave", 12)  # 12 minutes: approving needs a step-up
    assert statuses.count(401) == 10  # ten guesses evaluated, then locked
    content_hash = await _hash_on(dave, draft_id)
    approved = await dave.post(
        f"/drafts/{draft_id}/approve", {"expected_hash": content_hash, "credential": PASSWORD}
    )
    assert approved.status_code == 303, approved.text
    # The stranger is still locked out, even with the right password.
    stranger = _browser(app, "203.0.113.9")
    await stranger.get("/login")
    locked = await stranger.post("/login", {"username": "dave", "password": PASSWORD})
    assert locked.status_code == 429 and "locked" in locked.text
    await stranger.aclose()
    await dave.aclose()


async def test_guesses_do_not_stop_an_api_approval_with_a_token_and_a_code(
    world: dict[str, Any],
    app: FastAPI,
    db: Database,
    panel_settings: Settings,
    token_for: Any,
    clock: FrozenClock,
) -> None:
    secret = await enrol_totp(db, app, "dave")
    draft_id = await _draft_id_for(db, world, panel_settings, submit=True)
    headers = await token_for("dave", "read", "approve")
    assert 429 in await _guess(app, clock, "dave", 12)
    clock.advance(seconds=30)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as api:
        shown = (await api.get(f"/api/v1/drafts/{draft_id}", headers=headers)).json()
        approved = await api.post(
            f"/api/v1/drafts/{draft_id}/approve",
            json={"expected_hash": shown["content_hash"]},
            headers={**headers, "X-Comms-TOTP": current_code(secret)},
        )
    assert approved.status_code == 200, approved.text


async def test_a_browser_that_signed_in_before_is_not_locked_out(
    world: dict[str, Any], app: FastAPI, clock: FrozenClock
) -> None:
    """OWASP's device cookie: the lock applies to unrecognised browsers; dave's own browser
    keeps its own, separate budget of attempts (a delay if he mistypes, not a denial)."""
    dave = _browser(app, "198.51.100.7")
    assert (await dave.login("dave")).status_code == 303
    await dave.post("/logout", {})
    assert 429 in await _guess(app, clock, "dave", 12)
    again = await dave.login("dave")
    assert again.status_code == 303, again.text
    await dave.aclose()


async def test_guessing_from_one_source_is_throttled_across_accounts(
    world: dict[str, Any], app: FastAPI
) -> None:
    """Spraying one password over many usernames from one address: the source slows down, while
    the same accounts stay open to everyone else."""
    sprayer = _browser(app, "203.0.113.50")
    await sprayer.get("/login")
    statuses = [
        (await sprayer.post("/login", {"username": f"user{i}", "password": "guess"})).status_code
        for i in range(40)
    ]
    assert statuses[:20] == [401] * 20
    assert 429 in statuses[20:]
    other = _browser(app, "198.51.100.8")
    assert (await other.login("carol")).status_code == 303
    await sprayer.aclose()
    await other.aclose()


async def test_the_user_and_the_admins_see_what_happened(
    world: dict[str, Any], app: FastAPI, db: Database, clock: FrozenClock
) -> None:
    assert 429 in await _guess(app, clock, "dave", 12)
    clock.advance(minutes=20)  # the lock on unrecognised browsers has ended
    dave = _browser(app, "198.51.100.7")
    assert (await dave.login("dave")).status_code == 303
    dashboard = await dave.get("/")
    assert "failed sign-in attempts" in dashboard.text
    assert "203.0.113.9" in dashboard.text
    admin = _browser(app, "198.51.100.9")
    await admin.login("ada")
    users_page = await admin.get("/admin/users")
    assert re.search(r"dave.*?1[0-9] failed", users_page.text, re.DOTALL), users_page.text
    await dave.aclose()
    await admin.aclose()
