"""POST /api/v1/detections/alertmanager: Prometheus Alertmanager's webhook payload (version 4)
as Alertmanager sends it, resent and retried: one detection per alert, repeats change nothing."""

from __future__ import annotations

import copy
from typing import Any

import httpx
from sqlalchemy import func, select

from comms.db import Database
from comms.detections.models import Detection

BRIDGE = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"


def _payload(status: str = "firing", **changes: Any) -> dict[str, Any]:
    """What Alertmanager 0.27 posts for a group of two alerts (its documented shape)."""
    alert = {
        "status": status,
        "labels": {"alertname": "BridgeOutflow", "severity": "critical", "chain": "ethereum"},
        "annotations": {
            "summary": "Bridge outflow above 1,000 ETH in 5 minutes",
            "description": f"Contract {BRIDGE} sent 9,000 ETH",
        },
        "startsAt": "2026-11-30T02:10:00.000Z",
        "endsAt": "2026-11-30T02:40:00.000Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.internal:9090/graph?g0.expr=outflow",
        "fingerprint": "c6c8a2e7f1b3d4a5",
    }
    second = copy.deepcopy(alert)
    second["labels"]["chain"] = "arbitrum"
    second["fingerprint"] = "0a1b2c3d4e5f6a7b"
    second["labels"]["severity"] = "warning"
    return {
        "version": "4",
        "groupKey": '{}/{severity=~"critical|warning"}:{alertname="BridgeOutflow"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "comms",
        "groupLabels": {"alertname": "BridgeOutflow"},
        "commonLabels": {"alertname": "BridgeOutflow"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.internal:9093",
        "alerts": [alert, second],
        **changes,
    }


async def _detections(db: Database) -> list[Detection]:
    async with db.transaction() as session:
        return list((await session.scalars(select(Detection).order_by(Detection.id))).all())


async def test_alerts_become_detections_and_repeats_change_nothing(
    world: dict[str, Any], api: httpx.AsyncClient, token_for: Any, db: Database
) -> None:
    monitor = await token_for("carol", "detections:write")
    url = "/api/v1/detections/alertmanager"
    first = await api.post(url, json=_payload(), headers=monitor)
    assert first.status_code == 200, first.text
    assert len(first.json()["created"]) == 2 and first.json()["resolved"] == []
    stored = await _detections(db)
    assert [(d.source.value, d.severity.value if d.severity else None) for d in stored] == [
        ("alertmanager", "critical"),
        ("alertmanager", "warning"),
    ]
    assert stored[0].title == "Bridge outflow above 1,000 ETH in 5 minutes"
    assert stored[0].origin == "comms" and stored[0].url.startswith("http://prometheus")
    assert stored[0].details["labels"]["chain"] == "ethereum"
    assert BRIDGE in {e["value"] for e in stored[0].entities}

    again = await api.post(url, json=_payload(), headers=monitor)  # group_interval resend
    assert again.json() == {"created": [], "unchanged": first.json()["created"], "resolved": []}
    assert [d.updated_at for d in await _detections(db)] == [d.updated_at for d in stored]

    resolved = await api.post(url, json=_payload("resolved"), headers=monitor)
    assert resolved.json()["resolved"] == first.json()["created"]
    after = await _detections(db)
    assert [d.status.value for d in after] == ["resolved", "resolved"]
    assert after[0].details["ends_at"] == "2026-11-30T02:40:00.000Z"
    repeat = await api.post(url, json=_payload("resolved"), headers=monitor)
    assert repeat.json()["resolved"] == [] and len(await _detections(db)) == 2

    # The same alert firing again later is a new detection.
    refired = _payload()
    for alert in refired["alerts"]:
        alert["startsAt"] = "2026-11-30T05:00:00Z"
    assert len((await api.post(url, json=refired, headers=monitor)).json()["created"]) == 2


async def test_truncated_alerts_and_unknown_fields_are_kept(
    world: dict[str, Any], api: httpx.AsyncClient, token_for: Any, db: Database
) -> None:
    monitor = await token_for("carol", "detections:write")
    payload = _payload(truncatedAlerts=17, someFutureField={"x": 1})
    payload["alerts"][0]["annotations"]["description"] = "x" * 10_000  # cut, not refused
    response = await api.post("/api/v1/detections/alertmanager", json=payload, headers=monitor)
    assert response.status_code == 200, response.text
    first, _second = await _detections(db)
    assert first.details["truncated_alerts"] == 17 and len(first.text) == 4000


async def test_what_is_not_alertmanager_is_refused_by_field(
    world: dict[str, Any], api: httpx.AsyncClient, token_for: Any, db: Database
) -> None:
    monitor = await token_for("carol", "detections:write")
    for body, field in (
        (_payload(version="3"), "version"),
        ({**_payload(), "groupKey": ""}, "groupKey"),
        ({k: v for k, v in _payload().items() if k != "alerts"}, "alerts"),
    ):
        refused = await api.post("/api/v1/detections/alertmanager", json=body, headers=monitor)
        assert refused.status_code == 422
        assert field in {p["field"] for p in refused.json()["error"]["problems"]}, refused.text
    reader = await token_for("carol", "read")
    refused = await api.post("/api/v1/detections/alertmanager", json=_payload(), headers=reader)
    assert refused.status_code == 403
    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Detection)) == 0
