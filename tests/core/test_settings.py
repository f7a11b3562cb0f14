"""Settings: parsed from COMMS_* and an optional TOML file; bad values name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from comms.enums import Role, Severity
from comms.settings import ConfigError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("COMMS_"):
            monkeypatch.delenv(key)


def test_defaults() -> None:
    s = load_settings()
    assert s.database_url == "sqlite+aiosqlite:///./comms.db"
    assert all(s.quorum_for(sev) == 1 for sev in Severity)
    assert s.allow_self_approval is False
    assert s.approval_ttl_minutes is None
    assert s.require_2fa_for == [Role.DECISION_MAKER, Role.ADMIN]


def test_environment_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMMS_APPROVAL_QUORUM", "P1=2, p2=1")
    monkeypatch.setenv("COMMS_OFFICIAL_DOMAINS", "Example.org, docs.example.org, bücher.example")
    monkeypatch.setenv("COMMS_KNOWN_CONTRACTS", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed=Vault")
    monkeypatch.setenv("COMMS_APPROVAL_TTL_MINUTES", "45")
    monkeypatch.setenv("COMMS_DISCORD_TOKEN", "secret-token")
    s = load_settings()
    assert s.quorum_for(Severity.P1) == 2 and s.quorum_for(Severity.P3) == 1
    assert s.official_domains == ["example.org", "docs.example.org", "xn--bcher-kva.example"]
    assert s.contract_label("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed") == "Vault"
    assert s.approval_ttl_minutes == 45
    assert s.discord_token is not None and "secret-token" not in repr(s)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("COMMS_APPROVAL_QUORUM", "P9=2", "COMMS_APPROVAL_QUORUM: unknown severity"),
        ("COMMS_APPROVAL_QUORUM", "P1=0", "COMMS_APPROVAL_QUORUM: P1: quorum must be at least 1"),
        ("COMMS_APPROVAL_QUORUM", "P1", "COMMS_APPROVAL_QUORUM"),
        ("COMMS_APPROVAL_TTL_MINUTES", "-5", "COMMS_APPROVAL_TTL_MINUTES"),
        ("COMMS_ALLOW_SELF_APPROVAL", "maybe", "COMMS_ALLOW_SELF_APPROVAL"),
        ("COMMS_OFFICIAL_DOMAINS", "not a domain", "COMMS_OFFICIAL_DOMAINS"),
        ("COMMS_KNOWN_CONTRACTS", "0x123=Vault", "COMMS_KNOWN_CONTRACTS"),
        ("COMMS_DATABASE_URL", "sqlite:///x.db", "COMMS_DATABASE_URL"),
        ("COMMS_REQUIRE_2FA_FOR", "wizard", "COMMS_REQUIRE_2FA_FOR"),
    ],
)
def test_invalid_values_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_toml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "comms.toml"
    config.write_text(
        'protocol_name = "Bridge Protocol"\n'
        'official_domains = ["bridge.example"]\n'
        "[approval_quorum]\nP1 = 3\n"
    )
    monkeypatch.setenv("COMMS_CONFIG", str(config))
    monkeypatch.setenv("COMMS_PROTOCOL_NAME", "From Env")  # environment wins
    s = load_settings()
    assert s.protocol_name == "From Env"
    assert s.official_domains == ["bridge.example"]
    assert s.quorum_for(Severity.P1) == 3


def test_missing_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COMMS_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="COMMS_CONFIG: no such file"):
        load_settings()
