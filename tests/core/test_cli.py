"""The ``comms`` CLI: the README walk-through, JSON output, exit codes, one line per refusal."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner, Result

from comms.cli import cli


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def ok(*args: str) -> str:
    result = run(*args)
    assert result.exit_code == 0, (args, result.output, result.stderr)
    return result.stdout.strip()


def refused(code: int, *args: str) -> str:
    result = run(*args)
    assert result.exit_code == code, (args, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def team(cli_env: dict[str, str]) -> None:
    ok("db", "upgrade")
    ok("user", "add", "carol", "--role", "comms_manager")
    ok("user", "add", "dave", "--role", "decision_maker")
    ok("user", "add", "erin", "--role", "decision_maker", "--role", "scribe")
    ok("user", "add", "leo", "--role", "incident_leader")
    ok(
        "destination",
        "add",
        "dc-news",
        "--platform",
        "discord",
        "--target",
        "123456789012345678",
        "--pin",
        "--allow-everyone",
    )
    ok("destination", "add", "tg-news", "--platform", "telegram", "--target", "-1001234567890")


VARS = [
    "--var",
    "summary=Bridge drained",
    "--var",
    "affected=Bridge",
    "--var",
    "funds_status=at_risk",
    "--var",
    "next_update=2026-01-01T13:00Z",
]


def test_walk_through_from_incident_to_approved_draft(team: None) -> None:
    key = ok("incident", "open", "--title", "Bridge exploit", "--severity", "P1", "--by", "leo")
    assert key.startswith("INC-") and len(key) == len("INC-2026-0001")
    draft_id = ok(
        "draft",
        "new",
        "--incident",
        key,
        "--template",
        "active-exploit-initial",
        *VARS,
        "--to",
        "dc-news",
        "--to",
        "tg-news",
        "--by",
        "carol",
    )
    assert draft_id.isdigit()
    ok("draft", "submit", draft_id, "--by", "carol")
    assert "approved" in ok("draft", "approve", draft_id, "--by", "dave")

    document = json.loads(ok("draft", "show", draft_id, "--json"))
    for field in (
        "id",
        "incident",
        "template",
        "version",
        "status",
        "content_hash",
        "author",
        "destinations",
        "rendered",
        "approvals",
        "quorum",
        "warnings",
        "deliveries",
    ):
        assert field in document
    assert document["status"] == "approved" and document["incident"] == key
    assert document["destinations"] == ["dc-news", "tg-news"]
    assert document["rendered"]["discord"] and document["rendered"]["telegram"]
    assert document["quorum"] == {"needed": 1, "have": 1, "met": True, "blocked": None}
    [approval] = document["approvals"]
    assert (approval["by"], approval["decision"], approval["version"], approval["counts"]) == (
        "dave",
        "approve",
        1,
        True,
    )
    assert approval["content_hash"] == document["content_hash"]
    assert {d["destination"]: d["state"] for d in document["deliveries"]} == {
        "dc-news": "pending",
        "tg-news": "pending",
    }

    markdown = ok("incident", "log", key, "--markdown")
    assert markdown.startswith(f"# {key}: Bridge exploit")
    assert "submitted for approval" in markdown
    assert json.loads(ok("incident", "show", key, "--json"))["severity"] == "P1"
    assert [u["username"] for u in json.loads(ok("user", "list", "--json"))] == [
        "carol",
        "dave",
        "erin",
        "leo",
    ]
    assert len(json.loads(ok("destination", "list", "--json"))) == 2
    assert "active-exploit-initial" in [
        t["name"] for t in json.loads(ok("template", "list", "--json"))
    ]
    assert ok("audit", "verify").startswith("audit chain intact")


def test_exit_codes(team: None) -> None:
    key = ok("incident", "open", "--title", "Exploit", "--severity", "P2", "--by", "leo")
    draft_id = ok(
        "draft",
        "new",
        "--incident",
        key,
        "--template",
        "custom",
        "--var",
        "message=Hello",
        "--to",
        "dc-news",
        "--by",
        "carol",
    )
    assert refused(3, "draft", "approve", draft_id, "--by", "dave").startswith(
        "refused by rule approval.not_in_review"
    )
    ok("draft", "submit", draft_id, "--by", "carol")
    assert "permission.draft.approve" in refused(3, "draft", "approve", draft_id, "--by", "carol")
    assert "reason" in refused(2, "draft", "reject", draft_id, "--reason", " ", "--by", "dave")
    ok("draft", "approve", draft_id, "--by", "dave")
    assert "approval.not_in_review" in refused(3, "draft", "approve", draft_id, "--by", "erin")
    assert "permission.incident.manage" in refused(
        3, "incident", "status", key, "closed", "--rationale", "x", "--by", "dave"
    )
    assert refused(3, "incident", "status", key, "monitoring", "--by", "leo").startswith(
        "refused by rule incident.transition"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["incident", "open", "--title", "X", "--severity", "P9", "--by", "leo"], "severity"),
        (["incident", "open", "--title", "X", "--severity", "P1", "--by", "nobody"], "by"),
        (["incident", "open", "--title", " ", "--severity", "P1", "--by", "leo"], "title"),
        (["user", "add", "carol", "--role", "scribe"], "already exists"),
        (["draft", "show", "999"], "no draft #999"),
        (["draft", "show", "99999999999999999999"], "DRAFT_ID"),
        (["delivery", "retry", "99999999999999999999", "--by", "carol"], "DELIVERY_ID"),
        (["destination", "add", "x", "--platform", "discord", "--target", "general"], "target"),
    ],
)
def test_input_errors_exit_2_naming_the_field(team: None, args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code in (2, 3), result.output
    assert message in result.stderr


def test_draft_with_bad_variables_writes_nothing(team: None) -> None:
    key = ok("incident", "open", "--title", "Exploit", "--severity", "P1", "--by", "leo")
    result = run(
        "draft",
        "new",
        "--incident",
        key,
        "--template",
        "active-exploit-initial",
        "--var",
        "summary=x",
        "--var",
        "status_url=http://evil.example",
        "--var",
        "colour=red",
        "--to",
        "dc-news",
        "--by",
        "carol",
    )
    assert result.exit_code == 2
    for field in ("variables.status_url", "variables.colour", "variables.affected"):
        assert field in result.stderr
    assert json.loads(ok("draft", "list", "--json")) == []
    result = run(
        "draft",
        "new",
        "--incident",
        key,
        "--template",
        "nope",
        "--var",
        "a=b",
        "--to",
        "dc-news",
        "--by",
        "carol",
    )
    assert (result.exit_code, "template" in result.stderr) == (2, True)


def test_usage_errors_exit_2(team: None) -> None:
    assert run("draft", "new", "--incident", "INC-2026-0001").exit_code == 2
    result = run(
        "draft",
        "new",
        "--incident",
        "INC-2026-0001",
        "--template",
        "custom",
        "--var",
        "no-equals-sign",
        "--to",
        "dc-news",
        "--by",
        "carol",
    )
    assert result.exit_code == 2 and "NAME=VALUE" in result.output


def test_bad_configuration_names_the_setting(cli_env: dict[str, str]) -> None:
    result = run("user", "list", env={**cli_env, "COMMS_APPROVAL_QUORUM": "P9=2"})
    assert result.exit_code == 2
    assert "COMMS_APPROVAL_QUORUM" in result.stderr


def test_uninitialised_database_says_what_to_do(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMMS_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/empty.db")
    result = run("user", "list")
    assert result.exit_code == 2 and "comms db upgrade" in result.stderr
