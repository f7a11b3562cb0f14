"""Announcement templates and their rendering for Discord and Telegram.

Typical use::

    spec = registry_for(settings).get("protocol-paused")     # TemplateRegistry, loaded once
    values = validate_values(spec, form)                      # InvalidInput naming each field
    warnings = check_values(spec, values, official_domains=..., known_contracts=...)
    rendered = render(spec, values, render_context(settings, incident), everyone=...)

The strings in ``Rendered`` are the exact bytes hashed, approved and sent. See docs/TEMPLATES.md.
"""

from comms.rendering.checks import RenderWarning, check_values
from comms.rendering.context import render_context
from comms.rendering.engine import (
    OfficialLink,
    RenderContext,
    Rendered,
    message_length,
    render,
    telegram_visible_length,
)
from comms.rendering.limits import DISCORD_MESSAGE_LIMIT, TELEGRAM_MESSAGE_LIMIT
from comms.rendering.registry import TemplateRegistry, default_templates_dir, registry_for
from comms.rendering.spec import TemplateLoadError, TemplateSpec, VariableSpec, parse_template
from comms.rendering.validation import validate_values
from comms.rendering.values import VarType, eip55

__all__ = [
    "DISCORD_MESSAGE_LIMIT",
    "TELEGRAM_MESSAGE_LIMIT",
    "OfficialLink",
    "RenderContext",
    "RenderWarning",
    "Rendered",
    "TemplateLoadError",
    "TemplateRegistry",
    "TemplateSpec",
    "VarType",
    "VariableSpec",
    "check_values",
    "default_templates_dir",
    "eip55",
    "message_length",
    "parse_template",
    "registry_for",
    "render",
    "render_context",
    "telegram_visible_length",
    "validate_values",
]
