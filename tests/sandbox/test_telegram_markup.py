"""Telegram formatting: the server's HTML and MarkdownV2 rules, errors and UTF-16 offsets."""

from __future__ import annotations

import html

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from telegram.helpers import escape_markdown

from bots.sandbox.telegram_markup import (
    EntityParseError,
    MessageTextError,
    check_link,
    entity_text,
    find_entities,
    parse_html,
    parse_markdown,
    parse_markdown_v2,
    prepare_text,
    utf16_len,
)


def test_html_tags_become_entities() -> None:
    text, entities = parse_html(
        "<b>bold</b> <strong>s</strong> <i>i</i> <em>e</em> <u>u</u> <ins>n</ins> <s>s</s> "
        '<strike>k</strike> <del>d</del> <span class="tg-spoiler">p</span> '
        "<tg-spoiler>q</tg-spoiler> <code>c</code> "
        '<a href="https://example.com/x">link</a> <blockquote>quote</blockquote> '
        "<blockquote expandable>more</blockquote>"
    )
    assert text == "bold s i e u n s k d p q c link quote more"
    assert [e["type"] for e in entities] == [
        "bold", "bold", "italic", "italic", "underline", "underline", "strikethrough",
        "strikethrough", "strikethrough", "spoiler", "spoiler", "code", "text_link",
        "blockquote", "expandable_blockquote",
    ]  # fmt: skip
    link = next(e for e in entities if e["type"] == "text_link")
    assert link["url"] == "https://example.com/x"


def test_pre_with_language_and_nesting() -> None:
    text, entities = parse_html(
        '<pre><code class="language-python">print(1)</code></pre><b>a <i>b</i></b>'
    )
    assert text == "print(1)a b"
    assert entities == [
        {"type": "pre", "offset": 0, "length": 8, "language": "python"},
        {"type": "bold", "offset": 8, "length": 3},
        {"type": "italic", "offset": 10, "length": 1},
    ]


def test_html_entities_only_the_supported_names() -> None:
    assert parse_html("&lt;&gt;&amp;&quot;&#33;&#x21;")[0] == '<>&"!!'
    assert parse_html("a &nbsp; b")[0] == "a &nbsp; b"  # unsupported names stay as text


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("<foo>x</foo>", 'Unsupported start tag "foo" at byte offset 0'),
        ("1 < 2", 'Unsupported start tag "" at byte offset 2'),
        ("<b>open", "Can't find end tag corresponding to start tag b"),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ('<span class="x">y</span>', 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
        ("é<b", "Unclosed start tag at byte offset 2"),  # byte offsets, not characters
        ("<a href>x</a>", 'Expected equal sign in declaration of an attribute of the tag "a" '
                          "at byte offset 0"),
        ('<tg-emoji emoji-id="abc">x</tg-emoji>', "Invalid custom emoji identifier specified"),
    ],
)  # fmt: skip
def test_html_errors_match_the_server(source: str, error: str) -> None:
    with pytest.raises(EntityParseError) as caught:
        parse_html(source)
    assert caught.value.detail == error
    assert caught.value.description == f"Bad Request: can't parse entities: {error}"


def test_markdown_v2() -> None:
    text, entities = parse_markdown_v2(
        r"*b* _i_ __u__ ~s~ ||p|| `c` [l](https://example.com/a\)b) 1\.5 \#tag"
    )
    assert text == "b i u s p c l 1.5 #tag"
    assert [e["type"] for e in entities] == [
        "bold", "italic", "underline", "strikethrough", "spoiler", "code", "text_link",
    ]  # fmt: skip
    assert entities[-1]["url"] == "https://example.com/a)b"
    text, entities = parse_markdown_v2("```python\nprint(1)\n```")
    assert text == "print(1)\n"
    assert entities == [{"type": "pre", "offset": 0, "length": 9, "language": "python"}]


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("1.5", "Character '.' is reserved and must be escaped with the preceding '\\'"),
        ("*bold", "Can't find end of Bold entity at byte offset 0"),
        ("[a](b", "Can't find end of a URL at byte offset 4"),
        ("snake_case", "Can't find end of Italic entity at byte offset 5"),
    ],
)
def test_markdown_v2_errors(source: str, error: str) -> None:
    with pytest.raises(EntityParseError) as caught:
        parse_markdown_v2(source)
    assert caught.value.detail == error


def test_legacy_markdown() -> None:
    assert parse_markdown("*bold* _it_ `c`") == (
        "bold it c",
        [
            {"type": "bold", "offset": 0, "length": 4},
            {"type": "italic", "offset": 5, "length": 2},
            {"type": "code", "offset": 8, "length": 1},
        ],
    )
    with pytest.raises(EntityParseError, match="Can't find end of the entity"):
        parse_markdown("*open")


