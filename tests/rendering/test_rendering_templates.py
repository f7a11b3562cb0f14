"""Every shipped template loads, is well declared, and renders valid messages on both platforms."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
from jinja2.exceptions import SecurityError

from comms.enums import Platform, Severity
from comms.errors import InvalidInput, NotFound, RuleViolation
from comms.rendering import (
    DISCORD_MESSAGE_LIMIT,
    TELEGRAM_MESSAGE_LIMIT,
    OfficialLink,
    RenderContext,
    TemplateLoadError,
    TemplateRegistry,
    TemplateSpec,
    VarType,
    default_templates_dir,
    message_length,
    parse_template,
    render,
    validate_values,
)
from comms.rendering.environment import ENVIRONMENTS
from tests.rendering.rendering_oracles import (
    CTX,
    SAMPLES,
    discord_constructs,
    parse_telegram,
    sample_values,
    telegram_constructs,
)

REPO = Path(__file__).resolve().parents[2]
REGISTRY = TemplateRegistry.default()
PUBLIC = [
    "account-compromised",
    "active-exploit-initial",
    "active-exploit-update",
    "correction",
    "custom",
    "frontend-down",
    "post-mortem-published",
    "protocol-paused",
    "resolved",
    "third-party-outage",
]
INTERNAL = [
    "internal-approval-request",
    "internal-delivery-problem",
    "internal-gate-change",
    "internal-gate-settings",
    "internal-incident-p1",
    "internal-leader-handoff",
    "internal-monitoring-due",
    "internal-platform-status",
    "internal-report-ack",
    "internal-responder-alert",
    "internal-update-due",
]
ALL = PUBLIC + INTERNAL


def test_registry_lists_exactly_the_expected_templates_sorted() -> None:
    assert [s.name for s in REGISTRY.list()] == sorted(ALL)
    assert [s.name for s in REGISTRY.list("public")] == PUBLIC
    assert [s.name for s in REGISTRY.list("internal")] == INTERNAL
    assert default_templates_dir() == REPO / "templates"


def test_unknown_template_is_not_found_naming_the_field() -> None:
    with pytest.raises(NotFound) as caught:
        REGISTRY.get("active-exploit")
    assert caught.value.field == "template"
    assert "active-exploit" in caught.value.message


def test_registry_from_an_explicit_directory(tmp_path: Path) -> None:
    (tmp_path / "custom.j2").write_text((REPO / "templates" / "custom.j2").read_text())
    registry = TemplateRegistry.default(tmp_path)
    assert [s.name for s in registry.list()] == ["custom"]
    with pytest.raises(TemplateLoadError, match="does not exist"):
        TemplateRegistry.default(tmp_path / "missing")


@pytest.mark.parametrize("name", ALL)
def test_every_variable_is_declared_with_label_and_known_type(name: str) -> None:
    spec = REGISTRY.get(name)
    assert spec.title
    assert spec.description
    for var in spec.variables:
        assert var.label, var.name
        assert isinstance(var.type, VarType)
        assert (var.type is VarType.CHOICE) == bool(var.choices)
    if spec.needs_next_update:
        nxt = spec.variable("next_update")
        assert nxt.required
        assert nxt.type is VarType.DATETIME
    assert len(spec.digest) == 64


def test_kind_flags() -> None:
    flags = {s.name: s for s in REGISTRY.list()}
    assert flags["resolved"].locks_thread
    assert flags["correction"].is_correction
    assert {n for n, s in flags.items() if s.mentions_everyone} == {
        "active-exploit-initial",
        "protocol-paused",
        "account-compromised",
    }
    assert {n for n, s in flags.items() if s.needs_next_update} == {
        "active-exploit-initial",
        "active-exploit-update",
        "protocol-paused",
        "frontend-down",
        "account-compromised",
        "third-party-outage",
    }
    assert not any(s.mentions_everyone for s in REGISTRY.list("internal"))


def test_custom_has_exactly_one_required_text_variable_message() -> None:
    (var,) = REGISTRY.get("custom").variables
    assert (var.name, var.type, var.required) == ("message", VarType.TEXT, True)


def test_funds_safe_is_only_said_when_a_choice_says_so() -> None:
    for spec in REGISTRY.list("public"):
        if "funds_status" not in spec.variable_names:
            continue
        for choice in spec.variable("funds_status").choices:
            values = {**sample_values(spec), "funds_status": choice}
            text = "\n".join(render(spec, values, CTX).telegram)
            assert ("funds are safe" in text or "not affected" in text) == (choice == "safe"), (
                spec.name,
                choice,
            )


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("optional", [True, False], ids=["all", "required-only"])
def test_renders_valid_messages_on_both_platforms(name: str, optional: bool) -> None:
    spec = REGISTRY.get(name)
    values = validate_values(spec, sample_values(spec, optional=optional))
    for choice_values in _choice_combinations(spec, values):
        rendered = render(spec, choice_values, CTX)
        assert rendered.discord
        assert rendered.telegram
        for message in rendered.discord:
            assert 0 < len(message) <= DISCORD_MESSAGE_LIMIT
            assert message == message.strip()
            assert "\n\n\n" not in message
            assert "@everyone" not in message
            assert "None" not in message
        for message in rendered.telegram:
            assert 0 < message_length(Platform.TELEGRAM, message) <= TELEGRAM_MESSAGE_LIMIT
            parse_telegram(message)  # raises when Telegram would refuse it
            assert "None" not in message


def _choice_combinations(spec: TemplateSpec, values: dict[str, str]) -> list[dict[str, str]]:
    """The values once for every combination of the template's choices."""
    combos = [values]
    for var in spec.variables:
        if var.type is VarType.CHOICE and var.name in values:
            combos = [{**c, var.name: choice} for c in combos for choice in var.choices]
    return combos


