"""Golden content hashes: every approval binds to the hash of an announcement plan's canonical
bytes, so any change to those bytes (a template's wording, the plan's layout, escaping,
serialisation) must be a deliberate, visible act. This test pins, per public template, the hash
of a plan built from fixed values, destinations and context (``golden/plans.json``).

A change that fails it either is a mistake, or changes what every pending approval covers: say
so in the commit and refresh the pins with ``COMMS_UPDATE_GOLDEN=1 python3 tests/run.py
tests/rendering/test_golden_hashes.py``.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from comms.destinations.models import Destination
from comms.drafts.payload import DraftOptions, build_plan, content_hash
from comms.enums import Severity
from comms.rendering import OfficialLink, RenderContext, TemplateRegistry, VarType

GOLDEN = Path(__file__).parent / "golden" / "plans.json"
REGISTRY = TemplateRegistry.default()

# Fixed inputs, spelled out here (not shared with other tests) so that only a change of the
# hashed bytes can move a pin.
VALUES = {
    VarType.TEXT: "The lending pool on mainnet",
    VarType.URL: "https://status.example.org/incidents/7",
    VarType.ADDRESS: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    VarType.DATETIME: "2026-11-27T10:30Z",
    VarType.DURATION: "1h30m",
}
CONTEXT = {
    "protocol_name": "Example Protocol",
    "incident_key": "INC-2026-0007",
    "incident_title": "Lending pool drained",
    "official_links": [["Status page", "https://status.example.org"]],
}
DESTINATIONS = [
    {
        "id": 3,
        "name": "discord-announcements",
        "platform": "discord",
        "target": "1300000000000000010",
        "pin": True,
        "crosspost": True,
        "allow_everyone": True,
        "thread_updates": True,
    },
    {
        "id": 5,
        "name": "discord-general",
        "platform": "discord",
        "target": "1300000000000000011",
        "silent": True,
    },
    {
        "id": 7,
        "name": "telegram-announcements",
        "platform": "telegram",
        "target": "-1001000000001",
        "pin": True,
    },
]
CASES: dict[str, dict[str, Any]] = {
    "P1": {"severity": "P1", "options": {}},
    "P3-scheduled": {
        "severity": "P3",
        "options": {"pin": False, "link_previews": True, "publish_at": "2026-11-27T12:00:00+00:00"},
    },
}


def _plan_hashes(name: str) -> dict[str, str]:
    spec = REGISTRY.get(name)
    values = {
        v.name: v.choices[0] if v.type is VarType.CHOICE else VALUES[v.type] for v in spec.variables
    }
    defaults = {
        "visibility": "public",
        "silent": False,
        "pin": False,
        "crosspost": False,
        "allow_everyone": False,
        "thread_updates": False,
    }
    destinations = [Destination(**{**defaults, **d}) for d in DESTINATIONS]
    hashes = {}
    for case, spec_case in CASES.items():
        options = dict(spec_case["options"])
        when = options.pop("publish_at", None)
        ctx = RenderContext(
            protocol_name=CONTEXT["protocol_name"],
            incident_key=CONTEXT["incident_key"],
            incident_title=CONTEXT["incident_title"],
            severity=Severity(spec_case["severity"]),
            official_links=tuple(OfficialLink(*pair) for pair in CONTEXT["official_links"]),
        )
        plan = build_plan(
            draft_id=42,
            version=3,
            spec=spec,
            values=values,
            ctx=ctx,
            destinations=destinations,
            options=DraftOptions(
                publish_at=datetime.fromisoformat(when).astimezone(UTC) if when else None,
                **options,
            ),
            correction_of=41 if spec.is_correction else None,
        )
        hashes[case] = content_hash(plan.to_json())
        assert plan.content_hash == hashes[case]
    return hashes


def _current() -> dict[str, Any]:
    return {spec.name: _plan_hashes(spec.name) for spec in REGISTRY.list("public")}


def test_every_public_template_has_pinned_plan_hashes() -> None:
    current = _current()
    if os.environ.get("COMMS_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
        pytest.skip("golden plan hashes rewritten; review the diff before committing")
    pinned = json.loads(GOLDEN.read_text())
    assert sorted(current) == sorted(pinned), "a public template was added or removed: pin it"
    changed = {
        name: case
        for name, cases in current.items()
        for case, digest in cases.items()
        if pinned[name].get(case) != digest
    }
    assert changed == {}, (
        "the hashed bytes of these plans changed (every pending approval of such a draft would be "
        f"void): {changed}. If deliberate, refresh tests/rendering/golden/plans.json"
    )


def test_a_plan_reads_back_exactly_and_refuses_another_schema() -> None:
    from comms.drafts.plan import AnnouncementPlan, PlanError

    spec = REGISTRY.get("active-exploit-initial")
    values = {
        v.name: v.choices[0] if v.type is VarType.CHOICE else VALUES[v.type] for v in spec.variables
    }
    plan = build_plan(
        draft_id=1,
        version=1,
        spec=spec,
        values=values,
        ctx=RenderContext(protocol_name="P", incident_key="INC-1", severity=Severity.P1),
        destinations=[
            Destination(
                id=1,
                name="d",
                platform="discord",
                target="1300000000000000010",
                visibility="public",
                pin=True,
                silent=False,
                crosspost=True,
                allow_everyone=True,
                thread_updates=True,
            )
        ],
        options=DraftOptions(),
        correction_of=None,
    )
    stored = json.loads(json.dumps(plan.to_json()))  # as the database gives it back
    assert AnnouncementPlan.from_json(stored) == plan
    assert AnnouncementPlan.from_json(stored).content_hash == plan.content_hash
    with pytest.raises(PlanError, match="schema 2"):
        AnnouncementPlan.from_json({**stored, "schema": 2})
    with pytest.raises(PlanError, match="unreadable"):
        AnnouncementPlan.from_json({**stored, "deliveries": [{"destination": {}}]})
