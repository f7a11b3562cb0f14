"""The entities a responder needs from an untrusted community report.

A report ("@Bot the bridge is draining, tx 0x…, see https://examp1e.org/claim") is written by
anyone, attackers included, so extraction never trusts what it reads: an address whose mixed case
does not match its EIP-55 checksum is reported as such (a typo or a tampered address), and every
host is compared with the official domains so that look-alikes (``examp1e.org``, a Cyrillic
``е``, ``example.org.evil.io``) are flagged rather than shown as if they were ours. Zero-width and
bidi controls are removed first: they are invisible to a reader and only serve to split a name
past a pattern. Everything is local: no network, no downloaded suffix lists.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from types import MappingProxyType

import idna
from confusable_homoglyphs import confusables  # type: ignore[import-untyped]
from eth_utils.address import is_checksum_address, to_checksum_address
from rapidfuzz.distance import Levenshtein


class EntityType(StrEnum):
    ADDRESS = "address"  # EVM address, 0x + 40 hex
    TX = "tx"  # transaction hash, 0x + 64 hex
    URL = "url"
    DOMAIN = "domain"


@dataclass(frozen=True)
class Entity:
    """One thing found in a report, normalized so that the same thing compares equal.

    ``flags`` is stored sorted and without repeats whatever order it was given in, so two
    extractions of the same report give equal entities.
    """

    type: EntityType
    value: str
    flags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "flags", tuple(sorted(set(self.flags))))

    def as_json(self) -> dict[str, object]:
        return {"type": self.type.value, "value": self.value, "flags": list(self.flags)}


CHECKSUM_VALID = "checksum_valid"
CHECKSUM_INVALID = "checksum_invalid"
NO_CHECKSUM = "no_checksum"
KNOWN_CONTRACT = "known_contract"
OFFICIAL = "official"
PUNYCODE = "punycode"
INVALID_IDNA = "invalid_idna"
LOOKALIKE = "lookalike"
MIXED_SCRIPT = "mixed_script"

_NO_CONTRACTS: Mapping[str, str] = MappingProxyType({})

# Invisible characters that split a name for a pattern but not for the eye: zero-width space,
# non-joiner, joiner, word joiner, BOM, bidi embeddings/overrides/isolates, and the soft hyphen.
_INVISIBLE = dict.fromkeys(
    [
        *range(0x200B, 0x200E),
        0x2060,
        0xFEFF,
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
        0x00AD,
    ]
)

# 0x and a run of hex digits, standing alone: no word character on either side, so a 40-digit
# window of a longer run is never an address. The run's length decides what it is.
_HEX = re.compile(r"(?<!\w)0[xX]([0-9a-fA-F]++)(?!\w)")

# http(s) or www. up to whitespace; <, > and backticks end a URL (Discord's <url> and code).
# "www." must start a name ("mywww.", "x.www." are other hosts, "a@www." an email address).
_URL = re.compile(r"(?:(?<![\w@])https?://|(?<![\w@.-])www\.)[^\s<>`]+", re.IGNORECASE)
# What may end a URL in prose but is rarely its last character. Markdown emphasis (* _ ~ |)
# is included because Discord text is raw Markdown ("**https://x.org**").
_TRAILING = frozenset(".,;:!?)]}>'\"*_~|")
_OPENERS = {")": "(", "]": "[", "}": "{"}
_COUNTED = "()[]{}'\""

# A label: letters or digits (any script), hyphens inside. A top-level domain: two or more
# letters, or an xn-- label. Possessive quantifiers keep the match linear on hostile input.
_LABEL = r"[^\W_](?:[^\W_]|-)*+"
_TLD = r"(?:[^\W\d_]{2,63}+|[xX][nN]--[^\W_](?:[^\W_]|-)*+)"
# A bare domain in prose: not inside a longer word or dotted name (so not "last" of
# "first.last"), and not followed by "@" (an email address's local part) or by more labels.
_BARE_DOMAIN = re.compile(rf"(?<![\w-])(?<![\w-]\.)(?:{_LABEL}\.)+{_TLD}(?![\w@-])(?!\.[^\W_])")
# The host of a URL: the authority after any "user@" (a classic trick puts the official name
# there), and before the port. Backslashes end it as browsers treat them like slashes.
_AUTHORITY = re.compile(r"^(?:https?://)?([^/?#\\\s]*)", re.IGNORECASE)
_HOST = re.compile(rf"((?:{_LABEL}\.)+{_TLD})\.?(?::[0-9]*)?")

# Second-level labels under which country domains are registered (example.co.uk): enough to
# find the registrable name without a public suffix list.
_SECOND_LEVEL = frozenset({"ac", "co", "com", "edu", "gov", "net", "org"})
_MIN_MAIN_LABEL = 3  # shorter official names ("ab") would match too many unrelated hosts


def extract(
    text: str,
    *,
    official_domains: Sequence[str] = (),
    known_contracts: Mapping[str, str] = _NO_CONTRACTS,
    hidden_urls: Sequence[str] = (),
) -> list[Entity]:
    """The addresses, transaction hashes, URLs and domains of a report, in order of appearance.

    ``hidden_urls`` are links the platform carried beside the text (Telegram ``text_link``):
    the reader clicks them without seeing them, so they are read like the text and listed
    after it. Each (type, value) appears once, where it first appeared.
    """
    officials = _officials(official_domains)
    contracts = frozenset(address.lower() for address in known_contracts)
    found: list[Entity] = []
    seen: set[tuple[EntityType, str]] = set()
    for segment in (text, *hidden_urls):
        for entity in _scan(segment.translate(_INVISIBLE), officials, contracts):
            key = (entity.type, entity.value)
            if key not in seen:
                seen.add(key)
                found.append(entity)
    return found


def _scan(text: str, officials: tuple[str, ...], contracts: frozenset[str]) -> list[Entity]:
    """Every entity of one cleaned segment, sorted by where it starts."""
    located: list[tuple[int, int, Entity]] = []
    for match in _HEX.finditer(text):
        entity = _hex_entity(match.group(1), contracts)
        if entity is not None:
            located.append((match.start(), 0, entity))
    spans: list[tuple[int, int]] = []
    for match in _URL.finditer(text):
        url = _trim(match.group())
        if len(url) <= len("www.") or url.lower() in ("http://", "https://"):
            continue
        spans.append((match.start(), match.start() + len(url)))
        host = _url_host(url)
        domain = _domain_entity(host, officials) if host is not None else None
        url_flags: tuple[str, ...] = ()
        if domain is not None:
            url_flags = (OFFICIAL,) if OFFICIAL in domain.flags else domain.flags
        located.append((match.start(), 1, Entity(EntityType.URL, url, url_flags)))
        if domain is not None:
            located.append((match.start(), 2, domain))
    # Domains written inside a URL's path or query are not where the link goes: skip them.
    remaining = _blank(text, spans)
    for match in _BARE_DOMAIN.finditer(remaining):
        domain = _domain_entity(match.group(), officials)
        if domain is not None:
            located.append((match.start(), 1, domain))
    located.sort(key=lambda item: (item[0], item[1]))
    return [entity for _, _, entity in located]


def _hex_entity(digits: str, contracts: frozenset[str]) -> Entity | None:
    """An address (40 digits) or transaction hash (64 digits); any other length is neither."""
    if len(digits) == 64:
        return Entity(EntityType.TX, "0x" + digits.lower())
    if len(digits) != 40:
        return None
    written = "0x" + digits
    flags: list[str] = []
    if digits in (digits.lower(), digits.upper()):
        flags.append(NO_CHECKSUM)
    elif is_checksum_address(written):
        flags.append(CHECKSUM_VALID)
    else:
        flags.append(CHECKSUM_INVALID)
    if written.lower() in contracts:
        flags.append(KNOWN_CONTRACT)
    return Entity(EntityType.ADDRESS, str(to_checksum_address(written.lower())), tuple(flags))


def _trim(url: str) -> str:
    """The URL without the punctuation that ended the sentence around it.

    A closing bracket is kept when the URL opened it (wiki links end in ")"), a quote when the
    URL holds a pair. Counts are updated as characters go, so a run of ")))" stays linear.
    """
    counts = {char: url.count(char) for char in _COUNTED}
    end = len(url)
    while end and url[end - 1] in _TRAILING:
        char = url[end - 1]
        opener = _OPENERS.get(char)
        if opener is not None and counts[opener] >= counts[char]:
            break
        if char in "'\"" and counts[char] % 2 == 0:
            break
        if char in counts:
            counts[char] -= 1
        end -= 1
    return url[:end]


def _url_host(url: str) -> str | None:
    """The host a browser would go to, or None for an IP address or no host at all."""
    authority = _AUTHORITY.match(url)
    if authority is None:  # pragma: no cover - the pattern matches every string
        return None
    host_port = authority.group(1).rpartition("@")[2]
    host = _HOST.fullmatch(host_port)
    return host.group(1) if host is not None else None


def _blank(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """``text`` with the spans replaced by spaces, keeping every other position."""
    if not spans:
        return text
    parts: list[str] = []
    last = 0
    for start, end in spans:
        parts.append(text[last:start])
        parts.append(" " * (end - start))
        last = end
    parts.append(text[last:])
    return "".join(parts)


def _domain_entity(raw: str, officials: tuple[str, ...]) -> Entity | None:
    """The DOMAIN entity of a host as written, with how it relates to the official domains."""
    host, flags = _decode_host(raw)
    if not host:
        return None
    if any(
        confusables.is_mixed_script(label, allowed_aliases=["COMMON", "INHERITED"])
        for label in host.split(".")
    ):
        flags.add(MIXED_SCRIPT)
    if _is_official(host, officials):
        flags.add(OFFICIAL)
    elif _is_lookalike(host, officials):
        flags.add(LOOKALIKE)
    return Entity(EntityType.DOMAIN, host, tuple(flags))


def _decode_host(raw: str) -> tuple[str, set[str]]:
    """Lowercase Unicode labels: what the reader sees, whichever form the report used.

    A label that does not decode is kept as written: it still names a host someone may visit.
    """
    flags: set[str] = set()
    labels: list[str] = []
    for label in raw.lower().rstrip(".").split("."):
        if label.startswith("xn--"):
            flags.add(PUNYCODE)
            try:
                label = idna.decode(label).lower()
            except (UnicodeError, ValueError):
                flags.add(INVALID_IDNA)
        labels.append(label)
    return ".".join(labels), flags


def _officials(domains: Sequence[str]) -> tuple[str, ...]:
    """The official domains in the form hosts are compared in (Unicode, lowercase)."""
    result: list[str] = []
    for domain in domains:
        host, _ = _decode_host(domain.strip())
        if host and host not in result:
            result.append(host)
    return tuple(result)


def _is_official(host: str, officials: tuple[str, ...]) -> bool:
    return any(host == domain or host.endswith("." + domain) for domain in officials)


def _registrable(host: str) -> str:
    """The name someone registered: the last two labels, three under co.uk-like suffixes."""
    labels = host.split(".")
    count = 2
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL:
        count = 3
    return ".".join(labels[-count:])


def _is_lookalike(host: str, officials: tuple[str, ...]) -> bool:
    """Whether a host that is not official imitates one that is.

    Three signs: it looks the same once confusable characters are folded (a Cyrillic "е",
    "rn" for "m"); it is one or two edits away, as written or folded (two for names of six
    characters or more);
    or it carries the official name as one of its parts ("example-claim.com",
    "example.org.evil.io"). A host under the same registered name as an official domain
    (a sibling subdomain) belongs to the same owner and is not a look-alike.
    """
    labels = host.split(".")
    host_registrable = _registrable(host)
    trimmed = ".".join(labels[1:]) if len(labels) > 2 else host
    skeletons = {_skeleton(host), _skeleton(trimmed), _skeleton(host_registrable)}
    parts = {_skeleton(part) for part in re.split(r"[.-]", ".".join(labels[:-1])) if part}
    for domain in officials:
        registrable = _registrable(domain)
        if host_registrable == registrable:
            continue
        if skeletons & {_skeleton(domain), _skeleton(registrable)}:
            return True
        # Edits are counted on the text and on the skeletons: "аррӏе.com" is four edits from
        # "apple.com" but one once folded (Unicode folds the palochka to "i", not "l").
        limit = 2 if len(domain) >= 6 else 1
        pairs = [(host, domain), (trimmed, domain)]
        pairs += [(_skeleton(a), _skeleton(b)) for a, b in pairs]
        if any(Levenshtein.distance(a, b, score_cutoff=limit) <= limit for a, b in pairs):
            return True
        main = registrable.split(".")[0]
        if len(main) >= _MIN_MAIN_LABEL and _skeleton(main) in parts:
            return True
    return False


@lru_cache(maxsize=4096)
def _skeleton(text: str) -> str:
    """``text`` with every confusable character replaced by its class's prototype.

    Two strings that look alike have the same skeleton (in the spirit of UTS #39). Case is
    folded as DNS folds it; folding and mapping repeat because a prototype may be upper case
    ("0" maps to "O").
    """
    prototypes = _prototypes()
    result = unicodedata.normalize("NFKC", text).lower()
    for _ in range(3):
        mapped = "".join(prototypes.get(char, char) for char in result).lower()
        if mapped == result:
            break
        result = mapped
    return result


@lru_cache(maxsize=1)
def _prototypes() -> dict[str, str]:
    """Character -> prototype, from confusable_homoglyphs' copy of Unicode's confusables.txt.

    The package stores each source -> prototype line in both directions, so each class is a
    star: the prototype is the member with several neighbours, or the multi-character one
    (sources are single characters). A class of two single characters keeps the ASCII one,
    else the smaller; either choice gives the same equality of skeletons.
    """
    neighbours: dict[str, set[str]] = {}
    for key, entries in confusables.confusables_data.items():
        source = _strip_marks(key)
        for entry in entries:
            neighbours.setdefault(source, set()).add(_strip_marks(entry["c"]))
    prototypes: dict[str, str] = {}
    for char, linked in neighbours.items():
        if len(char) != 1 or len(linked) != 1:
            continue  # a prototype, or a sequence that is matched as single characters
        (other,) = linked
        center = len(other) > 1 or len(neighbours.get(other, ())) > 1
        if center or (other.isascii(), -ord(other)) > (char.isascii(), -ord(char)):
            prototypes[char] = other
    return prototypes


def _strip_marks(text: str) -> str:
    """The package wraps right-to-left characters in LEFT-TO-RIGHT MARKs for display."""
    return text.replace("\u200e", "").replace("\u200f", "")