@pytest.mark.parametrize("name", ALL)
def test_optional_values_appear_only_when_given(name: str) -> None:
    spec = REGISTRY.get(name)
    full = render(spec, sample_values(spec), CTX)
    minimal = render(spec, sample_values(spec, optional=False), CTX)
    optional_urls = [v for v in spec.variables if v.type is VarType.URL and not v.required]
    if optional_urls:
        assert SAMPLES[VarType.URL] in "".join(full.telegram)
        assert SAMPLES[VarType.URL] not in "".join(minimal.telegram)


_LITERAL_FORBIDDEN = re.compile(r"[<>&*_~|`\[\]\\@#]|://|\w[.]\w|^\s*(?:[-+>]|\d+[.)])", re.M)


@pytest.mark.parametrize("name", ALL)
def test_literal_template_text_is_plain_on_both_platforms(name: str) -> None:
    """Our own words must not contain anything either platform would interpret."""
    spec = REGISTRY.get(name)
    body = spec.source.split("---#}\n", 1)[1]
    env = ENVIRONMENTS[Platform.DISCORD]
    literal = "".join(value for _, kind, value in env.lex(body) if kind == "data")
    assert not _LITERAL_FORBIDDEN.findall(literal), _LITERAL_FORBIDDEN.findall(literal)


@pytest.mark.parametrize("name", ALL)
def test_templates_place_links_only_for_url_values(name: str) -> None:
    spec = REGISTRY.get(name)
    values = sample_values(spec)
    rendered = render(spec, values, CTX)
    url_values = [values[v.name] for v in spec.variables if v.type is VarType.URL]
    uses_links = "official_links" in spec.source
    expected_links = len(url_values) + (len(CTX.official_links) if uses_links else 0)
    hrefs: list[str] = []
    for message in rendered.telegram:
        hrefs.extend(parse_telegram(message).hrefs)
    assert len(hrefs) == expected_links
    assert set(url_values) <= set(hrefs)
    discord = sum(discord_constructs(m)["link:autolink"] for m in rendered.discord)
    assert discord == expected_links


# --- @everyone ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["active-exploit-initial", "protocol-paused", "account-compromised"]
)
def test_everyone_is_placed_once_on_discord_only_for_p1(name: str) -> None:
    spec = REGISTRY.get(name)
    rendered = render(spec, sample_values(spec), CTX, everyone=True)
    assert rendered.mentions_everyone
    assert rendered.discord[0].startswith("@everyone\n")
    assert sum(discord_constructs(m)["mention:everyone/here"] for m in rendered.discord) == 1
    assert not any("everyone" in m for m in rendered.telegram)
    quiet = render(spec, sample_values(spec), CTX)
    assert not quiet.mentions_everyone
    assert not any("@everyone" in m for m in quiet.discord)


@pytest.mark.parametrize("name", ["resolved", "custom", "internal-responder-alert"])
def test_everyone_is_refused_where_the_template_does_not_ask(name: str) -> None:
    spec = REGISTRY.get(name)
    with pytest.raises(RuleViolation) as caught:
        render(spec, sample_values(spec), CTX, everyone=True)
    assert caught.value.rule == "mention.everyone"


