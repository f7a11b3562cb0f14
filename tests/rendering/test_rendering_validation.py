"""Every validation rule, each refusing with the exact field named."""

from __future__ import annotations

import pytest

from comms.errors import InvalidInput
from comms.rendering import TemplateRegistry, parse_template, validate_values
from tests.rendering.rendering_oracles import sample_values

REGISTRY = TemplateRegistry.default()
_SPEC = parse_template(
    "all-types",
    """{#---
title = "All types"
description = "One variable of each type, for validation tests."
audience = "public"

[[variables]]
name = "note"
type = "text"
max_length = 20

[[variables]]
name = "page"
type = "url"

[[variables]]
name = "contract"
type = "address"

[[variables]]
name = "at"
type = "datetime"

[[variables]]
name = "wait"
type = "duration"

[[variables]]
name = "state"
type = "choice"
choices = ["open", "closed"]
default = "open"

[[variables]]
name = "must"
type = "text"
required = true
---#}
{{ note }}{{ page }}{{ contract }}{{ at }}{{ wait }}{{ state }}{{ must }}
""",
)


def _problem(raw: dict[str, str]) -> tuple[str, str]:
    with pytest.raises(InvalidInput) as caught:
        validate_values(_SPEC, {"must": "ok", **raw})
    assert len(caught.value.problems) == 1, caught.value.problems
    problem = caught.value.problems[0]
    return problem.field, problem.problem


