"""Concrete escaping cases: what each platform receives for known-dangerous values."""

from __future__ import annotations

import pytest

from comms.rendering import TemplateRegistry, render
from comms.rendering.escape import discord_text, telegram_text
from comms.rendering.text import defang
from tests.rendering.rendering_oracles import (
    CTX,
    discord_constructs,
    discord_visible,
    telegram_constructs,
    telegram_visible,
)

ZWSP = "\u200b"
CUSTOM = TemplateRegistry.default().get("custom")


def _both(message: str) -> tuple[str, str]:
    rendered = render(CUSTOM, {"message": message}, CTX)
    return "\n\n".join(rendered.discord), "\n\n".join(rendered.telegram)


@pytest.mark.parametrize(
    "value",
    [
        "@everyone",
        "@here",
        "<@123456789012345678>",
        "<@!123456789012345678>",
        "<@&456>",
        "<#789>",
        "＠everyone",
        "﹫here",
        "@@everyone",
        "`@everyone`",
        "x@everyone",
    ],
)
def test_no_mention_survives(value: str) -> None:
    discord, telegram = _both(value)
    found = discord_constructs(discord)
    assert found["mention:everyone/here"] == 0
    assert found["mention:user/role"] == found["mention:channel"] == 0
    assert telegram_constructs(telegram)["auto:mention"] == 0
    assert discord_visible(discord) == value
    assert telegram_visible(telegram) == value


def test_mentions_are_broken_with_a_zero_width_space_like_discord_py() -> None:
    assert discord_text("@everyone") == f"@{ZWSP}everyone"
    assert discord_text("<@&456>") == f"\\<@{ZWSP}&456\\>"
    assert telegram_text("@alice_bob") == f"@{ZWSP}alice_bob"


@pytest.mark.parametrize(
    ("value", "discord"),
    [
        ("**bold**", "\\*\\*bold\\*\\*"),
        ("__under__", "\\_\\_under\\_\\_"),
        ("~~strike~~", "\\~\\~strike\\~\\~"),
        ("||spoiler||", "\\|\\|spoiler\\|\\|"),
        ("`code`", "\\`code\\`"),
        ("```block```", "\\`\\`\\`block\\`\\`\\`"),
        ("[x](y)", "\\[x\\](y)"),
        ("a\\*b", "a\\\\\\*b"),
        ("# heading", "\\# heading"),
        ("-# subtext", "\\-# subtext"),
        ("> quote", "\\> quote"),
        (">>> quote", "\\>\\>\\> quote"),
        ("- item", "\\- item"),
        ("+ item", "\\+ item"),
        ("* item", "\\* item"),
        ("1. one", "1\\. one"),
        ("2) two", "2\\) two"),
        ("  # indented", "  \\# indented"),
        ("a\n# b", "a\n\\# b"),
        ("<t:1700000000:R>", "\\<t:1700000000:R\\>"),
        ("<:emoji:123>", "\\<:emoji:123\\>"),
        ("</cmd:1>", "\\</cmd:1\\>"),
        ("mid-line # and - stay", "mid-line # and - stay"),
        ("caf\u00e9 \u6f22\u5b57 \U0001f44d", "caf\u00e9 \u6f22\u5b57 \U0001f44d"),
    ],
)
def test_discord_markdown_is_escaped(value: str, discord: str) -> None:
    assert discord_text(value) == discord
    assert discord_visible(discord) == value


