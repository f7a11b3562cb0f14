"""Keep secrets out of logs, whatever a library decides to print.

httpx logs every request URL, and a Telegram Bot API URL contains the bot token; an exception
message may quote an Authorization header. This filter masks both token formats (and bearer
tokens) in every record before any handler writes it.
"""

from __future__ import annotations

import logging
import re

PATTERNS = [
    # Telegram bot token (gitleaks telegram-bot-api-token): 123456789:AA...
    re.compile(r"(?<!\d)\d{5,16}:A[A-Za-z0-9_-]{34}(?![A-Za-z0-9_-])"),
    # Discord bot token (detect-secrets DiscordBotTokenDetector).
    re.compile(r"[MNO][A-Za-z\d_-]{23,25}\.[A-Za-z\d_-]{6}\.[A-Za-z\d_-]{27,64}"),
    # Authorization headers and bearer tokens.
    re.compile(r"(?i)\b(Bot|Bearer)\s+[A-Za-z0-9._~+/=-]{16,}"),
]
MASK = "[redacted]"


def redact(text: str) -> str:
    for pattern in PATTERNS:
        text = pattern.sub(MASK, text)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install() -> None:
    """Attach the filter to every handler of the root logger (call after basicConfig)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
