"""Entities from untrusted reports: addresses with their EIP-55 state, tx hashes, URLs, domains.

Examples first (the EIP-55 spec's vectors, look-alike domains as attackers write them), then
properties: a checksummed address or a tx hash in any surrounding text is found as exactly that,
invisible characters change nothing, and no text makes extraction fail.
"""

from __future__ import annotations

import os

import idna
import pytest
from eth_utils.address import to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comms.detections.entities import Entity, EntityType, extract
from comms.settings import load_settings

# DETECTIONS_EXAMPLES=5000 for a longer (nightly) run.
EXAMPLES = settings(
    max_examples=int(os.environ.get("DETECTIONS_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

OFFICIAL = ["example.org"]
# The test vectors of EIP-55 (https://eips.ethereum.org/EIPS/eip-55).
EIP55_VECTORS = [
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
]
VAULT = EIP55_VECTORS[0]
TX = "0x" + "5c504ed432cb51138bcf09aa5e8a410dd4a1e204ef84bfed1be16dfba1b22060"


def of_type(entities: list[Entity], kind: EntityType) -> list[Entity]:
    return [entity for entity in entities if entity.type is kind]


def domain(text: str, official: list[str] = OFFICIAL) -> Entity:
    """The one DOMAIN entity of ``text``."""
    (found,) = of_type(extract(text, official_domains=official), EntityType.DOMAIN)
    return found


def flip_case(address: str, index: int) -> str:
    """``address`` with the hex letter nearest to ``index`` in the other case."""
    letters = [at for at in range(2, len(address)) if address[at].isalpha()]
    nearest = min(letters, key=lambda at: abs(at - index))
    return address[:nearest] + address[nearest].swapcase() + address[nearest + 1 :]


# Addresses


@pytest.mark.parametrize("address", EIP55_VECTORS)
def test_eip55_vectors_are_checksum_valid(address: str) -> None:
    assert extract(f"funds went to {address}.") == [
        Entity(EntityType.ADDRESS, address, ("checksum_valid",))
    ]


@pytest.mark.parametrize("address", EIP55_VECTORS)
def test_single_case_addresses_have_no_checksum_and_are_normalized(address: str) -> None:
    lower = "0x" + address[2:].lower()
    upper = "0x" + address[2:].upper()
    for written in (lower, upper):
        assert extract(written) == [Entity(EntityType.ADDRESS, address, ("no_checksum",))]


@pytest.mark.parametrize("address", EIP55_VECTORS)
@pytest.mark.parametrize("index", [2, 20, 41])
def test_one_flipped_letter_is_checksum_invalid(address: str, index: int) -> None:
    tampered = flip_case(address, index)
    assert tampered != address
    (found,) = extract(f"send to {tampered} now")
    assert found == Entity(EntityType.ADDRESS, address, ("checksum_invalid",))


def test_known_contracts_are_flagged_whatever_the_case_written() -> None:
    contracts = {VAULT.lower(): "Vault"}
    for written in (VAULT, VAULT.lower(), flip_case(VAULT, 10)):
        (found,) = extract(written, known_contracts=contracts)
        assert "known_contract" in found.flags
    (other,) = extract(EIP55_VECTORS[1], known_contracts=contracts)
    assert other.flags == ("checksum_valid",)


def test_known_contract_flags_are_sorted() -> None:
    (found,) = extract(VAULT.lower(), known_contracts={VAULT.lower(): "Vault"})
    assert found.flags == ("known_contract", "no_checksum")


def test_settings_forms_are_understood() -> None:
    """The normalized forms Settings stores (lowercase keys, punycode domains) match."""
    config = load_settings(
        official_domains="Example.ORG,bücher.de",
        known_contracts=f"{VAULT}=Vault",
    )
    found = extract(
        f"{VAULT} https://bücher.de/x xn--bcher-kva.de shop.example.org",
        official_domains=config.official_domains,
        known_contracts=config.known_contracts,
    )
    assert found == [
        Entity(EntityType.ADDRESS, VAULT, ("checksum_valid", "known_contract")),
        Entity(EntityType.URL, "https://bücher.de/x", ("official",)),
        Entity(EntityType.DOMAIN, "bücher.de", ("official",)),
        Entity(EntityType.DOMAIN, "shop.example.org", ("official",)),
    ]


# Transaction hashes, and never one as the other


def test_tx_hashes_are_lowercased() -> None:
    assert extract(f"tx {TX.upper().replace('0X', '0x')} failed") == [Entity(EntityType.TX, TX)]


def test_no_address_inside_a_tx_hash_and_no_tx_from_addresses() -> None:
    assert of_type(extract(TX), EntityType.ADDRESS) == []
    # Two addresses back to back are 80 hex digits: neither an address nor a hash.
    glued = VAULT + EIP55_VECTORS[1][2:]
    assert extract(glued) == []
    assert of_type(extract(VAULT), EntityType.TX) == []


@pytest.mark.parametrize("digits", [39, 41, 50, 63, 65, 80, 128])
def test_other_hex_lengths_are_neither(digits: int) -> None:
    assert extract(f"see 0x{'a1' * 64}"[: 6 + digits] + " end") == []


@pytest.mark.parametrize(
    "text",
    [
        f"abc{VAULT}",  # preceded by a word character
        f"0{VAULT}",  # preceded by a hex digit
        f"{VAULT}g",  # followed by a word character
        f"{VAULT}_x",
        f"tx{TX}",
    ],
)
def test_hex_runs_need_word_boundaries(text: str) -> None:
    assert extract(text) == []


def test_hex_between_punctuation_and_inside_urls_is_found() -> None:
    found = extract(f"({VAULT}), hash:{TX}; https://etherscan.io/tx/{TX}")
    assert [(e.type, e.value) for e in found] == [
        (EntityType.ADDRESS, VAULT),
        (EntityType.TX, TX),
        (EntityType.URL, f"https://etherscan.io/tx/{TX}"),
        (EntityType.DOMAIN, "etherscan.io"),
    ]


# URLs


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("see https://example.org/claim.", "https://example.org/claim"),
        ("see https://example.org/claim!?", "https://example.org/claim"),
        ("urgent: https://example.org/a,b, now", "https://example.org/a,b"),
        ("(see https://example.org/claim)", "https://example.org/claim"),
        ("(https://en.wikipedia.org/wiki/Foo_(bar))", "https://en.wikipedia.org/wiki/Foo_(bar)"),
        ("[claim](https://example.org/claim)", "https://example.org/claim"),
        ('"https://example.org/claim"', "https://example.org/claim"),
        ("'https://example.org/claim';", "https://example.org/claim"),
        ("<https://example.org/claim>", "https://example.org/claim"),
        ("**https://example.org/claim**", "https://example.org/claim"),
        ("go to www.example.org/claim: quick", "www.example.org/claim"),
        ("hurry...https://example.org/claim...", "https://example.org/claim"),
        ("HTTPS://EXAMPLE.ORG/Claim", "HTTPS://EXAMPLE.ORG/Claim"),
        ("http://example.org:8080/x?y=1#z", "http://example.org:8080/x?y=1#z"),
    ],
)
def test_urls_lose_the_punctuation_around_them(text: str, url: str) -> None:
    found = extract(text, official_domains=OFFICIAL)
    assert found[0].type is EntityType.URL
    assert found[0].value == url
    assert found[0].flags == (("official",) if "example.org" in url.lower() else ())
    assert found[1].type is EntityType.DOMAIN


def test_url_flags_follow_the_real_host() -> None:
    found = extract(
        "https://example.org@evil.io/claim https://evil.io\\@example.org/ http://1.2.3.4/x",
        official_domains=OFFICIAL,
    )
    assert found == [
        Entity(EntityType.URL, "https://example.org@evil.io/claim"),
        Entity(EntityType.DOMAIN, "evil.io"),
        Entity(EntityType.URL, "https://evil.io\\@example.org/"),
        Entity(EntityType.URL, "http://1.2.3.4/x"),
    ]


def test_lookalike_urls_carry_their_domains_flags() -> None:
    found = extract("https://xn--xample-2of.org/claim", official_domains=OFFICIAL)
    assert found == [
        Entity(
            EntityType.URL,
            "https://xn--xample-2of.org/claim",
            ("lookalike", "mixed_script", "punycode"),
        ),
        Entity(EntityType.DOMAIN, "\u0435xample.org", ("lookalike", "mixed_script", "punycode")),
    ]


def test_domains_in_a_url_path_are_not_domains() -> None:
    found = extract("https://evil.io/redirect/example.org", official_domains=OFFICIAL)
    assert [e.value for e in of_type(found, EntityType.DOMAIN)] == ["evil.io"]


def test_hidden_urls_are_read_like_the_text_and_listed_after_it() -> None:
    found = extract(
        "claim here",
        official_domains=OFFICIAL,
        hidden_urls=["https://examp1e.org/claim", "https://docs.example.org/"],
    )
    assert found == [
        Entity(EntityType.URL, "https://examp1e.org/claim", ("lookalike",)),
        Entity(EntityType.DOMAIN, "examp1e.org", ("lookalike",)),
        Entity(EntityType.URL, "https://docs.example.org/", ("official",)),
        Entity(EntityType.DOMAIN, "docs.example.org", ("official",)),
    ]


def test_hidden_urls_repeating_the_text_are_not_listed_twice() -> None:
    text = f"https://examp1e.org/claim {VAULT}"
    assert extract(text, hidden_urls=["https://examp1e.org/claim"]) == extract(text)


# Domains


@pytest.mark.parametrize(
    "text",
    ["example.org", "EXAMPLE.org.", "app.example.org/claim", "a.b.example.org", "www.example.org"],
)
def test_official_domains_and_subdomains(text: str) -> None:
    assert domain(f"visit {text} today").flags == ("official",)


@pytest.mark.parametrize(
    ("text", "flags"),
    [
        ("examp1e.org", ("lookalike",)),  # confusable digit
        ("exarnple.org", ("lookalike",)),  # rn for m
        ("exampel.org", ("lookalike",)),  # two edits
        ("examplee.org", ("lookalike",)),
        ("www.examp1e.org", ("lookalike",)),
        ("example.com", ("lookalike",)),  # the official name under another TLD
        ("example-claim.com", ("lookalike",)),
        ("claim-example.io", ("lookalike",)),
        ("example.org.evil.io", ("lookalike",)),
        ("\u0435xample.org", ("lookalike", "mixed_script")),  # Cyrillic е
        ("app.\u0435xample.org", ("lookalike", "mixed_script")),
    ],
)
def test_lookalikes(text: str, flags: tuple[str, ...]) -> None:
    assert domain(f"claim at {text} quickly").flags == flags


def test_punycode_of_a_lookalike() -> None:
    ascii_form = idna.encode("\u0435xample.org").decode()
    found = domain(ascii_form)
    assert found.value == "\u0435xample.org"
    assert found.flags == ("lookalike", "mixed_script", "punycode")


def test_whole_script_punycode_is_decoded_without_mixed_script() -> None:
    found = domain("xn--80ak6aa92e.com", official=["apple.com"])
    assert found.value == "аррӏе.com"  # all Cyrillic
    assert found.flags == ("lookalike", "punycode")


def test_undecodable_punycode_is_kept() -> None:
    found = domain("xn--zz-invalid.org")
    assert found == Entity(EntityType.DOMAIN, "xn--zz-invalid.org", ("invalid_idna", "punycode"))


@pytest.mark.parametrize(
    "text", ["uniswap.org", "etherscan.io", "sample-data.net", "ex.org", "app.io"]
)
def test_unrelated_domains_are_not_lookalikes(text: str) -> None:
    assert domain(text).flags == ()


def test_the_parent_of_an_official_subdomain_is_not_a_lookalike() -> None:
    assert domain("example.org", official=["app.example.org"]).flags == ()
    assert domain("app.example.org", official=["app.example.org"]).flags == ("official",)


def test_country_second_level_domains() -> None:
    official = ["example.co.uk"]
    assert domain("examp1e.co.uk", official=official).flags == ("lookalike",)
    assert domain("evil.co.uk", official=official).flags == ()
    assert domain("example-airdrop.com", official=official).flags == ("lookalike",)


@pytest.mark.parametrize(
    "text",
    [
        "first.last@example.org",
        "price moved 1.5 percent, v2.0.1",
        "e.g. this, i.e. that",
        "contact support@example.org",
    ],
)
def test_no_domains_from_email_local_parts_or_numbers(text: str) -> None:
    values = [e.value for e in extract(text)]
    assert values in ([], ["example.org"])


def test_bare_domains_in_prose() -> None:
    found = extract("Check examp1e.org, or app.example.org/claim (and file.txt).")
    assert [e.value for e in found] == ["examp1e.org", "app.example.org", "file.txt"]


def test_unicode_labels_are_domains() -> None:
    assert domain("bücher.de").value == "bücher.de"


# Invisible characters


@pytest.mark.parametrize(
    "invisible", ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u202e", "\u2066", "\u2069"]
)
def test_invisible_characters_do_not_split_names(invisible: str) -> None:
    split_address = VAULT[:22] + invisible + VAULT[22:]
    text = f"exam{invisible}ple.org https://exa{invisible}mp1e.org/x {split_address}"
    found = extract(text, official_domains=OFFICIAL)
    assert found == [
        Entity(EntityType.DOMAIN, "example.org", ("official",)),
        Entity(EntityType.URL, "https://examp1e.org/x", ("lookalike",)),
        Entity(EntityType.DOMAIN, "examp1e.org", ("lookalike",)),
        Entity(EntityType.ADDRESS, VAULT, ("checksum_valid",)),
    ]


# Order, deduplication, JSON


def test_order_of_first_appearance_and_dedup() -> None:
    text = (
        f"@Bot the bridge is draining, tx {TX}, see https://examp1e.org/claim "
        f"and {VAULT.lower()} ... again {TX.upper().replace('0X', '0x')} examp1e.org {VAULT}"
    )
    found = extract(text, official_domains=OFFICIAL)
    assert [(e.type.value, e.value) for e in found] == [
        ("tx", TX),
        ("url", "https://examp1e.org/claim"),
        ("domain", "examp1e.org"),
        ("address", VAULT),
    ]
    # The first appearance decides the flags of a repeated address.
    assert found[3].flags == ("no_checksum",)


def test_entities_are_hashable_with_sorted_flags_and_json() -> None:
    entity = Entity(EntityType.DOMAIN, "еxample.org", ("punycode", "lookalike", "punycode"))
    assert entity.flags == ("lookalike", "punycode")
    assert {entity, Entity(EntityType.DOMAIN, "еxample.org", ("lookalike", "punycode"))} == {entity}
    assert entity.as_json() == {
        "type": "domain",
        "value": "еxample.org",
        "flags": ["lookalike", "punycode"],
    }


def test_empty_and_plain_text() -> None:
    assert extract("") == []
    assert extract("the bridge is draining, please help!") == []


def test_hostile_input_stays_fast() -> None:
    """Patterns are linear: these would take minutes with backtracking regexes."""
    for text in [
        "ab." * 30000,
        "a-" * 30000 + ".",
        "0x" + "a" * 100000,
        "https://x.org/" + ")" * 50000,
        "a.b@" * 20000,
        "www." * 20000,
    ]:
        extract(text, official_domains=OFFICIAL)


# Properties

# What the extractor ignores: zero-width characters, bidi controls, the soft hyphen.
INVISIBLE = frozenset(
    "\u200b\u200c\u200d\u2060\ufeff\u00ad\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
NON_HEX = st.characters(exclude_characters="0123456789abcdefABCDEF", exclude_categories=("Cs",))
SURROUNDING = st.text(NON_HEX, max_size=40)
PIECES = [
    "0x",
    VAULT,
    TX,
    "https://",
    "http://",
    "www.",
    "examp1e.org",
    "example.org",
    "xn--",
    "xn--xample-2of",
    "\u0435",
    ".",
    "@",
    "-",
    "(",
    ")",
    "[",
    "]",
    "'",
    '"',
    "\u200b",
    "\u202e",
    " ",
    "\n",
    "a" * 40,
    "F" * 64,
    ":8080",
    "/",
    "\\",
    "*",
]
HOSTILE = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=10)), max_size=30).map(
    "".join
)