@pytest.mark.parametrize("severity", [Severity.P2, Severity.P5, None])
def test_everyone_is_refused_below_p1(severity: Severity | None) -> None:
    spec = REGISTRY.get("active-exploit-initial")
    ctx = RenderContext("Example Protocol", "INC-1", "t", severity)
    with pytest.raises(RuleViolation, match="P1"):
        render(spec, sample_values(spec), ctx, everyone=True)


# --- context ------------------------------------------------------------------------------------


def test_context_strings_are_escaped_and_cleaned() -> None:
    spec = REGISTRY.get("internal-approval-request")
    ctx = RenderContext(
        protocol_name="**Evil** @everyone",
        incident_key="INC-1 <@&123>",
        incident_title="Drain\u202e at evil.com <b>x</b>",
        severity=Severity.P2,
    )
    rendered = render(spec, sample_values(spec), ctx)
    discord = "\n".join(rendered.discord)
    telegram = "\n".join(rendered.telegram)
    assert "\u202e" not in discord + telegram
    assert "<@&123>" not in discord
    assert "\\<@\u200b&123\\>" in discord
    assert "evil\\[.\\]com" in discord
    assert "evil[.]com" in telegram
    assert "&lt;b&gt;x&lt;/\u200bb&gt;" in telegram


def test_public_templates_need_an_incident() -> None:
    spec = REGISTRY.get("resolved")
    with pytest.raises(InvalidInput) as caught:
        render(spec, sample_values(spec), RenderContext("Example Protocol"))
    assert caught.value.field == "ctx.incident_key"
    ack = REGISTRY.get("internal-report-ack")
    assert render(ack, {"reference": "R-1234"}, RenderContext("Example Protocol")).discord


def test_official_links_are_validated() -> None:
    spec = REGISTRY.get("internal-report-ack")
    ctx = RenderContext("P", official_links=(OfficialLink("X", "http://insecure.example.org"),))
    with pytest.raises(InvalidInput) as caught:
        render(spec, {"reference": "R-1"}, ctx)
    assert caught.value.field == "ctx.official_links[0]"


def test_account_compromised_lists_the_channels_to_trust() -> None:
    spec = REGISTRY.get("account-compromised")
    rendered = render(spec, sample_values(spec), CTX)
    text = "\n".join(rendered.telegram)
    assert "Only trust these channels" in text
    assert '<a href="https://status.example.org">' in text
    assert '<a href="https://discord.gg/example">' in text
    assert "revoke" in text
    no_links = render(spec, sample_values(spec), RenderContext("P", "INC-1", "t", Severity.P1))
    assert "This channel, until we confirm others." in no_links.telegram[0]


def test_report_ack_carries_the_safety_notice_and_no_reporter_text() -> None:
    spec = REGISTRY.get("internal-report-ack")
    assert [v.name for v in spec.variables] == ["reference"]
    rendered = render(spec, {"reference": "R-1234"}, CTX)
    text = rendered.telegram[0]
    assert "never send you a direct message first" in text
    assert "seed phrase" in text
    assert "private keys" in text
    assert "sign" in text
    assert "<code>R-1234</code>" in text


def test_approval_request_shows_hash_prefix_kind_version_author() -> None:
    spec = REGISTRY.get("internal-approval-request")
    digest = hashlib.sha256(b"x").hexdigest()
    values = {"kind": "protocol-paused", "version": "3", "content_hash": digest, "author": "ana"}
    text = render(spec, values, CTX).telegram[0]
    assert f"<code>{digest[:12]}</code>" in text
    assert digest[12:] not in text
    assert "protocol-paused" in text
    assert "version 3" in text
    assert "ana" in text
    assert "INC-2026-0007" in text


def test_responder_alert_defangs_reporter_content() -> None:
    spec = REGISTRY.get("internal-responder-alert")
    values = {
        **sample_values(spec, optional=False),
        "domains": "uniswap-claim.com\nevil.xyz",
        "sample": "go to https://evil.xyz/claim now @everyone\n\nor DM @scammer",
        "reporters": "<@123>, @alice",
    }
    rendered = render(spec, values, CTX)
    for message in rendered.discord:
        found = discord_constructs(message)
        assert found["link:autolink"] == 0
        assert found["mention:everyone/here"] == 0
        assert found["mention:user/role"] == 0
    for message in rendered.telegram:
        found = telegram_constructs(message)
        assert found["href"] == 0
        assert found["auto:domain"] == 0
        assert found["auto:mention"] == 0
    assert "<blockquote>go to hxxps[://]evil[.]xyz/claim now" in rendered.telegram[0]


