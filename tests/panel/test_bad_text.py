"""Bad text in every free-text field: NUL and other control characters are refused with 422
naming the field (PostgreSQL cannot store NUL in text, so without the check it was a 500 there),
form bytes that are not UTF-8 are refused rather than replaced, and a body over the limit sent
without Content-Length gets 413 naming the limit. Runs on SQLite and, in CI, on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from approvals.security import MAX_BODY_BYTES
from comms.db import Database
from comms.incidents.models import Incident, IncidentLogEntry
from tests.panel.conftest import EXPLOIT_VARS, PanelClient, _draft_id_for

BAD = {
    "NUL": "Bridge\x00exploit",
    "escape": "Bridge \x1b[31mexploit",
    "bell": "Bridge\x07 exploit",
    "DEL": "Bridge\x7f exploit",
}


async def _count(db: Database, model: Any) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.mark.parametrize("label", sorted(BAD))
async def test_panel_refuses_control_characters_naming_the_field(
    label: str, world: dict[str, Any], make_client: Any, db: Database, panel_settings: Any
) -> None:
    bad = BAD[label]
    leader: PanelClient = make_client()
    await leader.login("leo")
    key = world["incident"].key
    before = (await _count(db, Incident), await _count(db, IncidentLogEntry))
    cases = [
        ("/incidents", {"title": bad, "severity": "P2", "summary": ""}, "title"),
        ("/incidents", {"title": "Bridge", "severity": "P2", "summary": bad}, "summary"),
        (f"/incidents/{key}/log", {"kind": "note", "text": bad}, "text"),
        (
            f"/incidents/{key}/log",
            {"kind": "decision", "text": "Pause", "rationale": bad},
            "rationale",
        ),
        (f"/incidents/{key}/status", {"status": "mitigated", "rationale": bad}, "rationale"),
    ]
    for path, form, field in cases:
        response = await leader.post(path, form)
        assert response.status_code == 422, (path, field, response.status_code)
        assert f"<strong>{field}</strong>" in response.text, (path, field)
        assert "control character" in response.text or "surrogate" in response.text
    assert (await _count(db, Incident), await _count(db, IncidentLogEntry)) == before

    writer: PanelClient = make_client()
    await writer.login("carol")
    create = await writer.post(
        f"/incidents/{key}/drafts",
        [
            ("template", "active-exploit-initial"),
            *[(f"var.{k}", v) for k, v in {**EXPLOIT_VARS, "summary": bad}.items()],
            ("destinations", "discord-announcements"),
            ("action", "save"),
        ],
    )
    assert create.status_code == 422 and "<strong>summary</strong>" in create.text

    draft_id = await _draft_id_for(db, world, panel_settings, submit=True)
    approver: PanelClient = make_client()
    await approver.login("dave")
    await approver.get(f"/drafts/{draft_id}")
    reject = await approver.post(f"/drafts/{draft_id}/reject", {"reason": bad})
    assert reject.status_code == 422 and "<strong>reason</strong>" in reject.text
    withdraw = await writer.post(f"/drafts/{draft_id}/withdraw", {"reason": bad})
    assert withdraw.status_code == 422 and "<strong>reason</strong>" in withdraw.text


async def test_newlines_and_tabs_are_kept_where_text_allows_them(
    world: dict[str, Any], client: PanelClient, db: Database
) -> None:
    await client.login("leo")
    key = world["incident"].key
    response = await client.post(
        f"/incidents/{key}/log", {"kind": "note", "text": "Line one\r\n\tindented line two"}
    )
    assert response.status_code == 303
    async with db.transaction() as session:
        texts = (await session.scalars(select(IncidentLogEntry.text))).all()
    assert "Line one\n\tindented line two" in texts
    title = await client.post("/incidents", {"title": "Two\nlines", "severity": "P3"})
    assert title.status_code == 422 and "line break" in title.text


async def test_login_with_nul_in_the_username_is_an_ordinary_failure(
    world: dict[str, Any], client: PanelClient
) -> None:
    await client.get("/login")
    response = await client.post("/login", {"username": "dave\x00", "password": "guess"})
    assert response.status_code == 401


@pytest.mark.parametrize(
    "body",
    [b"title=Bridge%FFexploit&severity=P2", b"title=Bridge\xffexploit&severity=P2"],
    ids=["percent-encoded", "raw"],
)
async def test_form_bytes_that_are_not_utf8_are_refused(
    body: bytes, world: dict[str, Any], client: PanelClient, db: Database
) -> None:
    await client.login("leo")
    before = await _count(db, Incident)
    response = await client.http.post(
        "/incidents",
        content=body + f"&csrf_token={client.csrf}".encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Sec-Fetch-Site": "same-origin",
        },
    )
    assert response.status_code == 422, response.text
    assert "title" in response.text and "UTF-8" in response.text
    assert await _count(db, Incident) == before


async def _chunks(total: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        yield b"x" * 65536
        sent += 65536


@pytest.mark.parametrize("path", ["/login", "/api/v1/incidents"])
async def test_body_over_the_limit_without_content_length_is_413(
    path: str, world: dict[str, Any], app: Any
) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        request = http.build_request(
            "POST",
            path,
            content=_chunks(MAX_BODY_BYTES + 200_000),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert "content-length" not in request.headers
        response = await http.send(request)
    assert response.status_code == 413
    assert str(MAX_BODY_BYTES) in response.text


async def test_multipart_form_bytes_that_are_not_utf8_are_refused(
    world: dict[str, Any], client: PanelClient
) -> None:
    """The live preview posts multipart (FormData): its fields are checked the same way."""
    await client.login("carol")
    body = (
        b'--b\r\nContent-Disposition: form-data; name="incident"\r\n\r\n'
        + world["incident"].key.encode()
        + b'\r\n--b\r\nContent-Disposition: form-data; name="template"\r\n\r\ncustom\r\n'
        b'--b\r\nContent-Disposition: form-data; name="var.message"\r\n\r\nhi \xff\xfe\r\n--b--\r\n'
    )
    response = await client.http.post(
        "/drafts/preview",
        content=body,
        headers={
            "Content-Type": "multipart/form-data; boundary=b",
            "X-CSRF-Token": client.csrf,
            "Sec-Fetch-Site": "same-origin",
        },
    )
    assert response.status_code == 422 and "var.message" in response.text
