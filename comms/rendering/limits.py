"""Every size limit the renderer enforces, in one place.

Platform limits come from the platforms' documentation (Discord message ``content``: 2000
characters; Telegram ``sendMessage`` text: 4096 characters after entity parsing). We count in
UTF-16 code units, which is what Telegram counts and never less than what Discord counts, so a
message we accept is never refused by either platform for its length.
"""

from __future__ import annotations

from typing import Final

DISCORD_MESSAGE_LIMIT: Final = 2000
TELEGRAM_MESSAGE_LIMIT: Final = 4096

# Per-value limits (a template header may set a smaller or larger ``max_length`` for a variable).
DEFAULT_TEXT_MAX: Final = 500
MAX_TEXT_MAX: Final = 4000
URL_MAX: Final = 500
CHOICE_MAX: Final = 64

# Durations longer than this are almost certainly typos ("300d" for "30m").
DURATION_MAX_MINUTES: Final = 90 * 24 * 60

# More consecutive combining marks than this is "Zalgo" text that can cover other lines.
MAX_COMBINING_RUN: Final = 4

# Characters of a context string (protocol name, incident title) kept after sanitising.
CONTEXT_STRING_MAX: Final = 200


def utf16_length(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units); astral characters count twice."""
    return len(text.encode("utf-16-le")) // 2