# --- length and splitting -----------------------------------------------------------------------


def test_long_text_is_split_at_paragraphs_in_order() -> None:
    spec = REGISTRY.get("custom")
    message = "\n\n".join(f"Paragraph {i}: " + "word " * 250 + "end." for i in range(3))
    rendered = render(spec, {"message": message}, CTX)
    assert len(rendered.discord) == 3
    assert all(len(m) <= DISCORD_MESSAGE_LIMIT for m in rendered.discord)
    assert "\n\n".join(rendered.discord) == message
    assert [m.split(":")[0] for m in rendered.discord] == [
        "Paragraph 0",
        "Paragraph 1",
        "Paragraph 2",
    ]
    assert rendered.telegram == (message,)


def test_telegram_splits_at_its_own_limit() -> None:
    head = _HEAD + "".join(
        f'[[variables]]\nname = "{n}"\ntype = "text"\nmax_length = 4000\n' for n in "abc"
    )
    spec = parse_template("three", head + "---#}\n{{ a }}\n\n{{ b }}\n\n{{ c }}\n")
    values = {n: "\n\n".join(f"{n}{i} " + "x" * 1400 for i in range(2)) for n in "abc"}
    rendered = render(spec, values, CTX)
    assert len(rendered.discord) == 6
    assert len(rendered.telegram) == 3
    for series in (rendered.discord, rendered.telegram):
        assert "\n\n".join(series) == "\n\n".join(values[n] for n in "abc")
    assert all(
        message_length(Platform.TELEGRAM, m) <= TELEGRAM_MESSAGE_LIMIT for m in rendered.telegram
    )


def test_paragraph_too_long_names_the_variable() -> None:
    spec = REGISTRY.get("custom")
    with pytest.raises(InvalidInput) as caught:
        render(spec, {"message": "x" * 2100}, CTX)
    assert caught.value.field == "variables.message"
    assert "2100" in caught.value.message
    assert "2000" in caught.value.message


def test_escaping_counts_towards_the_discord_limit() -> None:
    spec = REGISTRY.get("custom")
    with pytest.raises(InvalidInput) as caught:
        render(spec, {"message": "*" * 1500}, CTX)  # 3000 characters once escaped
    assert caught.value.field == "variables.message"


def test_paragraph_too_long_without_a_variable_names_the_platform() -> None:
    spec = parse_template(
        "long-literal",
        '{#---\ntitle = "t"\ndescription = "d"\naudience = "public"\n---#}\n' + "y" * 2500 + "\n",
    )
    with pytest.raises(InvalidInput) as caught:
        render(spec, {}, CTX)
    assert caught.value.field == "rendered.discord"


def test_telegram_length_counts_visible_utf16_units() -> None:
    assert message_length(Platform.TELEGRAM, "<b>a&amp;b</b>") == 3
    assert message_length(Platform.TELEGRAM, "\U0001f44d") == 2
    assert message_length(Platform.DISCORD, "<b>a</b>") == 8


# --- determinism --------------------------------------------------------------------------------


def _digest_all() -> str:
    blob = []
    for spec in REGISTRY.list():
        rendered = render(spec, sample_values(spec), CTX)
        blob.append([spec.name, list(rendered.discord), list(rendered.telegram)])
    return hashlib.sha256(json.dumps(blob).encode()).hexdigest()


def test_same_input_same_bytes() -> None:
    spec = REGISTRY.get("active-exploit-initial")
    values = sample_values(spec)
    assert render(spec, values, CTX) == render(spec, dict(reversed(values.items())), CTX)
    assert _digest_all() == _digest_all()


def test_same_bytes_across_processes_and_hash_seeds() -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "import test_rendering_templates as t; print(t._digest_all())"
    )
    here = str(Path(__file__).parent)
    digests = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code, here],
            capture_output=True,
            text=True,
            check=True,
            env=env,
            cwd=REPO,
        )
        digests.add(out.stdout.strip())
    assert digests == {_digest_all()}


# --- template files are checked when loaded ----------------------------------------------------

_HEAD = '{#---\ntitle = "t"\ndescription = "d"\naudience = "public"\n'