def test_offsets_are_utf16() -> None:
    text, entities = parse_html("🚨 <b>é😀x</b>")
    assert text == "🚨 é😀x"
    assert entities == [{"type": "bold", "offset": 3, "length": 4}]
    assert entity_text(text, entities[0]) == "é😀x"
    assert utf16_len("🚨") == 2


def test_automatic_entities() -> None:
    text = (
        "/report@sandbox_comms_bot see https://status.example.com/i/12. "
        "or docs.example.org, ping @alice #incident $ETH mail ops@example.com"
    )
    found = {(e["type"], entity_text(text, e)) for e in find_entities(text)}
    assert found == {
        ("bot_command", "/report@sandbox_comms_bot"),
        ("url", "https://status.example.com/i/12"),
        ("url", "docs.example.org"),
        ("mention", "@alice"),
        ("hashtag", "#incident"),
        ("cashtag", "$ETH"),
        ("email", "ops@example.com"),
    }
    assert find_entities("a@b c/d x#y") == []


def test_prepare_text_trims_checks_length_and_keeps_code_clean() -> None:
    formatted = prepare_text("  <code>@alice</code> @bob  ", "HTML")
    assert formatted.text == "@alice @bob"
    assert formatted.entities == [
        {"type": "code", "offset": 0, "length": 6},
        {"type": "mention", "offset": 7, "length": 4},
    ]
    with pytest.raises(MessageTextError, match="message text is empty"):
        prepare_text("<b> </b>", "HTML")
    with pytest.raises(MessageTextError, match="message is too long"):
        prepare_text("😀" * 2049)  # 4098 UTF-16 code units
    assert prepare_text("😀" * 2048).text == "😀" * 2048


def test_links_are_normalised_or_dropped() -> None:
    assert check_link("example.com") == "http://example.com/"
    assert check_link("https://example.com?a=1") == "https://example.com/?a=1"
    assert check_link("javascript:alert(1)") is None
    assert parse_html('<a href="javascript:alert(1)">x</a>') == ("x", [])


@settings(max_examples=150, deadline=None)
@given(st.text(min_size=1, max_size=200))
def test_escaped_html_round_trips(text: str) -> None:
    plain, entities = parse_html(html.escape(text, quote=False))
    assert plain == text
    assert entities == []


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r"), min_size=1,
               max_size=200))  # fmt: skip
def test_ptb_escape_markdown_v2_round_trips(text: str) -> None:
    plain, entities = parse_markdown_v2(escape_markdown(text, version=2))
    assert plain == text
    assert entities == []


def test_more_tags_and_markdown_forms() -> None:
    text, entities = parse_html(
        '<tg-emoji emoji-id="5368324170671202286">👍</tg-emoji> '
        '<tg-time unix="1647531900" format="wDT">tomorrow</tg-time> '
        '<a href="tg://user?id=1000003">Carol</a>',
        resolve_user=lambda uid: {"id": uid, "is_bot": False, "first_name": "Carol"},
    )
    assert text == "👍 tomorrow Carol"
    assert entities[0] == {
        "type": "custom_emoji", "offset": 0, "length": 2, "custom_emoji_id": "5368324170671202286"
    }  # fmt: skip
    assert entities[1]["type"] == "date_time"
    assert entities[1]["unix_time"] == 1647531900
    assert entities[2]["type"] == "text_mention"
    assert entities[2]["user"]["id"] == 1000003
    assert parse_html('<a href="tg://user?id=42">x</a>') == ("x", [])  # unknown user: dropped

    text, entities = parse_markdown_v2(
        ">quoted\n>still\nafter ![👍](tg://emoji?id=5368324170671202286)"
    )
    assert text == "quoted\nstill\nafter 👍"
    assert [e["type"] for e in entities] == ["blockquote", "custom_emoji"]
    assert parse_markdown("[docs](https://example.com) ```py\nx```") == (
        "docs x",
        [
            {"type": "text_link", "offset": 0, "length": 4, "url": "https://example.com/"},
            {"type": "pre", "offset": 5, "length": 1, "language": "py"},
        ],
    )


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet="<>/&;#x0123abcdefghijklmnopqrstuvwyz \"'=\\*_~|[]()`!>\n😀é-.", max_size=60)
)
def test_parsers_only_ever_raise_entity_parse_errors(text: str) -> None:
    errors: list[str] = []
    for parser in (parse_html, parse_markdown_v2, parse_markdown):
        try:
            plain, entities = parser(text)
        except EntityParseError as error:
            errors.append(error.description)
            continue
        limit = utf16_len(plain)
        for entity in entities:
            assert entity["length"] > 0
            assert entity["offset"] >= 0
            assert entity["offset"] + entity["length"] <= limit
    assert all(e.startswith("Bad Request: can't parse entities: ") for e in errors)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_automatic_entities_stay_inside_the_text(text: str) -> None:
    limit = utf16_len(text)
    for entity in find_entities(text):
        assert 0 <= entity["offset"] < entity["offset"] + entity["length"] <= limit