@EXAMPLES
@given(raw=st.binary(min_size=20, max_size=20), before=SURROUNDING, after=SURROUNDING)
def test_checksummed_addresses_round_trip(raw: bytes, before: str, after: str) -> None:
    address = to_checksum_address(raw)
    digits = address[2:]
    mixed = digits not in (digits.lower(), digits.upper())
    expected = "checksum_valid" if mixed else "no_checksum"
    found = of_type(extract(f"{before} {address} {after}"), EntityType.ADDRESS)
    assert found == [Entity(EntityType.ADDRESS, address, (expected,))]
    lower = of_type(extract(f"{before} {address.lower()} {after}"), EntityType.ADDRESS)
    assert lower == [Entity(EntityType.ADDRESS, address, ("no_checksum",))]


@EXAMPLES
@given(
    raw=st.binary(min_size=32, max_size=32),
    upper=st.booleans(),
    before=SURROUNDING,
    after=SURROUNDING,
)
def test_tx_hashes_are_never_addresses(raw: bytes, upper: bool, before: str, after: str) -> None:
    digits = raw.hex().upper() if upper else raw.hex()
    found = extract(f"{before} 0x{digits} {after}")
    assert of_type(found, EntityType.TX) == [Entity(EntityType.TX, "0x" + raw.hex())]
    assert of_type(found, EntityType.ADDRESS) == []


