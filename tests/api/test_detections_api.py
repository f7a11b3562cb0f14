"""Monitoring webhooks: POST /api/v1/detections (scope detections:write), idempotent by id,
entities extracted and checked, bad input named by field; and ``comms detection list``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from fastapi import FastAPI
from sqlalchemy import func, select

from comms.cli import cli
from comms.db import Database
from comms.detections.models import Detection, DetectionEntity

DRAINER = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
TX = "0x" + "ab" * 32


def _alert(**fields: Any) -> dict[str, Any]:
    return {
        "id": "forta-0001",
        "title": "Large outflow from the bridge",
        "text": f"{DRAINER} moved 9,000 ETH in tx {TX}; see https://examp1e.org/claim",
        "severity": "critical",
        "source": "forta",
        **fields,
    }


async def _count(db: Database, model: Any) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_an_alert_becomes_a_detection_with_its_entities(
    world: dict[str, Any], api: httpx.AsyncClient, token_for: Any, db: Database
) -> None:
    monitor = await token_for("carol", "detections:write")
    created = await api.post("/api/v1/detections", json=_alert(), headers=monitor)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["reference"] == f"R-{body['id']}"
    assert (body["source"], body["origin"], body["severity"], body["status"]) == (
        "webhook",
        "forta",
        "critical",
        "new",
    )
    assert body["submitted_by"] == "carol"
    found = {(e["type"], e["value"]): e["flags"] for e in body["entities"]}
    assert "checksum_valid" in found[("address", DRAINER)]
    assert ("tx", TX) in found
    assert "lookalike" in found[("domain", "examp1e.org")]  # official: example.org
    assert await _count(db, DetectionEntity) == len(body["entities"])


async def test_a_repeated_post_with_the_same_id_changes_nothing(
    world: dict[str, Any], api: httpx.AsyncClient, token_for: Any, db: Database
) -> None:
    monitor = await token_for("carol", "detections:write")
    first = await api.post("/api/v1/detections", json=_alert(), headers=monitor)
    assert first.status_code == 201
    again = await api.post(
        "/api/v1/detections", json=_alert(text="a retry with other words"), headers=monitor
    )
    assert again.status_code == 200
    assert again.json() == first.json()
    # Retries racing each other store one row too.
    racing = await asyncio.gather(
        *(
            api.post("/api/v1/detections", json=_alert(id="forta-0002"), headers=monitor)
            for _ in range(5)
        )
    )
    assert sorted(r.status_code for r in racing) == [200, 200, 200, 200, 201]
    assert await _count(db, Detection) == 2
    # Without an id every POST is a new detection.
    for _ in range(2):
        assert (
            await api.post("/api/v1/detections", json=_alert(id=None), headers=monitor)
        ).status_code == 201
    assert await _count(db, Detection) == 4


async def test_a_batch_is_stored_in_order_idempotent_and_refused_whole(
    world: dict[str, Any], api: httpx.AsyncClient, token_for: Any, db: Database
) -> None:
    monitor = await token_for("carol", "detections:write")
    batch = {
        "detections": [
            _alert(id="b-1"),
            _alert(id="b-2", text="again https://examp1e.org/claim"),
            _alert(id="b-1", text="the same id twice in one batch"),
            _alert(id=None, title="no id", text="disk full on the RPC node"),
        ]
    }
    stored = await api.post("/api/v1/detections/batch", json=batch, headers=monitor)
    assert stored.status_code == 200, stored.text
    items = stored.json()["detections"]
    assert [i["created"] for i in items] == [True, True, False, True]
    assert items[2]["detection"]["id"] == items[0]["detection"]["id"]
    assert items[0]["detection"]["text"] == batch["detections"][0]["text"]
    assert await _count(db, Detection) == 3
    async with db.transaction() as session:
        clusters = {
            row.external_id: row.cluster_id for row in (await session.scalars(select(Detection)))
        }
    assert clusters["b-1"] == clusters["b-2"]  # the shared address, within one batch
    # A retry of the whole batch stores nothing new.
    again = await api.post("/api/v1/detections/batch", json=batch, headers=monitor)
    assert [i["created"] for i in again.json()["detections"]] == [False, False, False, True]
    # One bad item refuses the batch, naming the item and its field; nothing is stored.
    bad = {"detections": [_alert(id="b-9"), _alert(id="b-10", severity="apocalyptic")]}
    refused = await api.post("/api/v1/detections/batch", json=bad, headers=monitor)
    assert refused.status_code == 422, refused.text
    fields = [p["field"] for p in refused.json()["error"]["problems"]]
    assert any(f.startswith("detections.1.severity") for f in fields), fields
    wrong = {"detections": [_alert(id="b-11", entities=[{"type": "tx", "value": "0x12"}])]}
    refused = await api.post("/api/v1/detections/batch", json=wrong, headers=monitor)
    assert refused.status_code == 422, refused.text
    assert await _count(db, Detection) == 4


async def test_scope_is_required(
    world: dict[str, Any], api: httpx.AsyncClient, token_for: Any
) -> None:
    reader = await token_for("carol", "read")
    refused = await api.post("/api/v1/detections", json=_alert(), headers=reader)
    assert refused.status_code == 403 and refused.json()["error"]["rule"] == "token.scope"
    assert (await api.post("/api/v1/detections", json=_alert())).status_code == 401


@pytest.mark.parametrize(
    ("fields", "field", "problem"),
    [
        ({"title": ""}, "title", ""),
        ({"title": "x" * 201}, "title", "200"),
        ({"text": "x" * 4001}, "text", "4000"),
        ({"text": "escape \x1b[31m red"}, "text", "control character"),
        ({"severity": "apocalyptic"}, "severity", ""),
        ({"url": "javascript:alert(1)"}, "url", ""),
        # The schema and the check agree on what a URL may hold (printable ASCII): U+0085 was
        # no whitespace to the schema's \S but is to pydantic's (found by schemathesis).
        ({"url": "https://a\u0085b"}, "url", "[!-~]"),
        ({"url": "https://exämple.org"}, "url", "[!-~]"),
        (
            {"entities": [{"type": "address", "value": "0x1234"}]},
            "entities.0.address.value",
            "{40}",
        ),
        ({"entities": [{"type": "tx", "value": DRAINER}]}, "entities.0.tx.value", "{64}"),
        ({"entities": [{"type": "wallet", "value": DRAINER}]}, "entities.0", "'wallet'"),
        ({"entities": [{"type": "domain", "value": "localhost"}]}, "entities.0.domain.value", ""),
        ({"colour": "red"}, "colour", ""),
    ],
)
async def test_bad_input_is_named_and_nothing_is_stored(
    world: dict[str, Any],
    api: httpx.AsyncClient,
    token_for: Any,
    db: Database,
    fields: dict[str, Any],
    field: str,
    problem: str,
) -> None:
    monitor = await token_for("carol", "detections:write")
    refused = await api.post("/api/v1/detections", json=_alert(**fields), headers=monitor)
    assert refused.status_code == 422, refused.text
    problems = refused.json()["error"]["problems"]
    assert any(p["field"] == field and problem in p["problem"] for p in problems), problems
    assert await _count(db, Detection) == 0


async def test_given_entities_are_normalised_and_merged(
    world: dict[str, Any], api: httpx.AsyncClient, token_for: Any
) -> None:
    monitor = await token_for("carol", "detections:write")
    created = await api.post(
        "/api/v1/detections",
        json=_alert(
            text="no entities in the words",
            entities=[
                {"type": "address", "value": DRAINER.lower()},
                {"type": "url", "value": "https://app.example.org/pause"},
            ],
        ),
        headers=monitor,
    )
    assert created.status_code == 201, created.text
    found = {(e["type"], e["value"]): e["flags"] for e in created.json()["entities"]}
    assert "no_checksum" in found[("address", DRAINER)]
    assert "official" in found[("url", "https://app.example.org/pause")]


async def test_the_cli_lists_detections_with_hostile_text_inert(
    world: dict[str, Any],
    api: httpx.AsyncClient,
    token_for: Any,
    app: FastAPI,
    cli_env: dict[str, str],
) -> None:
    monitor = await token_for("carol", "detections:write")
    hostile = "drained \u202eexe.example\u202c <b>now</b>"
    posted = await api.post("/api/v1/detections", json=_alert(title=hostile), headers=monitor)
    assert posted.status_code == 201
    runner = CliRunner()
    table = await asyncio.to_thread(runner.invoke, cli, ["detection", "list"])
    assert table.exit_code == 0, table.output
    assert "\u202e" not in table.output and "\\u202e" in table.output
    assert f"R-{posted.json()['id']}" in table.output and "webhook" in table.output
    listed = await asyncio.to_thread(runner.invoke, cli, ["detection", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    (item,) = json.loads(listed.output)
    assert item["title"] == hostile and item["reference"] == f"R-{posted.json()['id']}"
    assert {e["type"] for e in item["entities"]} >= {"address", "tx", "url", "domain"}
