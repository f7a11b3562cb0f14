"""The previews: Telegram HTML and Discord Markdown rendered safely, mentions inert."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from approvals.preview import discord_markdown, telegram_html
from comms.db import Database
from comms.settings import Settings
from tests.panel.conftest import EXPLOIT_VARS, PanelClient, _draft_id_for

ALLOWED_TAGS = {
    "strong",
    "em",
    "u",
    "s",
    "code",
    "pre",
    "blockquote",
    "span",
    "a",
    "h1",
    "h2",
    "h3",
    "ul",
    "ol",
    "li",
}
ALLOWED_ATTRS = {"href", "rel", "target", "class", "tabindex"}


class _Audit(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            self.problems.append(f"tag {tag}")
        for name, value in attrs:
            if name not in ALLOWED_ATTRS or name.startswith("on"):
                self.problems.append(f"attribute {name} on {tag}")
            if name == "href" and not (value or "").startswith("https://"):
                self.problems.append(f"href {value!r}")


def audit(html: str) -> list[str]:
    parser = _Audit()
    parser.feed(html)
    parser.close()
    return parser.problems


PIECES = st.sampled_from(
    [
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        '<a href="javascript:alert(1)">x</a>',
        "<a href='http://evil.example'>y</a>",
        '<a href="https://ok.example/a?b=1&c=2">z</a>',
        "<b>",
        "</b>",
        "<i>",
        "<u>",
        "<s>",
        "<code>",
        "<pre>",
        "<blockquote>",
        "<tg-spoiler>",
        '<span class="tg-spoiler">',
        "<span onclick=x>",
        "</a>",
        "<svg/onload=alert(1)>",
        "&lt;",
        "&amp;",
        "&#60;script&#62;",
        '"',
        "'",
        "`",
        "**",
        "__",
        "*",
        "_",
        "~~",
        "||",
        "```",
        "> ",
        ">>> ",
        "# ",
        "-# ",
        "- ",
        "1. ",
        "[x](javascript:alert(1))",
        "[x](https://ok.example)",
        "[y](http://plain.example)",
        "<https://x.example>",
        "https://a.example/p?q=<x>",
        "@everyone",
        "@here",
        "<@123>",
        "<@!456>",
        "<@&789>",
        "<#42>",
        "<t:1700000000:R>",
        "\n",
        " ",
        "\\*",
        "javascript:",
        "data:text/html,<script>",
        "\u202e",
        "\x00",
        "onerror=",
        "style=x",
    ]
)
TEXT = st.lists(st.one_of(PIECES, st.text(max_size=12)), max_size=30).map("".join)


@settings(max_examples=400, deadline=None)
@given(TEXT)
def test_telegram_preview_never_yields_script_handlers_or_unsafe_links(text: str) -> None:
    assert audit(str(telegram_html(text))) == []


@settings(max_examples=400, deadline=None)
@given(TEXT)
def test_discord_preview_never_yields_script_handlers_or_unsafe_links(text: str) -> None:
    assert audit(str(discord_markdown(text))) == []


def test_telegram_tags_map_to_safe_html() -> None:
    html = str(
        telegram_html(
            '<b>Bold</b> <a href="https://xn--80ak6aa92e.com/">link</a> '
            '<a href="javascript:alert(1)">bad</a> <tg-spoiler>s</tg-spoiler> '
            "&lt;script&gt;"
        )
    )
    assert "<strong>Bold</strong>" in html
    assert 'href="https://xn--80ak6aa92e.com/"' in html and "(https://xn--80ak6aa92e.com/)" in html
    assert "javascript" not in re.findall(r'href="([^"]*)"', html)[-1]
    assert "not a https link: javascript:alert(1)" in html
    assert '<span class="spoiler" tabindex="0">s</span>' in html
    assert "&lt;script&gt;" in html


def test_discord_markdown_and_mentions() -> None:
    html = str(
        discord_markdown(
            "# Alert\n**bold** __under__ *it* ~~gone~~ ||hidden||\n"
            "> quoted\n- one\n- two\n@everyone <@&42> <@7> "
            "[status](https://status.example.org) `x<y`"
        )
    )
    assert "<h1>Alert</h1>" in html and "<strong>bold</strong>" in html and "<u>under</u>" in html
    assert "<em>it</em>" in html and "<s>gone</s>" in html
    assert '<span class="spoiler" tabindex="0">hidden</span>' in html
    assert "<blockquote>quoted</blockquote>" in html and "<ul><li>one</li><li>two</li></ul>" in html
    assert '<span class="mention">@everyone</span>' in html
    assert '<span class="mention">@role:42</span>' in html
    assert '<span class="mention">@user:7</span>' in html
    assert 'href="https://status.example.org"' in html and "<code>x&lt;y</code>" in html


async def test_hostile_values_and_title_display_as_inert_text(
    world: dict[str, Any],
    db: Database,
    panel_settings: Settings,
    make_client: Any,
) -> None:
    from comms.incidents import service as incidents

    hostile = "<script>alert(1)</script> <img src=x onerror=alert(2)> @everyone"
    async with db.transaction() as session:
        incident = await incidents.require_incident(session, key=world["incident"].key)
        incident.title = hostile
    draft_id = await _draft_id_for(
        db, world, panel_settings, submit=True, variables={**EXPLOIT_VARS, "affected": hostile}
    )
    dm: PanelClient = make_client()
    await dm.login("dave")
    for path in (f"/drafts/{draft_id}", f"/incidents/{world['incident'].key}", "/", "/drafts"):
        page = await dm.get(path)
        assert page.status_code == 200
        assert "<script>alert" not in page.text and "<img src=x" not in page.text
        assert not re.search(r"<[^>]+\sonerror=", page.text)
    page = await dm.get(f"/drafts/{draft_id}")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
