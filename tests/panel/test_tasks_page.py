"""The incident page's tasks: the Incident Leader gives them, the owner updates them, and a
person with a second open task is flagged (the policy's one task per person at a time)."""

from __future__ import annotations

import re
from typing import Any

from tests.panel.conftest import PanelClient


async def test_tasks_on_the_incident_page(world: dict[str, Any], make_client: Any) -> None:
    key = world["incident"].key
    lead: PanelClient = make_client()
    await lead.login("leo")
    await lead.get(f"/incidents/{key}")
    given = await lead.post(
        f"/incidents/{key}/tasks", {"title": "Pause the bridge", "assignee": "rita"}
    )
    assert given.status_code == 303 and given.headers["location"].endswith("#tasks")
    page = await lead.get(f"/incidents/{key}")
    assert "Pause the bridge" in page.text
    assert "rita) — 1 open task(s)" in page.text  # marked in the owner list
    assert "has 2 open tasks" not in page.text
    empty = await lead.post(f"/incidents/{key}/tasks", {"title": "", "assignee": "rita"})
    assert empty.status_code == 422 and "title" in empty.text
    nobody = await lead.post(f"/incidents/{key}/tasks", {"title": "x", "assignee": "nobody"})
    assert nobody.status_code in (404, 422) and "nobody" in nobody.text
    hostile = "<script>alert(1)</script> revoke"
    await lead.post(f"/incidents/{key}/tasks", {"title": hostile, "assignee": "rita"})
    page = await lead.get(f"/incidents/{key}")
    assert "has 2 open tasks" in page.text and "one task per person" in page.text
    assert "<script>alert(1)</script>" not in page.text
    ids = [int(i) for i in re.findall(rf"/incidents/{key}/tasks/(\d+)/status", page.text)]
    assert len(set(ids)) == 2

    # The owner may update her task; someone else may not, and a scribe cannot give tasks.
    rita: PanelClient = make_client()
    await rita.login("rita")
    await rita.get(f"/incidents/{key}")
    done = await rita.post(f"/incidents/{key}/tasks/{ids[0]}/status", {"status": "done"})
    assert done.status_code == 303
    sam: PanelClient = make_client()
    await sam.login("sam")
    await sam.get(f"/incidents/{key}")
    refused = await sam.post(f"/incidents/{key}/tasks/{ids[1]}/status", {"status": "done"})
    assert refused.status_code == 403
    assert (
        await sam.post(f"/incidents/{key}/tasks", {"title": "x", "assignee": "sam"})
    ).status_code == 403
    handed = await lead.post(f"/incidents/{key}/tasks/{ids[1]}/owner", {"owner": "sam"})
    assert handed.status_code == 303
    page = await lead.get(f"/incidents/{key}")
    assert "has 2 open tasks" not in page.text
    assert "open → done: Pause the bridge" in page.text  # the Incident Log
    assert "handed from rita to sam" in page.text
    # A task of another incident is not found under this one.
    await lead.get("/incidents/new")
    other = await lead.post("/incidents", {"title": "Oracle", "severity": "P3", "summary": ""})
    other_key = other.headers["location"].rsplit("/", 1)[1]
    assert other_key != key
    missing = await lead.post(f"/incidents/{other_key}/tasks/{ids[1]}/owner", {"owner": "rita"})
    assert missing.status_code == 404 and f"no task #{ids[1]} on {other_key}" in missing.text