@pytest.mark.parametrize(
    ("raw", "field", "fragment"),
    [
        # text
        ({"note": "x" * 21}, "variables.note", "21 characters long; the limit is 20"),
        ({"note": "a\u202eb"}, "variables.note", "U+202E RIGHT-TO-LEFT OVERRIDE"),
        ({"note": "a\u2066b"}, "variables.note", "text-direction control"),
        ({"note": "a\u200eb"}, "variables.note", "U+200E"),
        ({"note": "a\u061cb"}, "variables.note", "U+061C"),
        ({"note": "a\u200bb"}, "variables.note", "U+200B ZERO WIDTH SPACE"),
        ({"note": "a\u200cb"}, "variables.note", "U+200C"),
        ({"note": "a\u2060b"}, "variables.note", "U+2060 WORD JOINER"),
        ({"note": "a\ufeffb"}, "variables.note", "U+FEFF"),
        ({"note": "a\u00adb"}, "variables.note", "U+00AD SOFT HYPHEN"),
        ({"note": "a\u200db"}, "variables.note", "zero-width joiner"),
        ({"note": "a\u3164b"}, "variables.note", "HANGUL FILLER"),
        ({"note": "a\U000e0041b"}, "variables.note", "U+E0041"),
        ({"note": "a\U000e0100b"}, "variables.note", "VARIATION SELECTOR-17"),
        ({"note": "a\x07b"}, "variables.note", "control character"),
        ({"note": "a\u2028b"}, "variables.note", "line or paragraph separator"),
        ({"note": "a\ue000b"}, "variables.note", "private-use"),
        ({"note": "e" + "\u0301" * 6}, "variables.note", "combining marks"),
        ({"must": "   "}, "variables.must", "is required"),
        # url
        ({"page": "http://status.example.org"}, "variables.page", "must start with https://"),
        ({"page": "status.example.org"}, "variables.page", "must start with https://"),
        ({"page": "javascript:alert(1)"}, "variables.page", "must start with https://"),
        ({"page": "https://app.example.org@evil.com/x"}, "variables.page", "'evil.com'"),
        ({"page": "https://exa mple.org"}, "variables.page", "space"),
        ({"page": "https://example.org/\u202e"}, "variables.page", "invisible"),
        ({"page": "https://example.org/<script>"}, "variables.page", "'<'"),
        ({"page": "https://example.org\\@evil.com"}, "variables.page", "'\\\\'"),
        ({"page": "https://localhost/x"}, "variables.page", "not a public domain"),
        ({"page": "https://127.0.0.1/x"}, "variables.page", "not a public domain"),
        ({"page": "https://[::1]/x"}, "variables.page", "IP address"),
        ({"page": "https://[example.org/x"}, "variables.page", "'[' or ']'"),
        ({"page": "https://example.org]/x"}, "variables.page", "'[' or ']'"),
        ({"page": "https:///x"}, "variables.page", "no host"),
        ({"page": "https://example.org:99999"}, "variables.page", "invalid port"),
        ({"page": "https://ex_ample.org"}, "variables.page", "invalid host"),
        ({"page": "https://example.org/%zz"}, "variables.page", "'%'"),
        ({"page": "https://example.org/" + "a" * 500}, "variables.page", "limit is 500"),
        # address
        ({"contract": "0x123"}, "variables.contract", "0x followed by 40 hex digits"),
        ({"contract": "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"}, "variables.contract", "0x"),
        ({"contract": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeZ"}, "variables.contract", "hex"),
        ({"contract": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed00"}, "variables.contract", "40"),
        # datetime
        ({"at": "2026-11-27T10:00"}, "variables.at", "must be in UTC: add Z"),
        ({"at": "2026-11-27T10:00+02:00"}, "variables.at", "not +02:00"),
        ({"at": "2026-11-27T10:00-05:00"}, "variables.at", "must be in UTC"),
        ({"at": "27/11/2026 10:00"}, "variables.at", "ISO-8601"),
        ({"at": "2026-02-30T10:00Z"}, "variables.at", "not a real date"),
        ({"at": "2026-11-27T25:00Z"}, "variables.at", "not a real date"),
        # duration
        ({"wait": "30"}, "variables.wait", "like 30m, 2h"),
        ({"wait": "2 hours"}, "variables.wait", "like 30m"),
        ({"wait": "0m"}, "variables.wait", "longer than zero"),
        ({"wait": "-5m"}, "variables.wait", "like 30m"),
        ({"wait": "1000d"}, "variables.wait", "longer than 90 days"),
        # choice
        ({"state": "maybe"}, "variables.state", "must be one of open, closed"),
        # unknown
        ({"colour": "red"}, "variables.colour", "unknown variable"),
    ],
)
def test_each_rule_names_the_field(raw: dict[str, str], field: str, fragment: str) -> None:
    got_field, problem = _problem(raw)
    assert got_field == field
    assert fragment in problem, problem


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_values(
            _SPEC,
            {"page": "http://x.org", "contract": "0x1", "at": "soon", "colour": "red"},
        )
    fields = [p.field for p in caught.value.problems]
    assert fields == [
        "variables.colour",
        "variables.page",
        "variables.contract",
        "variables.at",
        "variables.must",
    ]
    assert caught.value.field == "variables.colour"


def test_missing_required_variables_of_a_real_template() -> None:
    spec = REGISTRY.get("active-exploit-initial")
    with pytest.raises(InvalidInput) as caught:
        validate_values(spec, {})
    assert {p.field for p in caught.value.problems} == {
        "variables.summary",
        "variables.affected",
        "variables.funds_status",
        "variables.next_update",
    }


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ({"note": "  caf\u0065\u0301 \r\nline\t2  "}, {"note": "caf\u00e9\nline 2"}),
        ({"note": "a\n\n\n\nb"}, {"note": "a\n\nb"}),
        ({"note": "family \U0001f468\u200d\U0001f469\u200d\U0001f467"}, None),
        ({"note": "heart \u2764\ufe0f ok"}, None),
        (
            {"page": "HTTPS://Status.Example.ORG./a b"[:-2]},
            {"page": "https://status.example.org/a"},
        ),
        ({"page": "https://b\u00fccher.example/\u00fc?q=@x#@"}, None),
        (
            {"page": "https://example.org:8443/p?a=1&b=2"},
            {"page": "https://example.org:8443/p?a=1&b=2"},
        ),
        ({"at": "2026-11-27T10:00:59.123Z"}, {"at": "2026-11-27T10:00:59Z"}),
        ({"at": "2026-11-27 10:00 UTC"}, {"at": "2026-11-27T10:00:00Z"}),
        ({"at": "2026-11-27T10:00:00+00:00"}, {"at": "2026-11-27T10:00:00Z"}),
        ({"wait": "90m"}, {"wait": "1h30m"}),
        ({"wait": "1d 2h"}, {"wait": "1d2h"}),
        ({"contract": " 0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed "}, None),
    ],
)
def test_values_are_normalised(raw: dict[str, str], normalised: dict[str, str] | None) -> None:
    values = validate_values(_SPEC, {"must": "ok", **raw})
    values.pop("must")
    assert values.pop("state") == "open"  # the declared default
    if normalised is not None:
        assert values == normalised
    assert validate_values(_SPEC, {"must": "ok", **values}) == {
        "must": "ok",
        "state": "open",
        **values,
    }


def test_idn_url_is_normalised_to_punycode_and_at_signs_are_encoded() -> None:
    values = validate_values(
        _SPEC, {"must": "ok", "page": "https://b\u00fccher.example/\u00fc?q=@x#@"}
    )
    assert values["page"] == "https://xn--bcher-kva.example/%C3%BC?q=%40x#%40"


def test_emoji_zwj_sequences_are_allowed_but_not_elsewhere() -> None:
    ok = validate_values(_SPEC, {"must": "\U0001f469\u200d\U0001f4bb dev"})
    assert ok["must"] == "\U0001f469\u200d\U0001f4bb dev"
    with pytest.raises(InvalidInput):
        validate_values(_SPEC, {"must": "every\u200done"})


def test_non_string_values_are_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_values(_SPEC, {"must": 5})  # type: ignore[dict-item]
    assert caught.value.problems[0].field == "variables.must"


def test_sample_values_are_valid_for_every_template() -> None:
    for spec in REGISTRY.list():
        validate_values(spec, sample_values(spec))
