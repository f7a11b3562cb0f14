"""The README's main-job command: ``comms demo`` starts, prints logins that work, serves the panel
next to the sandbox, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from comms.enums import Severity

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _read_banner(process: subprocess.Popen[str], deadline: float) -> str:
    assert process.stdout is not None
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Every start begins" in line or "with a fresh database" in line:
            return "".join(lines)
    raise AssertionError("no banner:\n" + "".join(lines))


@pytest.mark.slow
def test_demo_serves_a_panel_you_can_sign_in_to(tmp_path: Path) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "comms",
            "demo",
            "--port",
            str(port),
            "--sandbox-port",
            "0",
            "--data-dir",
            str(tmp_path / "demo"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        banner = _read_banner(process, time.monotonic() + 60)
        passwords = dict(re.findall(r"^\s{4}(\w+)\s+(\S+)\s{3}", banner, re.MULTILINE))
        assert set(passwords) == {"carol", "dave", "erin", "leo", "ada"}
        viewer = re.search(r"Sandbox:\s+(http://\S+)", banner)
        assert viewer

        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as client:
            for _ in range(100):  # the panel starts right after the banner
                try:
                    login_page = client.get("/login")
                    break
                except httpx.ConnectError:
                    time.sleep(0.1)
            token = re.search(r'<meta name="csrf-token" content="([^"]*)">', login_page.text)
            assert token
            signed_in = client.post(
                "/login",
                data={
                    "username": "carol",
                    "password": passwords["carol"],
                    "csrf_token": token.group(1),
                },
                headers={"Sec-Fetch-Site": "same-origin"},
            )
            assert signed_in.status_code == 303, signed_in.text
            dashboard = client.get("/")
            assert dashboard.status_code == 200
            assert "Unusual withdrawals from the ETH bridge" in dashboard.text
        assert httpx.get(viewer.group(1), timeout=10).status_code == 200
        _a_member_reports_and_is_acknowledged(viewer.group(1))
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
    assert (tmp_path / "demo" / "comms.db").exists()


def _a_member_reports_and_is_acknowledged(viewer: str) -> None:
    """The listeners run in the demo: a member's /report@bot in the community group is answered
    with a reference (the walk-through in the README starts here)."""
    control = viewer.split("/", 3)[:3]
    base = "/".join(control) + "/control"
    with httpx.Client(base_url=base, timeout=10) as client:
        info = client.get("/info").json()
        chat = info["telegram_chats"]["community"]
        bot = info["telegram_bot_username"]
        posted = client.post(
            f"/telegram/chats/{chat}/messages",
            json={"user": "alice", "text": f"/report@{bot} the bridge is draining"},
        )
        assert posted.status_code == 201, posted.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            replies = [
                m
                for m in client.get(f"/telegram/chats/{chat}/messages").json()
                if "Reference: R-" in m.get("text", "")
            ]
            if replies:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the demo's Telegram bot did not acknowledge the report within 30 s")


FAKE_WORLD = {
    "discord_guild_id": "1300000000000000001",
    "discord_channels": {
        "announcements": "1300000000000000010",
        "general": "1300000000000000011",
        "responders": "1300000000000000012",
    },
    "discord_roles": {"responders": "1300000000000000020"},
    "telegram_chats": {
        "announcements": "-1001000000001",
        "community": "-1001000000002",
        "responders": "-1001000000003",
    },
    "viewer_url": "http://127.0.0.1:1/",
    "discord_api_base": "http://127.0.0.1:1/api/v10",
    "discord_token": "x",
    "telegram_api_base": "http://127.0.0.1:1/bot",
    "telegram_token": "y",
}


async def test_the_demo_incident_is_a_p1_that_needs_two_decision_makers(
    database_url: str, settings: Any
) -> None:
    """The quick start's two-approver step must be possible: a P1 with a quorum of two."""
    from comms.db import Database
    from comms.demo import banner, demo_settings, seed
    from comms.destinations import service as destinations
    from comms.drafts import service as drafts
    from comms.drafts.models import DraftStatus
    from comms.incidents import service as incidents
    from comms.users import service as users

    chosen = demo_settings(settings, FAKE_WORLD, database_url)
    database = Database(database_url)
    try:
        seeded = await seed(database, FAKE_WORLD)
        async with database.transaction() as session:
            incident = await incidents.require_incident(session, key=seeded.incident_key)
            assert incident.severity == "P1"
            assert chosen.quorum_for(Severity.P1) == 2
            carol = await users.require_user(session, username="carol")
            draft = await drafts.create(
                session,
                incident=incident,
                template="custom",
                variables={"message": "Do not use the bridge."},
                destinations=[
                    await destinations.require_destination(session, name="telegram-announcements")
                ],
                actor=carol,
                settings=chosen,
            )
            await drafts.submit(session, draft=draft, actor=carol, settings=chosen)
            for name, status in (("dave", DraftStatus.IN_REVIEW), ("erin", DraftStatus.APPROVED)):
                approver = await users.require_user(session, username=name)
                draft = await drafts.approve(session, draft=draft, actor=approver, settings=chosen)
                assert draft.status == status.value, name
    finally:
        await database.dispose()
    text = banner(seeded, "http://127.0.0.1:8000/", FAKE_WORLD, chosen)
    assert f"{seeded.incident_key} (P1)" in text
    assert "two-factor is off" in text and "COMMS_REQUIRE_2FA_FOR" in text
