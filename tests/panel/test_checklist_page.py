"""The resolution checklist on the incident page (issue 12, item 6)."""

from __future__ import annotations

from typing import Any

from tests.panel.conftest import PanelClient


async def test_the_checklist_appears_at_mitigation_and_records_who_ticked(
    world: dict[str, Any], make_client: Any
) -> None:
    key = world["incident"].key
    lead: PanelClient = make_client()
    await lead.login("leo")
    page = await lead.get(f"/incidents/{key}")
    assert 'id="checklist"' not in page.text  # not before mitigation
    for step in ("investigating", "mitigated"):
        assert (await lead.post(f"/incidents/{key}/status", {"status": step})).status_code == 303
    page = await lead.get(f"/incidents/{key}")
    assert 'id="checklist"' in page.text and "Mitigation verified" in page.text
    refused = await lead.post(f"/incidents/{key}/status", {"status": "monitoring"})
    assert refused.status_code == 422 and "resolution checklist is incomplete" in refused.text

    rita: PanelClient = make_client()
    await rita.login("rita")
    await rita.get(f"/incidents/{key}")
    ticked = await rita.post(f"/incidents/{key}/checklist", {"item": "mitigation_verified"})
    assert ticked.status_code == 303 and ticked.headers["location"].endswith("#checklist")
    again = await rita.post(f"/incidents/{key}/checklist", {"item": "mitigation_verified"})
    assert again.status_code == 409 and "ticked by rita" in again.text
    no_note = await rita.post(f"/incidents/{key}/checklist", {"item": "permanent_fix_planned"})
    assert no_note.status_code == 422 and "Note:" in no_note.text
    hostile = "<img src=x onerror=alert(1)> leo by Friday"
    await rita.post(
        f"/incidents/{key}/checklist", {"item": "permanent_fix_planned", "note": hostile}
    )
    page = await lead.get(f"/incidents/{key}")
    assert "<img src=x" not in page.text and "&lt;img src=x" in page.text
    assert 'Mitigation verified <span class="muted">· rita' in page.text
    logged = await lead.post(
        f"/incidents/{key}/log", {"kind": "monitoring", "text": "Outflow alert on the bridge"}
    )
    assert logged.status_code == 303
    page = await lead.get(f"/incidents/{key}")
    assert "monitoring</span> Outflow alert on the bridge" in page.text
