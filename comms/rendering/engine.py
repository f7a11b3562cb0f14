"""``render``: validated values + context -> the exact texts sent to Discord and Telegram.

The result is deterministic (no clock, no randomness, no dict-order surprises): it is what gets
hashed, approved and sent. Long texts become an ordered series of messages, split only at blank
lines, each within the platform's limit.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from comms.enums import Platform, Severity
from comms.errors import FieldProblem, InvalidInput, RuleViolation
from comms.rendering import escape
from comms.rendering.environment import (
    TARGETS,
    AddressValue,
    DateTimeValue,
    DurationValue,
    OfficialLinkValue,
    UrlValue,
)
from comms.rendering.limits import (
    CONTEXT_STRING_MAX,
    DISCORD_MESSAGE_LIMIT,
    TELEGRAM_MESSAGE_LIMIT,
    utf16_length,
)
from comms.rendering.spec import TemplateSpec
from comms.rendering.text import normalise_text, strip_forbidden
from comms.rendering.validation import validate_values
from comms.rendering.values import (
    BadValue,
    VarType,
    normalise_url,
    parse_datetime,
    parse_duration,
)

_LIMITS = {Platform.DISCORD: DISCORD_MESSAGE_LIMIT, Platform.TELEGRAM: TELEGRAM_MESSAGE_LIMIT}
_PLATFORM_NAMES = {Platform.DISCORD: "Discord", Platform.TELEGRAM: "Telegram"}
_TAG = re.compile(r"<(/?)([a-z]+)(?:\s[^>]*)?>")
_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
_MANY_NEWLINES = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)


@dataclass(frozen=True)
class OfficialLink:
    """A verified channel users may trust (from configuration), e.g. ("Status page", url)."""

    label: str
    url: str


@dataclass(frozen=True)
class RenderContext:
    """What a template knows besides its variables. All strings are escaped like values.

    ``official_links`` should list only channels that are not marked compromised; the
    account-compromised template and the report acknowledgment show them as "trust these".
    """

    protocol_name: str
    incident_key: str | None = None
    incident_title: str | None = None
    severity: Severity | None = None
    official_links: tuple[OfficialLink, ...] = ()


@dataclass(frozen=True)
class Rendered:
    """The exact messages to send, per platform, in order."""

    discord: tuple[str, ...]
    telegram: tuple[str, ...]
    mentions_everyone: bool = False


def telegram_visible_length(message: str) -> int:
    """Length Telegram checks: text after HTML entity parsing, in UTF-16 code units."""
    return utf16_length(html.unescape(_TAG.sub("", message)))


def message_length(platform: Platform, message: str) -> int:
    if platform is Platform.TELEGRAM:
        return telegram_visible_length(message)
    return utf16_length(message)


def _clean_context(value: str | None) -> str | None:
    if value is None:
        return None
    return strip_forbidden(normalise_text(value).replace("\n", " "))[:CONTEXT_STRING_MAX]


def _wrap(var_type: VarType, value: str | None) -> object:
    if value is None:
        return None
    if var_type is VarType.URL:
        return UrlValue(value)
    if var_type is VarType.ADDRESS:
        return AddressValue(value)
    if var_type is VarType.DATETIME:
        return DateTimeValue(parse_datetime(value))
    if var_type is VarType.DURATION:
        return DurationValue(parse_duration(value))
    return value


def _context_links(ctx: RenderContext) -> list[OfficialLinkValue]:
    links: list[OfficialLinkValue] = []
    problems: list[FieldProblem] = []
    for index, item in enumerate(ctx.official_links):
        try:
            url = normalise_url(item.url)
        except BadValue as exc:
            problems.append(FieldProblem(f"ctx.official_links[{index}]", str(exc)))
            continue
        label = _clean_context(item.label) or url
        links.append(OfficialLinkValue(label, UrlValue(url)))
    if problems:
        raise InvalidInput(problems)
    return links


def _check_everyone(spec: TemplateSpec, ctx: RenderContext) -> None:
    if not spec.mentions_everyone:
        raise RuleViolation(
            "mention.everyone",
            f"template {spec.name!r} does not ask for @everyone",
            field="everyone",
        )
    if ctx.severity is not Severity.P1:
        shown = ctx.severity.value if ctx.severity else "no severity"
        raise RuleViolation(
            "mention.everyone",
            f"@everyone is only for P1 incidents (this one is {shown})",
            field="everyone",
        )


def _normalise_output(text: str) -> str:
    text = _TRAILING_SPACE.sub("", text)
    return _MANY_NEWLINES.sub("\n\n", text).strip()


def _check_tags(message: str) -> None:
    """Every Telegram message must be balanced HTML on its own; a template bug otherwise."""
    stack: list[str] = []
    for match in _TAG.finditer(message):
        closing, name = match.groups()
        if not closing:
            stack.append(name)
        elif not stack or stack.pop() != name:
            raise RuntimeError(f"unbalanced </{name}> in rendered Telegram message")
    if stack:
        raise RuntimeError(f"unclosed <{stack[-1]}> in rendered Telegram message")


def _attribute(
    paragraph: str, text_values: Mapping[str, str], escaper: Callable[[str], str]
) -> str | None:
    """The text variable that contributes most to an over-long paragraph, if any."""
    best: tuple[int, str] | None = None
    for name, value in text_values.items():
        for piece in _PARAGRAPH_BREAK.split(value):
            escaped = escaper(piece)
            if len(escaped) >= 20 and escaped[:200] in paragraph:
                size = len(escaped)
                if best is None or size > best[0]:
                    best = (size, name)
    return best[1] if best else None


def _split(
    platform: Platform,
    text: str,
    text_values: Mapping[str, str],
) -> tuple[str, ...]:
    limit = _LIMITS[platform]
    name = _PLATFORM_NAMES[platform]
    escaper = escape.discord_text if platform is Platform.DISCORD else escape.telegram_text
    paragraphs = _PARAGRAPH_BREAK.split(text)
    messages: list[str] = []
    current = ""
    for number, paragraph in enumerate(paragraphs, start=1):
        size = message_length(platform, paragraph)
        if size > limit:
            var = _attribute(paragraph, text_values, escaper)
            where = f"variables.{var}" if var else f"rendered.{platform.value}"
            raise InvalidInput(
                FieldProblem(
                    where,
                    f"paragraph {number} renders to {size} characters on {name}, over the "
                    f"{limit}-character message limit; shorten it or break it up with blank lines",
                )
            )
        candidate = f"{current}\n\n{paragraph}" if current else paragraph
        if message_length(platform, candidate) <= limit:
            current = candidate
        else:
            messages.append(current)
            current = paragraph
    if current:
        messages.append(current)
    if not messages:
        raise InvalidInput(FieldProblem(f"rendered.{platform.value}", "the message is empty"))
    return tuple(messages)


def render(
    spec: TemplateSpec,
    values: Mapping[str, str],
    ctx: RenderContext,
    *,
    everyone: bool = False,
) -> Rendered:
    """Render both platforms' messages for ``spec`` with ``values``.

    ``values`` are validated again (cheap, idempotent), so nothing unvalidated is ever rendered.
    ``everyone=True`` adds the ``@everyone`` ping where the template places it, on Discord only;
    it is refused (RuleViolation ``mention.everyone``) unless the template asks for it and the
    incident is P1. The caller also checks that the destination allows it.
    """
    if everyone:
        _check_everyone(spec, ctx)
    clean = validate_values(spec, values)
    if spec.needs_incident and not (ctx.incident_key and ctx.incident_key.strip()):
        raise InvalidInput(
            FieldProblem("ctx.incident_key", f"template {spec.name!r} needs an incident")
        )
    context: dict[str, object] = {
        var.name: _wrap(var.type, clean.get(var.name)) for var in spec.variables
    }
    context.update(
        protocol=_clean_context(ctx.protocol_name),
        incident_key=_clean_context(ctx.incident_key),
        incident_title=_clean_context(ctx.incident_title),
        severity=ctx.severity.value if ctx.severity else None,
        severity_label=ctx.severity.label if ctx.severity else None,
        official_links=_context_links(ctx),
    )
    text_values = {
        var.name: clean[var.name]
        for var in spec.variables
        if var.type is VarType.TEXT and var.name in clean
    }
    outputs: dict[Platform, tuple[str, ...]] = {}
    for platform, template in spec.compiled.items():
        target = TARGETS[platform]
        body = template.render({**context, "everyone": target.everyone(everyone)})
        messages = _split(platform, _normalise_output(body), text_values)
        if platform is Platform.TELEGRAM:
            for message in messages:
                _check_tags(message)
        outputs[platform] = messages
    return Rendered(
        discord=outputs[Platform.DISCORD],
        telegram=outputs[Platform.TELEGRAM],
        mentions_everyone=everyone,
    )
