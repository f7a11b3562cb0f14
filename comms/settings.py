"""One settings object for every process (CLI, panel, worker, bots).

Values come from ``COMMS_*`` environment variables and, optionally, a TOML file named by
``COMMS_CONFIG``. A bad value stops the process at start with a message that names the
setting, because a misconfigured approval quorum discovered mid-incident is worse than a
refusal to start.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import re
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from comms.enums import Role, Severity

ENV_PREFIX = "COMMS_"
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")


# Where the panel receives Telegram's webhook (COMMS_TELEGRAM_WEBHOOK_URL must end in it).
TELEGRAM_WEBHOOK_PATH = "/telegram/webhook"
# Telegram's rule for setWebhook's secret_token, sent back in X-Telegram-Bot-Api-Secret-Token.
_WEBHOOK_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def telegram_webhook_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be the Telegram webhook URL, or ``None``. Telegram posts only to
    https; plain http is allowed on loopback for the sandbox. The path is the panel's fixed
    route, so a URL naming another path would have every update answered 404."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return f"{url!r} is not a URL"
    if parts.scheme == "http" and not _loopback(host):
        return "must be an https URL (http only on loopback, for the sandbox)"
    if parts.scheme not in ("https", "http") or not host:
        return "must be an https URL, e.g. https://comms.example.org" + TELEGRAM_WEBHOOK_PATH
    if parts.username is not None or parts.fragment:
        return "must not carry credentials or a #fragment"
    if parts.path != TELEGRAM_WEBHOOK_PATH:
        return (
            f"the path must be {TELEGRAM_WEBHOOK_PATH} (the panel's route for Telegram), "
            f"got {parts.path or '/'!r}"
        )
    return None


class ConfigError(Exception):
    """Raised when the configuration is invalid; the message names each bad setting."""


class TelegramUncertainPolicy(StrEnum):
    HOLD = "hold"
    RESEND = "resend"


def _split_pairs(raw: str, setting: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(
                f"{setting}: expected NAME=VALUE pairs separated by commas, got {item!r}"
            )
        pairs.append((key.strip(), value.strip()))
    return pairs


class Settings(BaseSettings):
    """Service configuration. Field ``foo`` is set by ``COMMS_FOO``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        env_ignore_empty=True,
        validate_default=True,
    )

    database_url: str = "sqlite+aiosqlite:///./comms.db"
    protocol_name: str = Field(default="Example Protocol", min_length=1, max_length=80)

    approval_quorum: Annotated[dict[Severity, int], NoDecode] = Field(default_factory=dict)
    # The policy's minimum monitoring after mitigation; ending it sooner needs a rationale.
    monitoring_min_days: int = Field(default=7, ge=0, le=365)
    # Minutes between public updates per severity (the policy's cadence); 0 or absent: none.
    update_cadence: Annotated[dict[Severity, int], NoDecode] = Field(
        default_factory=lambda: {Severity.P1: 30, Severity.P2: 60, Severity.P3: 240}
    )
    allow_self_approval: bool = False
    approval_ttl_minutes: int | None = Field(default=None, gt=0)
    # Approvals needed to grant the decision_maker role from the panel (default: the P1 quorum).
    role_grant_quorum: int | None = Field(default=None, ge=1)
    official_domains: Annotated[list[str], NoDecode] = Field(default_factory=list)
    known_contracts: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    # The channels users may trust, e.g. "Discord=https://discord.gg/x,Status=https://..."
    official_links: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)

    # Panel
    session_idle_minutes: int = Field(default=30, gt=0)
    session_absolute_hours: int = Field(default=12, gt=0)
    stepup_minutes: int = Field(default=5, gt=0)
    require_2fa_for: Annotated[list[Role], NoDecode] = Field(
        default_factory=lambda: [Role.DECISION_MAKER, Role.ADMIN]
    )
    login_max_attempts_per_hour: int = Field(default=100, gt=0, le=100)
    lockout_after_failures: int = Field(default=10, gt=0)
    lockout_minutes: int = Field(default=15, gt=0)
    secure_cookies: bool | None = None  # None: decided per request from the scheme
    # Encrypts TOTP secrets and keys CSRF tokens; the panel refuses to start without it
    # (except in demo mode, which makes a throwaway one).
    secret_key: SecretStr | None = None
    panel_poll_seconds: int = Field(default=10, ge=2, le=300)
    login_slowdown_after: int = Field(default=3, gt=0)  # failures before each try must wait
    # Failures from one address (across all account names) before it is slowed down.
    login_source_slowdown_after: int = Field(default=20, gt=0)

    # Platforms
    discord_token: SecretStr | None = None
    discord_api_base: str = "https://discord.com/api/v10"
    telegram_token: SecretStr | None = None
    telegram_api_base: str = "https://api.telegram.org/bot"
    telegram_uncertain: TelegramUncertainPolicy = TelegramUncertainPolicy.HOLD
    # Webhook mode for the Telegram listener (docs/DETECTIONS.md): the public URL of the
    # panel's POST /telegram/webhook. Unset: long polling. The secret Telegram sends back is
    # COMMS_TELEGRAM_WEBHOOK_SECRET, or one derived from COMMS_SECRET_KEY.
    telegram_webhook_url: str | None = None
    telegram_webhook_secret: SecretStr | None = None
    # Where the panel links a sent message ({guild_id}, {channel_id}, {message_id};
    # {chat_id}, {chat_short}, {message_id}). The demo points them at the sandbox viewer.
    discord_message_url: str = "https://discord.com/channels/{guild_id}/{channel_id}/{message_id}"
    telegram_message_url: str = "https://t.me/c/{chat_short}/{message_id}"

    # Outbox worker
    worker_lease_seconds: float = Field(default=30.0, ge=0.5, le=3600)
    worker_poll_seconds: float = Field(default=0.2, gt=0, le=60)
    # Backoff 1 s doubling, capped at 15 minutes: 16 attempts keep a delivery trying for about
    # one to two hours of platform outage before it fails and waits for a person.
    worker_max_attempts: int = Field(default=16, ge=1, le=1000)
    worker_backoff_cap_seconds: float = Field(default=900.0, ge=0.1, le=3600)
    # How long one platform request may take before its outcome counts as unknown.
    platform_timeout_seconds: float = Field(default=15.0, gt=0, le=300)

    # Community reports (docs/DETECTIONS.md): a report joins an open cluster that shares an
    # address, a tx hash or a foreign domain with it, or says the same thing, within this many
    # minutes of the cluster's last report.
    cluster_window_minutes: int = Field(default=30, ge=1, le=1440)
    # Addresses too common to mean one event (the protocol's token, a router): never clustered.
    common_contracts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # A value already shared by this many open clusters stops joining them (no giant cluster).
    cluster_value_max_clusters: int = Field(default=3, ge=1, le=100)
    # Text similarity (rapidfuzz token_set_ratio over content words), only between texts with
    # at least cluster_text_min_words content words each: "hacked" alone joins nothing.
    cluster_text_similarity: int = Field(default=60, ge=40, le=100)
    cluster_text_min_words: int = Field(default=4, ge=2, le=50)
    # A cluster alerts the responders once this many distinct members reported within
    # cluster_alert_minutes (at once for a known contract or a critical monitoring alert).
    cluster_alert_reporters: int = Field(default=3, ge=1, le=1000)
    cluster_alert_minutes: int = Field(default=10, ge=1, le=1440)

    templates_dir: Path | None = None
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_path = os.environ.get("COMMS_CONFIG")
        if config_path:
            path = Path(config_path)
            if not path.is_file():
                raise ConfigError(f"COMMS_CONFIG: no such file: {config_path}")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @field_validator("approval_quorum", mode="before")
    @classmethod
    def _parse_quorum(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = dict(_split_pairs(value, "severity=count"))
        if isinstance(value, dict):
            parsed: dict[str, int] = {}
            for key, count in value.items():
                sev = str(key).strip().upper()
                if sev not in Severity.__members__:
                    raise ValueError(f"unknown severity {key!r} (use P1..P5)")
                try:
                    number = int(count)
                except (TypeError, ValueError):
                    raise ValueError(
                        f"{sev}: quorum must be a whole number, got {count!r}"
                    ) from None
                if number < 1:
                    raise ValueError(f"{sev}: quorum must be at least 1, got {number}")
                parsed[sev] = number
            return parsed
        return value

    @field_validator("update_cadence", mode="before")
    @classmethod
    def _parse_cadence(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = dict(_split_pairs(value, "severity=minutes"))
        if isinstance(value, dict):
            parsed: dict[str, int] = {}
            for key, minutes in value.items():
                sev = str(key).strip().upper()
                if sev not in Severity.__members__:
                    raise ValueError(f"unknown severity {key!r} (use P1..P5)")
                try:
                    number = int(minutes)
                except (TypeError, ValueError):
                    raise ValueError(
                        f"{sev}: minutes between updates must be a whole number, got {minutes!r}"
                    ) from None
                if number < 0:
                    raise ValueError(f"{sev}: minutes between updates cannot be negative")
                if number:
                    parsed[sev] = number
            return parsed
        return value

    @field_validator("official_domains", mode="before")
    @classmethod
    def _parse_domains(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list):
            domains: list[str] = []
            for item in value:
                text = str(item).strip().lower().rstrip(".")
                if not text:
                    continue
                try:
                    ascii_form = text.encode("idna").decode("ascii")
                except UnicodeError:
                    raise ValueError(f"{item!r} is not a valid domain name") from None
                if not _DOMAIN.match(ascii_form):
                    raise ValueError(f"{item!r} is not a valid domain name")
                domains.append(ascii_form)
            return domains
        return value

    @field_validator("known_contracts", mode="before")
    @classmethod
    def _parse_contracts(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = dict(_split_pairs(value, "address=label"))
        if isinstance(value, dict):
            contracts: dict[str, str] = {}
            for address, label in value.items():
                addr = str(address).strip()
                if not _ADDRESS.match(addr):
                    raise ValueError(f"{addr!r} is not an address (0x and 40 hex digits)")
                if not str(label).strip():
                    raise ValueError(f"{addr}: label is empty")
                contracts[addr.lower()] = str(label).strip()
            return contracts
        return value

    @field_validator("common_contracts", mode="before")
    @classmethod
    def _parse_common(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            addresses = []
            for item in value:
                addr = str(item).strip()
                if not _ADDRESS.match(addr):
                    raise ValueError(f"{addr!r} is not an address (0x and 40 hex digits)")
                addresses.append(addr.lower())
            return addresses
        return value

    @field_validator("official_links", mode="before")
    @classmethod
    def _parse_links(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = dict(_split_pairs(value, "label=url"))
        if isinstance(value, dict):
            links: dict[str, str] = {}
            for label, url in value.items():
                text = str(url).strip()
                if not re.match(r"^https://[^\s/@]+(/\S*)?$", text):
                    raise ValueError(f"{label}: {text!r} is not an https URL")
                links[str(label).strip()] = text
            return links
        return value

    @field_validator("require_2fa_for", mode="before")
    @classmethod
    def _parse_roles(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if not (
            value.startswith("sqlite+aiosqlite://") or value.startswith("postgresql+asyncpg://")
        ):
            raise ValueError(
                "must start with sqlite+aiosqlite:// or postgresql+asyncpg:// (async drivers)"
            )
        return value

    @field_validator("discord_api_base", "telegram_api_base")
    @classmethod
    def _check_base(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/") if value.endswith("/api/v10/") else value

    @field_validator("telegram_webhook_url")
    @classmethod
    def _check_webhook_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        problem = telegram_webhook_url_problem(value.strip())
        if problem is not None:
            raise ValueError(problem)
        return value.strip()

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _check_webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _WEBHOOK_SECRET.match(value.get_secret_value()):
            # The value itself is never repeated: it is a secret.
            raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule)")
        return value

    @field_validator("secret_key")
    @classmethod
    def _check_secret_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value()
        if len(raw) < 32:
            raise ValueError(
                "must be at least 32 characters (e.g. `python3 -c 'import secrets; "
                "print(secrets.token_urlsafe(48))'`)"
            )
        if len(set(raw)) < 8 or raw.lower() in {"changeme" * 4, "change-me-" * 4}:
            raise ValueError("looks like a placeholder; generate a random value")
        return value

    @model_validator(mode="after")
    def _fill_quorum(self) -> Settings:
        for sev in Severity:
            self.approval_quorum.setdefault(sev, 1)
        return self

    @property
    def min_monitoring(self) -> timedelta:
        return timedelta(days=self.monitoring_min_days)

    def telegram_webhook_token(self) -> str | None:
        """The secret Telegram must send in ``X-Telegram-Bot-Api-Secret-Token``: the configured
        one, else an HMAC of ``COMMS_SECRET_KEY`` (so every process of a deployment agrees
        without another setting), else ``None``. Never log it."""
        if self.telegram_webhook_secret is not None:
            return self.telegram_webhook_secret.get_secret_value()
        if self.secret_key is None:
            return None
        digest = hmac.new(
            self.secret_key.get_secret_value().encode(),
            b"comms telegram webhook secret v1",
            hashlib.sha256,
        ).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def quorum_for(self, severity: Severity) -> int:
        return self.approval_quorum[severity]

    def contract_label(self, address: str) -> str | None:
        return self.known_contracts.get(address.lower())


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "?"
        message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"{ENV_PREFIX}{field.upper()}: {message}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the configuration, raising ConfigError with setting names."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
