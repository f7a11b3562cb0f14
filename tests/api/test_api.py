"""The JSON API: bearer tokens with scopes AND roles, drafts through their life, errors."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from comms.clock import FrozenClock
from comms.db import Database
from comms.drafts.models import Approval, Draft
from tests.panel.conftest import EXPLOIT_VARS, current_code, enrol_totp


def _draft_body(world: dict[str, Any], **variables: str) -> dict[str, Any]:
    return {
        "incident": world["incident"].key,
        "template": "active-exploit-initial",
        "variables": {**EXPLOIT_VARS, **variables},
        "destinations": ["discord-announcements", "telegram-announcements"],
    }


async def test_requests_need_a_valid_token(
    world: dict[str, Any], api: httpx.AsyncClient, token_for: Any
) -> None:
    assert (await api.get("/api/v1/incidents")).status_code == 401
    bad = await api.get("/api/v1/incidents", headers={"Authorization": "Bearer cmt_nope"})
    assert bad.status_code == 401 and bad.headers["www-authenticate"].startswith("Bearer")
    assert bad.json()["error"]["code"] == "unauthenticated"
    ok = await api.get("/api/v1/incidents", headers=await token_for("carol", "read"))
    assert ok.status_code == 200 and ok.json()[0]["key"] == world["incident"].key


async def test_scope_and_role_both_apply(
    world: dict[str, Any], api: httpx.AsyncClient, token_for: Any
) -> None:
    read_only = await token_for("carol", "read")
    refused = await api.post("/api/v1/drafts", json=_draft_body(world), headers=read_only)
    assert refused.status_code == 403 and refused.json()["error"]["rule"] == "token.scope"
    wrong_role = await token_for("dave", "draft")
    refused = await api.post("/api/v1/drafts", json=_draft_body(world), headers=wrong_role)
    assert refused.status_code == 403
    assert refused.json()["error"]["rule"] == "permission.draft.write"


async def test_draft_life_through_the_api(
    world: dict[str, Any],
    api: httpx.AsyncClient,
    token_for: Any,
    db: Database,
    app: FastAPI,
    clock: FrozenClock,
) -> None:
    cm = await token_for("carol", "read", "draft")
    created = await api.post("/api/v1/drafts", json=_draft_body(world), headers=cm)
    assert created.status_code == 201, created.text
    draft = created.json()
    assert draft["status"] == "draft" and len(draft["content_hash"]) == 64
    draft_id = draft["id"]
    submitted = await api.post(f"/api/v1/drafts/{draft_id}/submit", headers=cm)
    assert submitted.json()["status"] == "in_review"

    # Approving needs the approve scope, the role, the reviewed hash and a TOTP code.
    dm_secret = await enrol_totp(db, app, "dave")
    dm = await token_for("dave", "read", "approve")
    body = {"expected_hash": draft["content_hash"]}
    no_code = await api.post(f"/api/v1/drafts/{draft_id}/approve", json=body, headers=dm)
    assert no_code.status_code == 403 and no_code.json()["error"]["field"] == "X-Comms-TOTP"
    clock.advance(seconds=30)
    wrong = await api.post(
        f"/api/v1/drafts/{draft_id}/approve", json=body, headers={**dm, "X-Comms-TOTP": "000000"}
    )
    assert wrong.status_code == 403
    unenrolled = await token_for("erin", "approve")
    refused = await api.post(
        f"/api/v1/drafts/{draft_id}/approve",
        json=body,
        headers={**unenrolled, "X-Comms-TOTP": "123456"},
    )
    assert refused.status_code == 403 and "enrol TOTP" in refused.json()["error"]["message"]
    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Approval)) == 0

    ok = await api.post(
        f"/api/v1/drafts/{draft_id}/approve",
        json=body,
        headers={**dm, "X-Comms-TOTP": current_code(dm_secret)},
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["quorum"] == {"needed": 2, "have": 1, "met": False, "blocked": None}

    # A stale version: the edit voids the approval; approving the old hash is a conflict.
    edited = await api.patch(
        f"/api/v1/drafts/{draft_id}",
        headers=cm,
        json={"expected_version": 1, "variables": {**EXPLOIT_VARS, "affected": "Both bridges"}},
    )
    assert edited.status_code == 200 and edited.json()["version"] == 2
    assert edited.json()["quorum"]["have"] == 0
    stale_edit = await api.patch(
        f"/api/v1/drafts/{draft_id}",
        headers=cm,
        json={"expected_version": 1, "variables": EXPLOIT_VARS},
    )
    assert stale_edit.status_code == 409 and stale_edit.json()["error"]["field"] == "version"
    clock.advance(seconds=30)
    stale = await api.post(
        f"/api/v1/drafts/{draft_id}/approve",
        json=body,
        headers={**dm, "X-Comms-TOTP": current_code(dm_secret)},
    )
    assert stale.status_code == 409
    assert stale.json()["error"]["field"] == "content_hash"
    assert "changed since you loaded it" in stale.json()["error"]["message"]

    reject = await api.post(
        f"/api/v1/drafts/{draft_id}/reject",
        headers=dm,
        json={"reason": "Say which bridge", "expected_hash": edited.json()["content_hash"]},
    )
    assert reject.status_code == 200 and reject.json()["status"] == "rejected"
    deliveries = await api.get(f"/api/v1/drafts/{draft_id}/deliveries", headers=cm)
    assert deliveries.status_code == 200 and deliveries.json() == []


async def test_bad_input_names_the_field_and_saves_nothing(
    world: dict[str, Any], api: httpx.AsyncClient, token_for: Any, db: Database
) -> None:
    cm = await token_for("carol", "read", "draft")
    cases = [
        (_draft_body(world, summary="x" * 5000), "variables.summary"),
        (_draft_body(world, funds_status="maybe"), "variables.funds_status"),
        ({**_draft_body(world), "destinations": ["nowhere"]}, "destinations"),
        ({**_draft_body(world), "incident": "INC-1999-0001"}, "incident"),
        ({**_draft_body(world), "variables": {"summary": 5}}, "variables.summary"),
        ({**_draft_body(world), "extra": 1}, "extra"),
        # Only UTC; an offset at the edge of the calendar once overflowed into a 500.
        (
            {**_draft_body(world), "options": {"publish_at": "0001-01-01T00:00:00+14:00"}},
            "options.publish_at",
        ),
        (
            {**_draft_body(world), "options": {"publish_at": "2030-01-01T12:00+02:00"}},
            "options.publish_at",
        ),
    ]
    for body, field in cases:
        response = await api.post("/api/v1/drafts", json=body, headers=cm)
        assert response.status_code in (404, 422), response.text
        error = response.json()["error"]
        assert error["field"] == field or any(p["field"] == field for p in error["problems"]), (
            field,
            error,
        )
    huge = await api.get("/api/v1/drafts/99999999999999999999", headers=cm)
    assert huge.status_code == 422 and huge.json()["error"]["field"] == "draft_id"
    unknown = await api.get("/api/v1/drafts/424242", headers=cm)
    assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "draft"
    wrong_type = await api.get("/api/v1/drafts/abc", headers=cm)
    assert wrong_type.status_code == 422 and wrong_type.json()["error"]["field"] == "draft_id"
    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Draft)) == 0


async def test_templates_destinations_me(
    world: dict[str, Any], api: httpx.AsyncClient, token_for: Any
) -> None:
    headers = await token_for("carol", "read")
    templates = (await api.get("/api/v1/templates", headers=headers)).json()
    assert any(t["name"] == "active-exploit-initial" for t in templates)
    one = await api.get("/api/v1/templates/active-exploit-initial", headers=headers)
    assert next(v["name"] for v in one.json()["variables"]) == "summary"
    assert (await api.get("/api/v1/templates/nope", headers=headers)).status_code == 404
    names = [d["name"] for d in (await api.get("/api/v1/destinations", headers=headers)).json()]
    assert "discord-announcements" in names
    me = (await api.get("/api/v1/me", headers=headers)).json()
    assert me == {
        "username": "carol",
        "roles": ["comms_manager"],
        "scopes": ["read"],
        "two_factor": False,
    }
    incident = await api.get(f"/api/v1/incidents/{world['incident'].key}", headers=headers)
    assert incident.json()["severity"] == "P1"
    opened = await api.post(
        "/api/v1/incidents",
        headers=await token_for("carol", "draft"),
        json={"title": "Frontend down", "severity": "P2"},
    )
    assert opened.status_code == 201 and opened.json()["key"].startswith("INC-")


async def test_openapi_is_complete(app: FastAPI, api: httpx.AsyncClient) -> None:
    schema = (await api.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "ErrorOut" in schema["components"]["schemas"]
    for path, operations in schema["paths"].items():
        assert path.startswith("/api/v1/")
        for method, operation in operations.items():
            assert operation.get("security") == [{"bearer": []}], (method, path)
            for status in ("401", "403", "422"):
                assert status in operation["responses"], (method, path, status)
            assert operation["responses"]["422"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorOut"
            }
