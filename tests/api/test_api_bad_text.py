"""The API refuses control characters in free text with 422 naming the field, and a name that
cannot exist (NUL in it) is a 404 naming the field, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import json
from typing import Any

import httpx

from comms.db import Database
from tests.panel.conftest import EXPLOIT_VARS, _draft_id_for

BAD = {"NUL": "Bridge\x00exploit", "escape": "Bridge \x1b[31mexploit"}
# Only JSON can carry a lone surrogate (as the escape \ud800); a form cannot encode one.
SURROGATE = "Bridge \ud800 exploit"


async def test_api_refuses_control_characters_naming_the_field(
    world: dict[str, Any], token_for: Any, app: Any, db: Database, panel_settings: Any
) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as api:
        leader = await token_for("leo", "read", "draft")
        for field in ("title", "summary"):
            for bad in (BAD["NUL"], SURROGATE):
                body = {"title": "Bridge", "severity": "P2", "summary": "", field: bad}
                response = await api.post(
                    "/api/v1/incidents",
                    content=json.dumps(body),  # keeps the lone surrogate as its escape
                    headers={**leader, "Content-Type": "application/json"},
                )
                assert response.status_code == 422, response.text
                assert response.json()["error"]["field"] == field
        writer = await token_for("carol", "read", "draft")
        draft = {
            "incident": world["incident"].key,
            "template": "active-exploit-initial",
            "variables": {**EXPLOIT_VARS, "affected": BAD["escape"]},
            "destinations": ["discord-announcements"],
        }
        response = await api.post("/api/v1/drafts", json=draft, headers=writer)
        assert response.status_code == 422
        assert response.json()["error"]["field"] == "variables.affected"
        draft_id = await _draft_id_for(db, world, panel_settings, submit=True)
        approver = await token_for("dave", "read", "approve")
        shown = await api.get(f"/api/v1/drafts/{draft_id}", headers=approver)
        response = await api.post(
            f"/api/v1/drafts/{draft_id}/reject",
            json={"reason": BAD["NUL"], "expected_hash": shown.json()["content_hash"]},
            headers=approver,
        )
        assert response.status_code == 422 and response.json()["error"]["field"] == "reason"
        # Names with NUL cannot exist: a lookup is a 404 naming the field, never a driver error.
        missing = await api.post(
            "/api/v1/drafts",
            json={**draft, "variables": EXPLOIT_VARS, "destinations": ["discord\x00x"]},
            headers=writer,
        )
        assert missing.status_code == 404 and missing.json()["error"]["field"] == "destinations"
        unknown = await api.get("/api/v1/incidents/INC%00", headers=leader)
        assert unknown.status_code in (404, 422)
