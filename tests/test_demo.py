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

import httpx
import pytest

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
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
    assert (tmp_path / "demo" / "comms.db").exists()
