"""Warnings shown to approvers: links, addresses, next-update time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from comms.rendering import RenderWarning, TemplateRegistry, check_values, eip55

REGISTRY = TemplateRegistry.default()
OFFICIAL = ["example.org", "example-protocol.xyz"]
CHECKSUMMED = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
KNOWN = {CHECKSUMMED.lower(): "Lending pool"}


def _warnings(name: str, values: dict[str, str], **kwargs: object) -> list[RenderWarning]:
    return check_values(
        REGISTRY.get(name),
        values,
        official_domains=OFFICIAL,
        known_contracts=KNOWN,
        **kwargs,  # type: ignore[arg-type]
    )


def _codes(warnings: list[RenderWarning]) -> list[tuple[str, str]]:
    return [(w.code, w.field) for w in warnings]


@pytest.mark.parametrize(
    "url",
    [
        "https://example.org/status",
        "https://status.example.org",
        "https://a.b.example-protocol.xyz/x",
        "https://EXAMPLE.org.",
    ],
)
def test_official_domains_and_their_subdomains_do_not_warn(url: str) -> None:
    assert _warnings("post-mortem-published", {"postmortem_url": url, "summary": "s"}) == []


def test_unofficial_link_warns_naming_host_and_field() -> None:
    (warning,) = _warnings(
        "post-mortem-published", {"postmortem_url": "https://medium.com/@team/pm", "summary": "s"}
    )
    assert warning.code == "link.unofficial"
    assert warning.field == "variables.postmortem_url"
    assert "medium.com" in warning.message
    assert "Post-mortem link" in warning.message


def test_suffix_trick_is_not_a_subdomain() -> None:
    warnings = _warnings(
        "post-mortem-published", {"postmortem_url": "https://evilexample.org", "summary": "s"}
    )
    assert "link.unofficial" in [w.code for w in warnings]


def test_idn_host_is_shown_as_punycode() -> None:
    warnings = _warnings(
        "post-mortem-published", {"postmortem_url": "https://ex\u0430mple.org/pm", "summary": "s"}
    )
    codes = [w.code for w in warnings]
    assert codes == ["link.idn", "link.unofficial", "link.lookalike"]
    idn = warnings[0]
    assert "xn--exmple-4nf.org" in idn.message
    assert "ex\u0430mple.org" in idn.message
    assert "xn--exmple-4nf.org" in warnings[1].message
    assert "imitates the official domain example.org" in warnings[2].message


def test_idn_always_warns_even_under_an_official_domain() -> None:
    warnings = _warnings(
        "post-mortem-published",
        {"postmortem_url": "https://b\u00fccher.example.org", "summary": "s"},
    )
    assert [w.code for w in warnings] == ["link.idn"]


@pytest.mark.parametrize("host", ["examp1e.org", "exarnple.org", "status.examp1e.org"])
def test_ascii_lookalikes_are_flagged(host: str) -> None:
    warnings = _warnings(
        "post-mortem-published", {"postmortem_url": f"https://{host}", "summary": "s"}
    )
    assert [w.code for w in warnings] == ["link.unofficial", "link.lookalike"]


def test_known_checksummed_address_is_quiet() -> None:
    values = {"update": "u", "funds_status": "safe", "next_update": "2026-11-27T10:00Z"}
    assert _warnings("active-exploit-update", {**values, "attacker_address": CHECKSUMMED}) == []


OTHER_WRONG = "0xFB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"  # first letter's case flipped


def test_bad_checksum_and_unknown_contract() -> None:
    wrong = OTHER_WRONG
    values = {"update": "u", "funds_status": "safe", "next_update": "2026-11-27T10:00Z"}
    warnings = _warnings("active-exploit-update", {**values, "attacker_address": wrong})
    assert _codes(warnings) == [
        ("address.checksum", "variables.attacker_address"),
        ("address.unknown", "variables.attacker_address"),
    ]
    assert "fails the EIP-55 checksum" in warnings[0].message


def test_single_case_address_has_no_checksum_and_shows_the_label() -> None:
    values = {"update": "u", "funds_status": "safe", "next_update": "2026-11-27T10:00Z"}
    warnings = _warnings(
        "active-exploit-update", {**values, "attacker_address": CHECKSUMMED.lower()}
    )
    (warning,) = warnings
    assert warning.code == "address.checksum"
    assert "no EIP-55 checksum" in warning.message
    assert "(Lending pool)" in warning.message
    assert CHECKSUMMED in warning.message


@pytest.mark.parametrize(
    "address",
    [
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ],
)
def test_eip55_reference_vectors(address: str) -> None:
    assert eip55(address.lower()) == address
    assert eip55(address.upper().replace("0X", "0x")) == address


def test_known_contract_with_a_wrong_checksum_is_flagged_with_its_label() -> None:
    values = {"update": "u", "funds_status": "safe", "next_update": "2026-11-27T10:00Z"}
    wrong = CHECKSUMMED[:-1] + "D"
    (warning,) = _warnings("active-exploit-update", {**values, "attacker_address": wrong})
    assert warning.code == "address.checksum"
    assert "(Lending pool)" in warning.message


def test_addresses_inside_text_are_checked_too() -> None:
    bad = OTHER_WRONG
    warnings = _warnings("custom", {"message": f"Do not send to {bad}."})
    assert _codes(warnings) == [
        ("address.checksum", "variables.message"),
        ("address.unknown", "variables.message"),
    ]


def test_links_and_mentions_in_text_are_reported() -> None:
    warnings = _warnings("custom", {"message": "Claim at https://evil.com or evil.org @everyone"})
    assert [w.code for w in warnings] == ["text.link", "text.mention"]
    assert "link in text was made inert" in warnings[0].message
    assert "use a URL field" in warnings[0].message
    assert "hxxps[://]evil[.]com" in warnings[0].message
    assert "@everyone" in warnings[1].message


def test_missing_next_update_on_a_partial_form() -> None:
    warnings = _warnings("active-exploit-initial", {"summary": "s"})
    assert ("next_update.missing", "variables.next_update") in _codes(warnings)
    assert _warnings("resolved", {"summary": "s"}) == []


def test_next_update_in_the_past() -> None:
    now = datetime(2026, 11, 27, 11, 0, tzinfo=UTC)
    values = {"update": "u", "funds_status": "safe", "next_update": "2026-11-27T10:00Z"}
    warnings = _warnings("active-exploit-update", values, now=now)
    assert _codes(warnings) == [("next_update.past", "variables.next_update")]
    later = {**values, "next_update": "2026-11-27T12:00Z"}
    assert _warnings("active-exploit-update", later, now=now) == []


def test_invalid_values_are_left_to_validation() -> None:
    values = {"postmortem_url": "http://evil.com", "summary": "s"}
    assert _warnings("post-mortem-published", values) == []