@pytest.mark.parametrize(
    ("name", "source", "problem"),
    [
        ("x", "Hello\n", "must start with"),
        ("x", _HEAD + "colour = 1\n---#}\nhi\n", "unknown keys: colour"),
        # Keys of earlier releases that nothing acted on: refused, saying where that lives now.
        ("x", _HEAD + "pin = true\n---#}\nhi\n", "no longer exist (they were never acted on)"),
        ("x", _HEAD + "pin = false\n---#}\nhi\n", "pin: pinning is the destination's `pin`"),
        (
            "x",
            _HEAD + "thread_reply = true\n---#}\nhi\n",
            "thread_reply: follow-ups thread after the incident's first announcement",
        ),
        ("x", _HEAD + "title2 = \n---#}\nhi\n", "not valid TOML"),
        ("Bad_Name", _HEAD + "---#}\nhi\n", "file name"),
        ("x", _HEAD + "---#}\n{{ message }}\n", "undeclared variables: message"),
        (
            "x",
            _HEAD + '[[variables]]\nname = "a"\ntype = "text"\n---#}\nhi\n',
            "never uses: a",
        ),
        (
            "x",
            _HEAD + '[[variables]]\nname = "a"\ntype = "number"\n---#}\n{{ a }}\n',
            "type must be one of",
        ),
        (
            "x",
            _HEAD + '[[variables]]\nname = "a"\ntype = "choice"\n---#}\n{{ a }}\n',
            "choices must be",
        ),
        (
            "x",
            _HEAD + '[[variables]]\nname = "a"\ntype = "url"\ndefault = "http://x.org"\n'
            "---#}\n{{ a }}\n",
            "default must start with https",
        ),
        (
            "x",
            _HEAD + '[[variables]]\nname = "protocol"\ntype = "text"\n---#}\n{{ protocol }}\n',
            "reserved",
        ),
        (
            "x",
            _HEAD + '[[variables]]\nname = "a"\ntype = "text"\n[[variables]]\nname = "a"\n'
            'type = "text"\n---#}\n{{ a }}\n',
            "declared twice: a",
        ),
        ("x", _HEAD + "---#}\n{{ everyone() }}\n", "mentions_everyone"),
        ("x", _HEAD + "needs_next_update = true\n---#}\nhi\n", "next_update"),
        ("x", _HEAD + "---#}\n{% if %}\n", "line"),
        (
            "internal-x",
            '{#---\ntitle = "t"\ndescription = "d"\naudience = "internal"\n'
            "mentions_everyone = true\n---#}\n{{ everyone() }}\n",
            "never ping",
        ),
        ("internal-x", _HEAD + "---#}\nhi\n", "internal-"),
    ],
)
def test_malformed_templates_are_refused_at_load(name: str, source: str, problem: str) -> None:
    with pytest.raises(TemplateLoadError, match=re.escape(problem)):
        parse_template(name, source)


def test_the_sandbox_blocks_python_internals() -> None:
    spec = parse_template(
        "sneaky",
        _HEAD + '[[variables]]\nname = "a"\ntype = "text"\n---#}\n{{ a.__class__.__mro__ }}\n',
    )
    with pytest.raises(SecurityError):
        render(spec, {"a": "x"}, CTX)


def test_links_only_come_from_url_values() -> None:
    spec = parse_template(
        "bad-link",
        _HEAD + '[[variables]]\nname = "a"\ntype = "text"\n---#}\n{{ link(a) }}\n',
    )
    with pytest.raises(jinja2.TemplateRuntimeError, match="url-type"):
        render(spec, {"a": "https://evil.com"}, CTX)


def test_printing_an_unset_optional_variable_is_a_template_bug() -> None:
    spec = parse_template(
        "unguarded",
        _HEAD + '[[variables]]\nname = "a"\ntype = "text"\n---#}\nSee {{ a }}\n',
    )
    with pytest.raises(jinja2.TemplateRuntimeError, match="unset optional"):
        render(spec, {}, CTX)


def test_helper_output_cannot_be_reformatted_into_markup() -> None:
    spec = parse_template(
        "concat",
        _HEAD + '[[variables]]\nname = "a"\ntype = "url"\n---#}\n{{ "x" ~ a }} {{ a | upper }}\n',
    )
    rendered = render(spec, {"a": "https://status.example.org/a_b"}, CTX)
    assert parse_telegram(rendered.telegram[0]).hrefs == []
    assert discord_constructs(rendered.discord[0])["char:<"] == 0
