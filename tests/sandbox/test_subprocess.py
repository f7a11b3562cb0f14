"""``bots.sandbox.run`` in a child process: the first line is the info JSON, then it serves."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import httpx
import pytest


@pytest.mark.subprocess
def test_run_prints_info_then_serves_until_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", "import bots.sandbox as s; s.run(port=0)"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        info = json.loads(first)
        assert info["port"] > 0
        with httpx.Client(timeout=5) as http:
            me = http.get(
                f"{info['discord_api_base']}/users/@me",
                headers={"Authorization": f"Bot {info['discord_token']}"},
            )
            assert me.status_code == 200
            assert me.headers["Content-Type"] == "application/json"
            tg = http.post(f"{info['telegram_api_base']}{info['telegram_token']}/getMe")
            assert tg.json()["result"]["username"] == info["telegram_bot_username"]
            assert http.get(info["control_url"] + "/world").status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