@EXAMPLES
@given(text=HOSTILE | st.text(), hidden=st.lists(HOSTILE, max_size=2))
def test_arbitrary_text_never_raises_and_results_are_well_formed(
    text: str, hidden: list[str]
) -> None:
    found = extract(
        text,
        official_domains=OFFICIAL,
        known_contracts={VAULT.lower(): "Vault"},
        hidden_urls=hidden,
    )
    keys = [(e.type, e.value) for e in found]
    assert len(keys) == len(set(keys))
    for entity in found:
        assert entity.value
        assert list(entity.flags) == sorted(set(entity.flags))
        if entity.type is EntityType.ADDRESS:
            checksum = {"checksum_valid", "checksum_invalid", "no_checksum"} & set(entity.flags)
            assert len(checksum) == 1
            assert entity.value == to_checksum_address(entity.value.lower())
        if entity.type is EntityType.DOMAIN:
            assert entity.value == entity.value.lower().rstrip(".")
            assert not ({"official", "lookalike"} <= set(entity.flags))
    assert (
        extract(
            text,
            official_domains=OFFICIAL,
            known_contracts={VAULT.lower(): "Vault"},
            hidden_urls=hidden,
        )
        == found
    )


@EXAMPLES
@given(
    text=HOSTILE,
    positions=st.lists(st.integers(min_value=0), max_size=5),
    invisible=st.sampled_from(sorted(INVISIBLE)),
)
def test_invisible_characters_change_nothing(
    text: str, positions: list[int], invisible: str
) -> None:
    clean = "".join(char for char in text if char not in INVISIBLE)
    salted = clean
    for position in positions:
        at = position % (len(salted) + 1)
        salted = salted[:at] + invisible + salted[at:]
    assert extract(salted, official_domains=OFFICIAL) == extract(clean, official_domains=OFFICIAL)