@pytest.mark.parametrize(
    ("value", "telegram"),
    [
        ("<b>x</b>", f"&lt;b&gt;x&lt;/{ZWSP}b&gt;"),
        ('<a href="https://evil.com">x</a>', None),
        ("<script>alert(1)</script>", None),
        ("&amp; & &lt;", "&amp;amp; &amp; &amp;lt;"),
        ('say "hi"', "say &quot;hi&quot;"),
        ("/start now", f"/{ZWSP}start now"),
        ("and/or 1/2", "and/or 1/2"),
        ("</code>", f"&lt;/{ZWSP}code&gt;"),
    ],
)
def test_telegram_html_is_escaped(value: str, telegram: str | None) -> None:
    escaped = telegram_text(value)
    if telegram is not None:
        assert escaped == telegram
    found = telegram_constructs(escaped)
    assert not any(key.startswith("tag:") for key in found)
    assert found["href"] == 0
    assert found["auto:command"] == 0


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("https://evil.com/x", "hxxps[://]evil[.]com/x"),
        ("http://evil.com", "hxxp[://]evil[.]com"),
        ("HTTPS://EVIL.COM", "HXXPS[://]EVIL[.]COM"),
        ("evil.com", "evil[.]com"),
        ("sub.evil.co.uk", "sub[.]evil[.]co[.]uk"),
        ("t.me/joinchat", "t[.]me/joinchat"),
        ("evil\u3002com", "evil[.]com"),
        ("evil\uff0ecom", "evil[.]com"),
        ("\u0435vil.com", "\u0435vil[.]com"),
        ("xn--80ak6aa92e.com", "xn--80ak6aa92e[.]com"),
        ("1.2.3.4", "1[.]2[.]3[.]4"),
        ("tg://resolve?domain=x", "tg[://]resolve?domain=x"),
        ("mail me: a@evil.com", "mail me: a@evil[.]com"),
        ("Version 1.2.3 at 10.30", "Version 1.2.3 at 10.30"),
        ("It ended. Then", "It ended. Then"),
        ("e.g. this", "e.g. this"),
    ],
)
def test_links_in_text_are_made_inert(value: str, shown: str) -> None:
    assert defang(value) == shown
    discord, telegram = _both(value)
    assert discord_constructs(discord)["link:autolink"] == 0
    tg = telegram_constructs(telegram)
    assert tg["auto:url"] == tg["auto:domain"] == tg["auto:ip"] == tg["href"] == 0
    assert telegram_visible(telegram) == shown.replace("@", "@")


def test_masked_link_cannot_be_injected() -> None:
    discord, telegram = _both("[Claim refund](https://evil.com)")
    found = discord_constructs(discord)
    assert found["link:masked"] == found["link:autolink"] == 0
    assert telegram_constructs(telegram)["href"] == 0


def test_defang_is_idempotent() -> None:
    for value in ("https://evil.com", "evil.com", "1.2.3.4", "plain"):
        assert defang(defang(value)) == defang(value)


def test_url_values_render_as_visible_links() -> None:
    spec = TemplateRegistry.default().get("post-mortem-published")
    values = {
        "postmortem_url": "https://blog.example.org/post_mortem*1?a=1&b=2",
        "summary": "Short",
    }
    rendered = render(spec, values, CTX)
    assert "<https://blog.example.org/post_mortem*1?a=1&b=2>" in rendered.discord[0]
    assert (
        '<a href="https://blog.example.org/post_mortem*1?a=1&amp;b=2">'
        "https://blog.example.org/post_mortem*1?a=1&amp;b=2</a>"
    ) in rendered.telegram[0]


def test_addresses_render_in_full_as_code() -> None:
    spec = TemplateRegistry.default().get("active-exploit-update")
    address = "0xde0B295669a9FD93d5F28D9Ec85E40f4cb697BAe"
    values = {
        "update": "u",
        "funds_status": "safe",
        "next_update": "2026-11-27T10:30Z",
        "attacker_address": address,
    }
    rendered = render(spec, values, CTX)
    assert f"`{address}`" in rendered.discord[0]
    assert f"<code>{address}</code>" in rendered.telegram[0]


def test_datetimes_and_durations_are_human_readable() -> None:
    spec = TemplateRegistry.default().get("protocol-paused")
    values = {
        "paused_scope": "deposits",
        "reason": "r",
        "funds_status": "under_review",
        "expected_duration": "90m",
        "next_update": "2026-11-27T10:00:00+00:00",
    }
    rendered = render(spec, values, CTX)
    assert "27 Nov 2026, 10:00 UTC (<t:1795773600:R>)" in rendered.discord[0]
    assert "27 Nov 2026, 10:00 UTC." in rendered.telegram[0]
    assert "about 1 hour 30 minutes" in rendered.telegram[0]


def test_code_spans_cannot_be_closed_by_a_value() -> None:
    spec = TemplateRegistry.default().get("internal-report-ack")
    rendered = render(spec, {"reference": "R-1` @everyone `x"}, CTX)
    found = discord_constructs(rendered.discord[0])
    assert found["code:spans"] == 1
    assert found["mention:everyone/here"] == 0
    assert "<code>R-1` @\u200beveryone `x</code>" in rendered.telegram[0]
