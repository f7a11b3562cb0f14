"""``comms serve`` and ``comms token create`` (the CLI's side of the panel)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from approvals.server import server
from comms.auth.crypto import sha256_hex
from comms.auth.models import ApiToken
from comms.cli import cli
from comms.db import Database
from comms.settings import load_settings
from tests.panel.conftest import SECRET


def test_serve_refuses_to_start_without_a_secret_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.startswith("COMMS_") and key != "COMMS_TEST_DATABASE_URL":
            monkeypatch.delenv(key)
    monkeypatch.setenv("COMMS_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    result = CliRunner().invoke(cli, ["serve", "--port", "8765"])
    assert result.exit_code == 2
    assert "COMMS_SECRET_KEY" in result.output


def test_serve_refuses_several_processes_in_telegram_webhook_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Telegram's pushed updates must reach the listener in the panel's own process: with
    several panel processes every update would be answered 503 and retried for a day."""
    for key in list(os.environ):
        if key.startswith("COMMS_") and key != "COMMS_TEST_DATABASE_URL":
            monkeypatch.delenv(key)
    database = tmp_path / "c.db"
    monkeypatch.setenv("COMMS_DATABASE_URL", f"sqlite+aiosqlite:///{database}")
    monkeypatch.setenv("COMMS_SECRET_KEY", SECRET)
    monkeypatch.setenv("COMMS_TELEGRAM_TOKEN", "123:abc")
    monkeypatch.setenv("COMMS_TELEGRAM_WEBHOOK_URL", "https://comms.example.org/telegram/webhook")
    result = CliRunner().invoke(cli, ["serve", "--workers", "2"])
    assert result.exit_code == 2, result.output
    assert "COMMS_TELEGRAM_WEBHOOK_URL" in result.output and "--workers 1" in result.output
    assert not database.exists()  # refused before anything started


def test_server_applies_migrations_first(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    configured = server(load_settings(database_url=url, secret_key=SECRET), port=8766)
    assert configured.config.port == 8766 and configured.config.host == "127.0.0.1"
    import sqlite3

    with sqlite3.connect(tmp_path / "fresh.db") as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"web_sessions", "api_tokens", "users"} <= tables


def test_demo_mode_makes_a_throwaway_key(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}"
    configured = server(load_settings(database_url=url), demo=True)
    assert configured.config.app is not None


async def test_token_create_prints_the_token_once(
    world: dict[str, Any], cli_env: dict[str, str], db: Database
) -> None:
    import asyncio

    result = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["token", "create", "carol", "--scope", "read", "--scope", "draft", "--name", "ci-bot"],
    )
    assert result.exit_code == 0, result.output
    raw = result.output.strip()
    assert raw.startswith("cmt_") and len(raw) > 40
    async with db.transaction() as session:
        token = await session.scalar(select(ApiToken))
        assert token is not None and token.token_hash == sha256_hex(raw)
        assert token.scopes == ["read", "draft"] and token.name == "ci-bot"
    unknown = await asyncio.to_thread(
        CliRunner().invoke, cli, ["token", "create", "nobody", "--scope", "read"]
    )
    assert unknown.exit_code == 2 and "no user named" in unknown.output
