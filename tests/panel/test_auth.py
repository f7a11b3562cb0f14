"""Login, sessions, cookies, timeouts, two-factor, step-up before approving."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from approvals.app import create_app
from comms.audit.models import AuditEvent
from comms.auth.models import WebSession
from comms.clock import FrozenClock
from comms.db import Database
from comms.drafts.models import Approval
from comms.enums import Role, Severity
from comms.settings import Settings
from comms.users import service as users
from tests.panel.conftest import PanelClient, current_code, enrol_totp


async def _count(db: Database, model: Any) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_login_sets_a_strict_httponly_cookie_and_a_new_id(
    world: dict[str, Any], client: PanelClient, db: Database
) -> None:
    await client.get("/login")
    client.http.cookies.set("comms_session", "attacker-chosen-id")
    response = await client.post(
        "/login", {"username": "carol", "password": "correct horse battery staple"}
    )
    assert response.status_code == 303
    cookie = next(
        h for h in response.headers.get_list("set-cookie") if h.startswith("comms_session=")
    )
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    assert value != "attacker-chosen-id" and len(value) >= 43  # 256 bits, base64url
    async with db.transaction() as session:
        rows = (await session.scalars(select(WebSession))).all()
    assert len(rows) == 1 and rows[0].id_hash != value  # only the hash is stored


async def test_https_cookies_use_the_host_prefix_and_secure(
    world: dict[str, Any], panel_settings: Settings, db: Database
) -> None:
    app = create_app(
        settings=panel_settings.model_copy(update={"secure_cookies": True}), database=db
    )
    client = PanelClient(app)
    client.http.base_url = "https://testserver"  # type: ignore[assignment]
    page = await client.get("/login")
    pre = page.headers["set-cookie"]
    assert pre.startswith("__Host-comms_pre=") and "Secure" in pre and "Domain" not in pre
    assert page.headers["strict-transport-security"].startswith("max-age=31536000")
    response = await client.post(
        "/login", {"username": "carol", "password": "correct horse battery staple"}
    )
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("__Host-comms_session=")
    assert all(part in cookie for part in ("Secure", "HttpOnly", "Path=/", "SameSite=strict"))
    assert "Domain" not in cookie
    await client.aclose()


async def test_wrong_password_and_unknown_user_look_the_same(
    world: dict[str, Any], client: PanelClient, db: Database
) -> None:
    await client.get("/login")
    wrong = await client.post("/login", {"username": "carol", "password": "not the password"})
    unknown = await client.post("/login", {"username": "nobody", "password": "not the password"})
    assert wrong.status_code == unknown.status_code == 401
    assert (
        "Wrong username or password." in wrong.text
        and "Wrong username or password." in unknown.text
    )
    async with db.transaction() as session:
        actions = [e.action for e in (await session.scalars(select(AuditEvent))).all()]
    assert actions.count("auth.login_failed") == 2


async def test_logout_ends_the_session_server_side(
    world: dict[str, Any], client: PanelClient
) -> None:
    await client.login("carol")
    stolen = client.http.cookies.get("comms_session")
    assert (await client.post("/logout")).status_code == 303
    other = PanelClient(client.http._transport.app)  # type: ignore[attr-defined]
    other.http.cookies.set("comms_session", stolen or "")
    response = await other.get("/")
    assert response.status_code == 303 and response.headers["location"].startswith("/login")
    await other.aclose()


async def test_idle_timeout(
    world: dict[str, Any], client: PanelClient, clock: FrozenClock, panel_settings: Settings
) -> None:
    await client.login("carol")
    clock.advance(minutes=panel_settings.session_idle_minutes - 1)
    assert (await client.get("/")).status_code == 200  # activity refreshes the idle timer
    clock.advance(minutes=panel_settings.session_idle_minutes - 1)
    assert (await client.get("/")).status_code == 200
    clock.advance(minutes=panel_settings.session_idle_minutes)
    response = await client.get("/")
    assert response.status_code == 303 and "/login" in response.headers["location"]


async def test_absolute_timeout(
    world: dict[str, Any], client: PanelClient, clock: FrozenClock, panel_settings: Settings
) -> None:
    await client.login("carol")
    for _ in range(panel_settings.session_absolute_hours * 3 - 1):
        clock.advance(minutes=20)
        assert (await client.get("/")).status_code == 200
    clock.advance(minutes=20)
    response = await client.get("/")
    assert response.status_code == 303 and "/login" in response.headers["location"]


@pytest.mark.parametrize("change", ["disable", "roles"])
async def test_disabling_or_changing_roles_ends_sessions(
    world: dict[str, Any], make_client: Any, db: Database, change: str
) -> None:
    dm: PanelClient = make_client()
    await dm.login("dave")
    assert (await dm.get("/")).status_code == 200
    admin: PanelClient = make_client()
    await admin.login("ada")
    target = world["users"]["dm1"].id
    if change == "disable":
        response = await admin.post(f"/admin/users/{target}/active", {"active": "no"})
    else:
        response = await admin.post(
            f"/admin/users/{target}/roles", [("roles", "decision_maker"), ("roles", "scribe")]
        )
    assert response.status_code == 303
    assert (await dm.get("/")).status_code == 303  # back to the login page
    assert (await _count(db, WebSession)) == 1  # only the admin's


async def test_two_factor_required_for_decision_makers(
    world: dict[str, Any], panel_settings: Settings, db: Database, clock: FrozenClock
) -> None:
    settings = panel_settings.model_copy(update={"require_2fa_for": [Role.DECISION_MAKER]})
    app = create_app(settings=settings, database=db)
    client = PanelClient(app)
    response = await client.login("dave")
    assert response.headers["location"] == "/account/2fa"
    # Until enrolled, every other page sends them back to enrolment.
    assert (await client.get("/")).headers["location"] == "/account/2fa"
    assert (await client.get("/drafts")).headers["location"] == "/account/2fa"
    await client.post("/account/2fa/start")
    page = await client.get("/account/2fa")
    assert "<svg" in page.text  # the QR code, rendered here
    secret = re.search(r'<code class="secret">([A-Z2-7]+)</code>', page.text)
    assert secret
    done = await client.post("/account/2fa/confirm", {"code": current_code(secret.group(1))})
    assert done.status_code == 200
    codes = re.findall(r"<li><code>([A-Z0-9]{5}-[A-Z0-9]{5})</code></li>", done.text)
    assert len(codes) == 10
    assert (await client.get("/")).status_code == 200
    async with db.transaction() as session:
        user = await users.require_user(session, username="dave")
        assert user.totp_secret_encrypted and secret.group(1) not in user.totp_secret_encrypted

    # Next login: password, then the code; a used code cannot be replayed.
    await client.post("/logout")
    clock.advance(seconds=30)
    step = await client.login("dave")
    assert step.headers["location"].startswith("/login/totp")
    assert (await client.get("/")).headers["location"] == "/login/totp"
    code = current_code(secret.group(1))
    ok = await client.post("/login/totp", {"code": code})
    assert ok.status_code == 303
    await client.post("/logout")
    await client.login("dave")
    replay = await client.post("/login/totp", {"code": code})
    assert replay.status_code == 401
    recovery = await client.post("/login/totp", {"code": codes[0].lower()})
    assert recovery.status_code == 303
    await client.post("/logout")
    await client.login("dave")
    assert (await client.post("/login/totp", {"code": codes[0]})).status_code == 401
    await client.aclose()


async def _submitted_draft(db: Database, world: dict[str, Any], settings: Settings) -> int:
    from comms.drafts import service as drafts
    from tests.panel.conftest import EXPLOIT_VARS

    async with db.transaction() as session:
        cm = await users.require_user(session, username="carol")
        from comms.incidents import service as incidents

        incident = await incidents.require_incident(session, key=world["incident"].key)
        dest = list(world["destinations"].values())[:2]
        from comms.destinations import service as destinations

        chosen = [await destinations.require_destination(session, name=d.name) for d in dest]
        draft = await drafts.create(
            session,
            incident=incident,
            template="active-exploit-initial",
            variables=EXPLOIT_VARS,
            destinations=chosen,
            actor=cm,
            settings=settings,
        )
        await drafts.submit(session, draft=draft, actor=cm, settings=settings)
        return draft.id


async def test_approving_needs_a_fresh_authentication(
    world: dict[str, Any],
    make_client: Any,
    db: Database,
    clock: FrozenClock,
    panel_settings: Settings,
    app: FastAPI,
) -> None:
    draft_id = await _submitted_draft(db, world, panel_settings)
    dm: PanelClient = make_client()
    await dm.login("dave")
    clock.advance(minutes=panel_settings.stepup_minutes + 1)
    page = await dm.get(f"/drafts/{draft_id}")
    assert "confirm it is you" in page.text and 'name="credential"' in page.text
    content_hash = re.search(r'name="expected_hash" value="([0-9a-f]{64})"', page.text)
    assert content_hash
    # Without the credential, or with a wrong one: a prompt and 0 approvals.
    missing = await dm.post(f"/drafts/{draft_id}/approve", {"expected_hash": content_hash.group(1)})
    assert missing.status_code == 401 and "enter your password" in missing.text
    wrong = await dm.post(
        f"/drafts/{draft_id}/approve",
        {"expected_hash": content_hash.group(1), "credential": "nope"},
    )
    assert wrong.status_code == 401 and "nothing was approved" in wrong.text
    assert await _count(db, Approval) == 0
    async with db.transaction() as session:
        actions = [e.action for e in (await session.scalars(select(AuditEvent))).all()]
    assert "auth.stepup_failed" in actions
    old_cookie = dm.http.cookies.get("comms_session")
    ok = await dm.post(
        f"/drafts/{draft_id}/approve",
        {"expected_hash": content_hash.group(1), "credential": "correct horse battery staple"},
    )
    assert ok.status_code == 303
    assert await _count(db, Approval) == 1
    assert dm.http.cookies.get("comms_session") != old_cookie  # re-authentication rotates the id
    assert (await dm.get(f"/drafts/{draft_id}")).status_code == 200


async def test_step_up_accepts_a_totp_code(
    world: dict[str, Any],
    make_client: Any,
    db: Database,
    clock: FrozenClock,
    panel_settings: Settings,
    app: FastAPI,
) -> None:
    secret = await enrol_totp(db, app, "dave")
    draft_id = await _submitted_draft(db, world, panel_settings)
    dm: PanelClient = make_client()
    await dm.login("dave")
    await dm.post("/login/totp", {"code": current_code(secret)})
    clock.advance(minutes=10)
    page = await dm.get(f"/drafts/{draft_id}")
    content_hash = re.search(r'name="expected_hash" value="([0-9a-f]{64})"', page.text)
    assert content_hash
    ok = await dm.post(
        f"/drafts/{draft_id}/approve",
        {"expected_hash": content_hash.group(1), "credential": current_code(secret)},
    )
    assert ok.status_code == 303
    assert await _count(db, Approval) == 1


async def test_severity_is_shown_on_the_dashboard(
    world: dict[str, Any], client: PanelClient
) -> None:
    await client.login("leo")
    page = await client.get("/")
    assert world["incident"].key in page.text and "P1 critical" in page.text
    assert Severity.P1.value in page.text
