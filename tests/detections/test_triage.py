"""Triage from the command line (issue 11, item 8): ``comms cluster list|show|dismiss|merge|
attach|escalate``, with roles enforced, decisions final, and the Incident Log told."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from click.testing import CliRunner, Result

from comms.cli import cli
from comms.db import Database
from comms.detections import service
from comms.detections.models import DetectionSource
from comms.settings import Settings

A = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
B = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def ok(*args: str) -> str:
    result = run(*args)
    assert result.exit_code == 0, (args, result.output, result.stderr)
    return result.stdout.strip()


def report(settings: Settings, n: int, text: str, member: str) -> None:
    async def send() -> None:
        database = Database(settings.database_url)
        try:
            async with database.transaction() as session:
                await service.record(
                    session,
                    service.Report(
                        source=DetectionSource.DISCORD,
                        text=text,
                        external_id=str(n),
                        reporter_id=member,
                        reporter_name=member,
                    ),
                    settings=settings,
                )
        finally:
            await database.dispose()

    asyncio.run(send())


@pytest.fixture
def team(cli_env: dict[str, str], settings: Settings) -> Settings:
    ok("db", "upgrade")
    ok("user", "add", "leo", "--role", "incident_leader")
    ok("user", "add", "carol", "--role", "comms_manager")
    report(settings, 1, f"drainer {A} is emptying the pool", "m1")
    report(settings, 2, f"{A} again \u202ehidden\u202c", "m2")
    report(settings, 3, f"different one {B}", "m3")
    return settings


def clusters() -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads(ok("cluster", "list", "--json"))
    return listed


def test_list_and_show(team: Settings) -> None:
    listed = clusters()
    assert [(c["reports"], c["reporters"], c["status"], c["kind"]) for c in listed] == [
        (1, 1, "open", "reports"),
        (2, 2, "open", "reports"),
    ]
    first = listed[1]
    assert set(first) >= {
        "id", "status", "kind", "reports", "reporters", "first_seen", "last_seen",
        "entities", "incident",
    }  # fmt: skip
    assert first["incident"] is None
    assert {"type": "address", "value": A, "flags": ["checksum_valid"]} in first["entities"]
    shown = json.loads(ok("cluster", "show", str(first["id"]), "--json"))
    assert [d["reporter"] for d in shown["detections"]] == ["m2", "m1"]
    table = ok("cluster", "show", str(first["id"]))
    assert "\u202e" not in table and "\\u202e" in table


def test_escalate_opens_an_incident_detected_at_the_first_report(team: Settings) -> None:
    target = clusters()[1]
    key = ok("cluster", "escalate", str(target["id"]), "--severity", "P1", "--by", "leo")
    assert key.startswith("INC-")
    after = json.loads(ok("cluster", "show", str(target["id"]), "--json"))
    assert (after["status"], after["incident"]) == ("escalated", key)
    log = ok("incident", "log", key, "--markdown")
    assert f"C-{target['id']}, 2 reports from 2 members" in log
    assert "(first community report) |" in log and "| Time to detect | " in log
    assert "| Time to first public announcement | - |" in log  # nothing published yet
    incident = json.loads(ok("incident", "show", key, "--json"))
    assert incident["severity"] == "P1" and "Community reports" in incident["title"]
    refused = run("cluster", "dismiss", str(target["id"]), "--reason", "x", "--by", "leo")
    assert refused.exit_code == 3 and "cluster.decided" in refused.stderr


def test_dismiss_needs_a_triage_role_and_a_reason(team: Settings) -> None:
    target = clusters()[0]
    refused = run("cluster", "dismiss", str(target["id"]), "--reason", "spam", "--by", "carol")
    assert refused.exit_code == 3 and "detection.triage" in refused.stderr
    empty = run("cluster", "dismiss", str(target["id"]), "--reason", " ", "--by", "leo")
    assert empty.exit_code == 2 and "reason" in empty.stderr
    assert ok("cluster", "dismiss", str(target["id"]), "--reason", "spam", "--by", "leo")
    dismissed = json.loads(ok("cluster", "show", str(target["id"]), "--json"))
    assert (dismissed["status"], dismissed["reason"]) == ("dismissed", "spam")
    # A new report of the same value opens a new cluster: a dismissed one takes nothing.
    report(team, 4, f"still {B}", "m4")
    assert len(clusters()) == 3


def test_merge_and_attach(team: Settings) -> None:
    small, big = clusters()
    ok("cluster", "merge", str(small["id"]), str(big["id"]), "--by", "leo")
    merged = {c["id"]: c for c in clusters()}
    assert merged[small["id"]]["status"] == "merged"
    assert merged[small["id"]]["merged_into"] == big["id"]
    assert (merged[big["id"]]["reports"], merged[big["id"]]["reporters"]) == (3, 3)
    key = ok("incident", "open", "--title", "Pool drained", "--severity", "P2", "--by", "leo")
    ok("cluster", "attach", str(big["id"]), "--incident", key, "--by", "leo")
    assert {c["id"]: c for c in clusters()}[big["id"]]["incident"] == key
    assert "Community reports attached" in ok("incident", "log", key, "--markdown")
    itself = run("cluster", "merge", str(big["id"]), str(big["id"]), "--by", "leo")
    assert itself.exit_code in (2, 3)
