"""Property tests: no value can add a mention, link, tag or formatting the template did not place.

For random values built from adversarial pieces, either validation refuses the value naming that
field, or the rendered output contains exactly the constructs (as Discord and Telegram would
interpret them, see ``rendering_oracles``) of the same template rendered with benign values.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from comms.errors import InvalidInput
from comms.rendering import (
    TemplateRegistry,
    TemplateSpec,
    VarType,
    check_values,
    render,
    validate_values,
)
from comms.rendering.text import DOTS
from tests.rendering.rendering_oracles import (
    CTX,
    SAMPLES,
    discord_constructs,
    discord_visible,
    parse_telegram,
    telegram_constructs,
    telegram_visible,
    total,
)

REGISTRY = TemplateRegistry.default()
T = TypeVar("T")
# RENDERING_EXAMPLES=5000 for a longer (nightly) run.
EXAMPLES = settings(
    max_examples=int(os.environ.get("RENDERING_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

PIECES = [
    "@everyone",
    "@here",
    "<@123456789012345678>",
    "<@!42>",
    "<@&456>",
    "<#789>",
    "＠everyone",
    "﹫here",
    "@alice_bob",
    "**bold**",
    "__x__",
    "*",
    "_",
    "~~s~~",
    "||spoiler||",
    "`",
    "```",
    "`code`",
    "[x](https://evil.com)",
    "[x](<https://evil.com>)",
    "https://evil.com",
    "http://evil.com/a_b",
    "HTTPS://EVIL.COM",
    "steam://run/1",
    "tg://resolve?domain=evil",
    "evil.com",
    "t.me/evil",
    "discord.gg/evil",
    "\u0435vil.com",
    "xn--80ak6aa92e.com",
    "evil\u3002com",
    "evil\uff0ecom",
    "1.2.3.4",
    "mail@evil.com",
    "<b>",
    "</b>",
    '<a href="https://evil.com">',
    "</a>",
    "<script>",
    "<code>",
    "</code>",
    "<pre>",
    "<blockquote>",
    "&amp;",
    "&lt;",
    "&",
    "&#64;everyone",
    "\\",
    "\\*",
    "\\@",
    "# heading",
    "## h",
    "-# sub",
    "> quote",
    ">>> q",
    "- item",
    "* item",
    "+ item",
    "1. one",
    "2) two",
    "<t:1700000000:R>",
    "<:emoji:123>",
    "</cmd:1>",
    "/start",
    "/report@bot",
    "\n",
    "\n\n",
    "\n\n\n",
    " ",
    "\t",
    "\r\n",
    '"',
    "'",
    ":",
    "\U0001f44d",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467",
    "\u2764\ufe0f",
    "\u6f22\u5b57",
    "\u0645\u0631\u062d\u0628\u0627",
    "e\u0301",
    "café",
]

# Characters validation refuses: a value holding one must be refused naming its field.
INVISIBLE = [
    "\u200b",
    "\u200c",
    "\u200d",
    "\u2060",
    "\ufeff",
    "\u00ad",
    "\u202e",
    "\u2066",
    "\u200f",
    "\u061c",
    "\U000e0041",
    "\x00",
    "\x1b",
]

_visible_text = st.text(
    st.characters(exclude_categories=["Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"]), max_size=6
)
_pieces = st.lists(st.one_of(st.sampled_from(PIECES), _visible_text), min_size=1, max_size=8)


def _poison(parts: list[str], roll: int, bad: str, where: int) -> str:
    """About one value in sixteen gets a character validation must refuse."""
    if roll == 0:
        parts = [*parts[: where % (len(parts) + 1)], bad, *parts[where % (len(parts) + 1) :]]
    return "".join(parts)


adversarial_text = st.builds(
    _poison, _pieces, st.integers(0, 15), st.sampled_from(INVISIBLE), st.integers(0, 100)
)


def _draw_case(
    data: st.DataObject, spec: TemplateSpec
) -> tuple[dict[str, str], dict[str, str], set[str]]:
    """Adversarial and benign values with the same shape (same optional values, same choices)."""
    adversarial: dict[str, str] = {}
    benign: dict[str, str] = {}
    text_fields: set[str] = set()
    for var in spec.variables:
        if not var.required and not data.draw(st.booleans(), label=f"set {var.name}"):
            continue
        if var.type is VarType.TEXT:
            value = data.draw(adversarial_text, label=var.name)
            adversarial[var.name] = (
                value if len(value) <= var.max_length else value[: var.max_length]
            )
            # A blank value counts as not given, so the benign twin is blank too.
            benign[var.name] = "benign" if value.strip() else value
            text_fields.add(f"variables.{var.name}")
        elif var.type is VarType.CHOICE:
            choice = data.draw(st.sampled_from(var.choices), label=var.name)
            adversarial[var.name] = benign[var.name] = choice
        else:
            adversarial[var.name] = benign[var.name] = SAMPLES[var.type]
    return adversarial, benign, text_fields


def _attempt(call: Callable[[], T]) -> T | InvalidInput:
    """The result, or the InvalidInput raised: refusing is an allowed outcome, checked after."""
    try:
        return call()
    except InvalidInput as exc:
        return exc


def _constructs(messages: tuple[str, ...], oracle: str) -> Counter[str]:
    if oracle == "discord":
        return total([discord_constructs(m) for m in messages])
    return total([telegram_constructs(m) for m in messages])


@pytest.mark.parametrize("name", [spec.name for spec in REGISTRY.list()])
@EXAMPLES
@given(data=st.data())
def test_values_never_add_mentions_links_tags_or_formatting(name: str, data: st.DataObject) -> None:
    spec = REGISTRY.get(name)
    adversarial, benign, text_fields = _draw_case(data, spec)
    everyone = spec.mentions_everyone and data.draw(st.booleans(), label="everyone")
    values = _attempt(lambda: validate_values(spec, adversarial))
    if isinstance(values, InvalidInput):
        event("refused by validation")
        named = {problem.field for problem in values.problems}
        assert named <= text_fields, values.problems
        for field in named:  # each named value really is refused on its own
            key = field.removeprefix("variables.")
            with pytest.raises(InvalidInput):
                validate_values(spec, {**benign, key: adversarial[key]})
        return
    clean = values
    rendered = _attempt(lambda: render(spec, clean, CTX, everyone=everyone))
    if isinstance(rendered, InvalidInput):
        event("refused as too long")
        assert rendered.field in text_fields | {"rendered.discord", "rendered.telegram"}
        assert "message limit" in rendered.message
        return
    event("rendered and compared")
    reference = render(spec, benign, CTX, everyone=everyone)
    for message in rendered.telegram:
        parse_telegram(message)  # well-formed, only Telegram's tags and entities
    assert _constructs(rendered.discord, "discord") == _constructs(reference.discord, "discord")
    assert _constructs(rendered.telegram, "telegram") == _constructs(reference.telegram, "telegram")
    assert rendered == render(spec, clean, CTX, everyone=everyone)  # deterministic


_NO_LINKS = st.characters(exclude_characters=DOTS + ":", exclude_categories=["Cs"])


@EXAMPLES
@given(message=st.text(_NO_LINKS, min_size=1, max_size=300))
def test_readers_see_exactly_the_text_that_was_written(message: str) -> None:
    """Escaping loses nothing: without link-like text, what readers see is the value itself."""
    spec = REGISTRY.get("custom")
    values = _attempt(lambda: validate_values(spec, {"message": message}))
    if isinstance(values, InvalidInput):
        assert values.field == "variables.message"
        return
    rendered = render(spec, values, CTX)
    assert "\n\n".join(discord_visible(m) for m in rendered.discord) == values["message"]
    assert "\n\n".join(telegram_visible(m) for m in rendered.telegram) == values["message"]


_URL_PARTS = st.tuples(
    st.sampled_from(["https://", "HTTPS://", "http://", "", "javascript:", "https:/"]),
    st.sampled_from(["", "", "user@", "status.example.org@", "a:b@"]),
    st.sampled_from(
        [
            "status.example.org",
            "EXAMPLE.org.",
            "xn--80ak6aa92e.com",
            "\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444",
            "ex\u0430mple.org",
            "b\u00fccher.example",
            "exa mple.org",
            "localhost",
            "1.2.3.4",
            "[::1]",
            "ex_ample.org",
            "",
        ]
    ),
    st.sampled_from(["", "", ":443", ":0", ":x", ":65536"]),
    st.lists(
        st.one_of(
            st.sampled_from(["/", "?", "#", "&", "=", "@everyone", "<", ">", '"', "'", "%", "%41"]),
            st.sampled_from(["_", "*", "`", "|", "\\", " ", "\u202e", "\u200b", "~", "(", ")"]),
            st.text(max_size=4),
        ),
        max_size=6,
    ).map("".join),
)


@EXAMPLES
@given(parts=_URL_PARTS)
def test_url_values_become_exactly_one_safe_link(parts: tuple[str, ...]) -> None:
    spec = REGISTRY.get("post-mortem-published")
    raw = "".join(parts)
    values = _attempt(lambda: validate_values(spec, {"postmortem_url": raw, "summary": "s"}))
    if isinstance(values, InvalidInput):
        assert [p.field for p in values.problems] == ["variables.postmortem_url"]
        return
    url = values["postmortem_url"]
    assert url.startswith("https://")
    assert url.isascii()
    assert url.isprintable()
    assert not set(url) & set(' <>"`|\\@')
    rendered = render(spec, values, CTX)
    discord = discord_constructs(rendered.discord[0])
    assert discord["link:autolink"] == 1
    assert discord["link:masked"] == 0
    assert discord["mention:everyone/here"] == discord["mention:user/role"] == 0
    assert parse_telegram(rendered.telegram[0]).hrefs == [url]


_ANY_RAW = st.one_of(st.text(max_size=60), st.sampled_from(list(SAMPLES.values())))


@EXAMPLES
@given(data=st.data())
def test_validation_is_idempotent_and_checks_never_crash(data: st.DataObject) -> None:
    spec = REGISTRY.get(data.draw(st.sampled_from([s.name for s in REGISTRY.list()])))
    raw = {var.name: data.draw(_ANY_RAW, label=var.name) for var in spec.variables}
    check_values(spec, raw, official_domains=["example.org"], known_contracts={})
    values = _attempt(lambda: validate_values(spec, raw))
    if isinstance(values, InvalidInput):
        assert all(p.field.startswith("variables.") for p in values.problems)
        return
    assume(values)
    assert validate_values(spec, values) == values
