"""Secrets never reach the logs."""

from __future__ import annotations

import logging

import pytest

from comms import redact

TELEGRAM = "7000000001:AAHsandboxDemoTokenNotASecret_00xyz"
# The sample from Discord's documentation of the token format.
DISCORD = "MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.ZnCjm1XVW7vRze4b7Cq4se7kKWs"


@pytest.mark.parametrize("secret", [TELEGRAM, DISCORD])
def test_tokens_are_masked(secret: str) -> None:
    line = f"HTTP Request: POST http://127.0.0.1:1/bot{secret}/getMe"
    assert secret not in redact.redact(line)
    assert "[redacted]" in redact.redact(line)


def test_bearer_and_bot_headers_are_masked() -> None:
    assert "abcdefghijklmnopqrstuvwxyz" not in redact.redact(
        "Authorization: Bearer abcdefghijklmnopqrstuvwxyz0123"
    )
    assert DISCORD not in redact.redact(f"Authorization: Bot {DISCORD}")


def test_filter_masks_records_including_arguments(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.redact")
    logger.addFilter(redact.RedactingFilter())
    with caplog.at_level(logging.INFO, logger="test.redact"):
        logger.info("calling %s", f"https://api.telegram.org/bot{TELEGRAM}/sendMessage")
    assert TELEGRAM not in caplog.text
    assert "sendMessage" in caplog.text
