"""The two Jinja environments (Discord, Telegram), their helpers and the value wrappers.

Templates run in ``ImmutableSandboxedEnvironment`` with ``StrictUndefined``. Each environment has
a ``finalize`` that escapes every ``{{ }}`` output for its platform, unless the output is a
:class:`~comms.rendering.escape.Trusted` fragment made by that platform's helpers. Literal template
text is ours and is written to be valid on both platforms (a test checks it).

Typed values reach templates wrapped, so printing them does the right thing by itself: a url
variable prints as a link (the only way a link gets into an announcement), an address as code in
full, a datetime as ``27 Nov 2026, 10:00 UTC``, a duration in words. Text and choice values are
plain strings and are escaped when printed.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from datetime import datetime
from typing import Final

from jinja2 import StrictUndefined, TemplateRuntimeError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from comms.enums import Platform
from comms.rendering import escape
from comms.rendering.escape import Trusted
from comms.rendering.values import format_datetime, format_duration


class UrlValue:
    """A validated https URL; only these can become links."""

    __slots__ = ("url",)

    def __init__(self, url: str) -> None:
        self.url = url

    def __str__(self) -> str:
        return self.url


class AddressValue:
    """A validated EVM address; always shown in full as code."""

    __slots__ = ("address",)

    def __init__(self, address: str) -> None:
        self.address = address

    def __str__(self) -> str:
        return self.address


class DateTimeValue:
    __slots__ = ("moment",)

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __str__(self) -> str:
        return format_datetime(self.moment)


class DurationValue:
    __slots__ = ("minutes",)

    def __init__(self, minutes: int) -> None:
        self.minutes = minutes

    def __str__(self) -> str:
        return format_duration(self.minutes)


class OfficialLinkValue:
    """One verified channel from the render context: a label and its link."""

    __slots__ = ("label", "url")

    def __init__(self, label: str, url: UrlValue) -> None:
        self.label = label
        self.url = url


HELPERS: Final = frozenset({"bold", "code", "link", "when", "quote"})
CONTEXT_NAMES: Final = frozenset(
    {
        "protocol",
        "incident_key",
        "incident_title",
        "severity",
        "severity_label",
        "official_links",
        "everyone",
    }
)


def _plain(value: object, helper: str) -> str:
    """The plain text of a helper argument; a fragment from another helper is a template bug."""
    if isinstance(value, Trusted):
        raise TemplateRuntimeError(f"{helper}() cannot wrap the output of another helper")
    if value is None:
        raise TemplateRuntimeError(f"{helper}() got an unset optional variable; guard it with if")
    if isinstance(value, UrlValue):
        raise TemplateRuntimeError(f"{helper}() cannot take a url; print it or use link()")
    return str(value)


class _Target:
    """Helpers and the finaliser for one platform."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def trusted(self, text: str) -> Trusted:
        return Trusted(text, self.platform)

    def text(self, value: str) -> str:
        if self.platform is Platform.DISCORD:
            return escape.discord_text(value)
        return escape.telegram_text(value)

    def link(self, value: object) -> Trusted:
        if not isinstance(value, UrlValue):
            raise TemplateRuntimeError("link() takes a url-type variable, nothing else")
        if self.platform is Platform.DISCORD:
            # Angle brackets: a visible, clickable URL without an embed; never a masked link,
            # so readers always see where it goes.
            return self.trusted(f"<{value.url}>")
        href = escape.telegram_attribute(value.url)
        return self.trusted(f'<a href="{href}">{href}</a>')

    def bold(self, value: object) -> Trusted:
        text = _plain(value, "bold")
        if self.platform is Platform.DISCORD:
            return self.trusted(escape.discord_bold(text))
        return self.trusted(escape.telegram_bold(text))

    def code(self, value: object) -> Trusted:
        text = _plain(value, "code")
        if self.platform is Platform.DISCORD:
            return self.trusted(escape.discord_code(text))
        return self.trusted(escape.telegram_code(text))

    def quote(self, value: object) -> Trusted:
        text = _plain(value, "quote")
        if self.platform is Platform.DISCORD:
            return self.trusted(escape.discord_quote(text))
        return self.trusted(escape.telegram_quote(text))

    def when(self, value: object) -> Trusted:
        if not isinstance(value, DateTimeValue):
            raise TemplateRuntimeError("when() takes a datetime-type variable")
        shown = self.text(format_datetime(value.moment))
        if self.platform is Platform.DISCORD:
            # Discord shows <t:...:R> as "in 25 minutes" in each reader's own clock.
            epoch = calendar.timegm(value.moment.utctimetuple())
            return self.trusted(f"{shown} (<t:{epoch}:R>)")
        return self.trusted(shown)

    def everyone(self, enabled: bool) -> Callable[[], Trusted]:
        def everyone() -> Trusted:
            text = "@everyone" if enabled and self.platform is Platform.DISCORD else ""
            return self.trusted(text)

        return everyone

    def finalize(self, value: object) -> str:
        if isinstance(value, Trusted):
            if value.platform is not self.platform:
                raise TemplateRuntimeError("a fragment for another platform was printed")
            return value.text
        if value is None:
            raise TemplateRuntimeError(
                "the template printed an unset optional variable; guard it with {% if %}"
            )
        if isinstance(value, UrlValue):
            return self.link(value).text
        if isinstance(value, AddressValue):
            return self.code(value).text
        if isinstance(value, DateTimeValue):
            return self.when(value).text
        if isinstance(value, OfficialLinkValue):
            return f"{self.text(value.label)}: {self.link(value.url).text}"
        return self.text(str(value))


def _environment(target: _Target) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        finalize=target.finalize,
    )
    env.globals.update(
        bold=target.bold, code=target.code, link=target.link, when=target.when, quote=target.quote
    )
    return env


TARGETS: Final = {platform: _Target(platform) for platform in Platform}
ENVIRONMENTS: Final = {platform: _environment(target) for platform, target in TARGETS.items()}
