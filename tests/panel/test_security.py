"""Deny by default (the route × role matrix built from the app), CSRF on every unsafe route,
no writes on GET, and the security headers on every response."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from approvals.app import create_app, route_table
from approvals.rules import Gate, rule_of
from approvals.security import HEADERS
from comms.auth import tokens
from comms.db import Database
from comms.enums import Role
from comms.models import Base
from comms.permissions import ALLOWED
from comms.settings import Settings
from comms.users import grants
from tests.factories import make_user
from tests.panel.conftest import PanelClient, _draft_id_for

ROLES: dict[str, str | None] = {
    "anonymous": None,
    "responder": "rita",
    "scribe": "sam",
    "comms_manager": "carol",
    "decision_maker": "dave",
    "incident_leader": "leo",
    "admin": "ada",
}
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


def _fill(path: str, ids: dict[str, Any]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: str(ids[m.group(1)]), path)


@pytest.fixture
async def ids(world: dict[str, Any], db: Database, panel_settings: Settings) -> dict[str, Any]:
    draft_id = await _draft_id_for(db, world, panel_settings, submit=True)
    published = await _draft_id_for(db, world, panel_settings, submit=True)
    async with db.transaction() as session:
        from comms.drafts import service as drafts
        from comms.outbox import service as outbox

        for approver in ("dm1", "dm2"):
            draft = await drafts.require_draft(session, draft_id=published)
            await drafts.approve(
                session, draft=draft, actor=world["users"][approver], settings=panel_settings
            )
        delivery_id = (await outbox.for_draft(session, draft_id=published))[0].id
    async with db.transaction() as session:
        victim = await make_user(session, "victor", Role.RESPONDER)
        grant = await grants.request(
            session,
            user=victim,
            role=Role.DECISION_MAKER,
            actor=world["users"]["admin"],
            settings=panel_settings,
        )
        _raw, token = await tokens.create(
            session, user=victim, name="victim", scopes=[tokens.Scope.READ], actor=None
        )
        tokens_by_role: dict[str, str] = {}
        for role, username in ROLES.items():
            if username is None:
                continue
            user = world["users"][
                {
                    "rita": "responder",
                    "sam": "scribe",
                    "carol": "cm",
                    "dave": "dm1",
                    "leo": "lead",
                    "ada": "admin",
                }[username]
            ]
            raw, _t = await tokens.create(
                session, user=user, name=f"{role}-all", scopes=list(tokens.Scope), actor=None
            )
            tokens_by_role[role] = raw
    async with db.transaction() as session:
        from comms.detections import service as detections
        from comms.detections.models import DetectionSource

        report, _ = await detections.record(
            session,
            detections.Report(source=DetectionSource.DISCORD, text="drainer", reporter_id="m1"),
            settings=panel_settings,
        )
    async with db.transaction() as session:
        from comms.incidents import service as incidents
        from comms.incidents import tasks

        given = await tasks.assign_task(
            session,
            incident=await incidents.require_incident(session, key=world["incident"].key),
            title="Pause the bridge",
            owner=world["users"]["responder"],
            actor=world["users"]["lead"],
        )
    return {
        "task_id": given.task.id,
        "cluster_id": report.cluster_id,
        "key": world["incident"].key,
        "draft_id": draft_id,
        "delivery_id": delivery_id,
        "user_id": victim.id,
        "destination_id": world["destinations"]["responders"].id,
        "token_id": token.id,
        "grant_id": grant.id,
        "name": "custom",
        "tokens": tokens_by_role,
    }


def test_every_route_declares_a_rule(app: FastAPI) -> None:
    missing = [
        (m, p)
        for m, p, endpoint in route_table(app)
        if p != "/openapi.json" and rule_of(endpoint) is None
    ]
    assert missing == []


async def test_a_route_without_a_rule_is_refused(panel_settings: Settings, db: Database) -> None:
    app = create_app(settings=panel_settings, database=db)

    @app.get("/forgotten")
    async def forgotten() -> dict[str, str]:
        return {"secret": "data"}

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        response = await http.get("/forgotten")
    assert response.status_code == 403 and "secret" not in response.text


async def test_route_role_matrix(
    world: dict[str, Any], ids: dict[str, Any], make_client: Any, app: FastAPI
) -> None:
    table = sorted(route_table(app), key=lambda r: (r[1] == "/logout", r[1], r[0]))
    clients: dict[str, PanelClient] = {}
    for role, username in ROLES.items():
        clients[role] = make_client()
        if username:
            await clients[role].login(username)
    checked = 0
    for method, path, endpoint in table:
        rule = rule_of(endpoint)
        if rule is None:  # /openapi.json: public documentation
            continue
        url = _fill(path, ids)
        api = path.startswith("/api/")
        for role, username in ROLES.items():
            browser = clients[role]
            if api:
                headers = {"Authorization": f"Bearer {ids['tokens'][role]}"} if username else {}
                response = await browser.http.request(method, url, headers=headers)
            elif method == "GET":
                response = await browser.get(url)
            else:
                response = await browser.post(url, {})
            checked += 1
            where = f"{method} {path} as {role}: {response.status_code}"
            to_login = response.status_code == 303 and response.headers.get(
                "location", ""
            ).startswith("/login?next=")
            if rule.gate is Gate.PUBLIC:
                assert response.status_code != 403, where
                continue
            if username is None:
                assert response.status_code == 401 or to_login, where
                continue
            allowed = rule.gate is not Gate.ACTION or (
                rule.action is not None and Role(role) in ALLOWED[rule.action]
            )
            if allowed:
                denied_by_rule = response.status_code == 403 and (
                    "permission." in response.text or "token.scope" in response.text
                )
                assert not denied_by_rule and response.status_code != 401 and not to_login, where
            else:
                assert response.status_code == 403, where
                assert "permission." in response.text, where
    print(f"\nFIGURE matrix: {checked} (route, role) requests checked")


async def _counts(db: Database) -> dict[str, int]:
    async with db.transaction() as session:
        return {
            t.name: int(await session.scalar(select(func.count()).select_from(t)) or 0)
            for t in Base.metadata.sorted_tables
        }


async def _omni(db: Database) -> None:
    async with db.transaction() as session:
        await make_user(session, "omni", *Role)


async def test_unsafe_panel_routes_need_a_csrf_token(
    world: dict[str, Any], ids: dict[str, Any], make_client: Any, app: FastAPI, db: Database
) -> None:
    await _omni(db)
    victim: PanelClient = make_client()
    await victim.login("omni")
    other: PanelClient = make_client()
    await other.login("carol")
    before = await _counts(db)
    unsafe = [(m, p) for m, p, _e in route_table(app) if m in UNSAFE and not p.startswith("/api/")]
    assert len(unsafe) > 25
    for method, path in unsafe:
        url = _fill(path, ids)
        attempts = {
            "no token": await victim.post(url, {}, csrf=False),
            "another session's token": await victim.post(
                url, {"csrf_token": other.csrf}, csrf=False
            ),
            "cross-site fetch": await victim.post(
                url, {}, headers={"Sec-Fetch-Site": "cross-site"}
            ),
            "foreign origin": await victim.post(
                url, {}, headers={"Origin": "https://evil.example"}
            ),
        }
        for label, response in attempts.items():
            assert response.status_code == 403, f"{method} {path} with {label}"
            assert "csrf" in response.text, f"{method} {path} with {label}"
    anonymous: PanelClient = make_client()
    await anonymous.get("/login")
    login = await anonymous.post("/login", {"username": "omni", "password": "x"}, csrf=False)
    assert login.status_code == 403
    after = await _counts(db)
    assert {k: v for k, v in after.items() if k != "web_sessions"} == {
        k: v for k, v in before.items() if k != "web_sessions"
    }


async def test_get_routes_write_nothing(
    world: dict[str, Any], ids: dict[str, Any], make_client: Any, app: FastAPI, db: Database
) -> None:
    await _omni(db)
    browser: PanelClient = make_client()
    await browser.login("omni")
    async with db.transaction() as session:
        from comms.users import service as users

        omni = await users.require_user(session, username="omni")
        raw, _t = await tokens.create(
            session, user=omni, name="all", scopes=list(tokens.Scope), actor=None
        )
    before = await _counts(db)
    gets = [p for m, p, _e in route_table(app) if m == "GET"]
    for path in gets:
        url = _fill(path, ids)
        response = await browser.http.get(url, headers={"Authorization": f"Bearer {raw}"})
        assert response.status_code < 500, f"GET {path}: {response.status_code}"
    assert await _counts(db) == before


async def test_security_headers_on_every_kind_of_response(
    world: dict[str, Any], ids: dict[str, Any], client: PanelClient, app: FastAPI
) -> None:
    await client.login("ada")
    responses = [
        await client.get("/"),
        await client.get("/login"),
        await client.get("/nowhere"),
        await client.get("/static/panel.css"),
        await client.get("/openapi.json"),
        await client.get("/api/v1/incidents"),
        await client.get("/drafts/999999"),
        await client.post("/drafts/1/approve", {}, csrf=False),
        await client.http.post(
            "/login",
            content=b"x" * 2_000_000,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
    ]
    for response in responses:
        for name, value in HEADERS.items():
            assert response.headers.get(name) == value, (response.url, name)
        csp = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
    assert responses[-1].status_code == 413


async def test_pages_have_no_inline_script(
    world: dict[str, Any], ids: dict[str, Any], client: PanelClient, app: FastAPI, db: Database
) -> None:
    await _omni(db)
    await client.login("omni")
    for method, path, _e in route_table(app):
        if method != "GET" or path.startswith("/api/") or path == "/openapi.json":
            continue
        response = await client.get(_fill(path, ids))
        scripts = re.findall(r"<script\b[^>]*>", response.text)
        assert all('src="/static/' in s for s in scripts), (path, scripts)
        assert not re.search(r"\son[a-z]+\s*=", response.text), path


async def test_script_requests_use_the_csrf_header(world: dict[str, Any], make_client: Any) -> None:
    """The live preview posts with X-CSRF-Token (the enhancement path), checked the same way."""
    browser: PanelClient = make_client()
    await browser.login("carol")
    await browser.get(f"/incidents/{world['incident'].key}/drafts/new?template=custom")
    form = {"incident": world["incident"].key, "template": "custom", "var.message": "Hello"}
    good = await browser.post(
        "/drafts/preview", form, csrf=False, headers={"X-CSRF-Token": browser.csrf}
    )
    assert good.status_code == 200 and "msg-discord" in good.text
    bad = await browser.post(
        "/drafts/preview", form, csrf=False, headers={"X-CSRF-Token": "0" * 64}
    )
    assert bad.status_code == 403
