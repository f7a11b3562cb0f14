"""Variable types and the validation/normalisation of one value of each type.

Each ``normalise_*`` function returns the canonical string of a valid value, or raises
:class:`BadValue` with a sentence for a person. Normalising is idempotent, so a draft whose values
were validated once validates to the same bytes again (the content hash depends on it).
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime
from enum import StrEnum
from urllib.parse import quote, urlsplit

import idna
from Crypto.Hash import keccak

from comms.rendering.limits import DURATION_MAX_MINUTES, URL_MAX
from comms.rendering.text import forbidden_character, normalise_text


class VarType(StrEnum):
    TEXT = "text"
    URL = "url"
    ADDRESS = "address"
    DATETIME = "datetime"
    DURATION = "duration"
    CHOICE = "choice"


class BadValue(ValueError):
    """A value is not valid for its type; the message is the problem, without the field name."""


# --- text ---------------------------------------------------------------------------------------


def normalise_text_value(raw: str, *, max_length: int) -> str:
    text = normalise_text(raw)
    bad = forbidden_character(text)
    if bad is not None:
        raise BadValue(bad.describe())
    if len(text) > max_length:
        raise BadValue(f"is {len(text)} characters long; the limit is {max_length}")
    return text


# --- url ----------------------------------------------------------------------------------------

_URL_FORBIDDEN = set('<>"{}|\\^`')
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Characters kept as they are in path, query and fragment; "@" is encoded (see docs/TEMPLATES.md).
_URL_SAFE = "/?#!$&'()*+,;=:-._~%"
_TLD = re.compile(r"^(?:[a-z]{2,63}|xn--[a-z0-9\-]{1,59})$")


def _host_to_ascii(host: str) -> str:
    try:
        ascii_host = idna.encode(host, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise BadValue(f"has an invalid host name {host!r} ({exc})") from None
    labels = ascii_host.split(".")
    if len(labels) < 2 or not _TLD.match(labels[-1]):
        raise BadValue(f"host {ascii_host!r} is not a public domain name (e.g. status.example.org)")
    return ascii_host


def normalise_url(raw: str) -> str:
    """An https URL with a valid public host, no user info, as ASCII (IDN hosts as punycode)."""
    text = unicodedata.normalize("NFC", raw.strip())
    if not text:
        raise BadValue("is empty")
    if len(text) > URL_MAX:
        raise BadValue(f"is {len(text)} characters long; the limit is {URL_MAX}")
    for index, char in enumerate(text):
        if char.isspace() or forbidden_character(char, allow_newlines=False) is not None:
            raise BadValue(
                f"contains a space, line break or invisible character at position {index + 1}"
            )
        if char in _URL_FORBIDDEN:
            raise BadValue(f"contains {char!r}, which is not allowed in a link")
    try:
        parts = urlsplit(text)
    except ValueError:  # an unbalanced '[' or ']' around the host
        raise BadValue("has an invalid host: a '[' or ']' without its partner") from None
    if parts.scheme.lower() != "https":
        shown = parts.scheme or "no scheme"
        raise BadValue(f"must start with https:// (got {shown})")
    netloc = parts.netloc
    if not netloc:
        raise BadValue("has no host name after https://")
    if "@" in netloc:
        real = netloc.rpartition("@")[2]
        raise BadValue(
            f"contains user info before '@', so it would really open {real!r}; "
            "links of this shape are a phishing trick"
        )
    if netloc.startswith("["):
        raise BadValue("uses an IP address instead of a domain name")
    host, sep, port = netloc.partition(":")
    if sep and not (port.isdigit() and port.isascii() and 0 < int(port) < 65536):
        raise BadValue(f"has an invalid port {port!r}")
    host = host.rstrip(".")
    if not host:
        raise BadValue("has no host name after https://")
    ascii_host = _host_to_ascii(host)
    rest = text[len(parts.scheme) + 3 + len(netloc) :]
    if _PERCENT.search(rest):
        raise BadValue("has a '%' that is not followed by two hex digits")
    rest = quote(rest, safe=_URL_SAFE)
    port_part = f":{int(port)}" if sep else ""
    result = f"https://{ascii_host}{port_part}{rest}"
    if len(result) > URL_MAX:
        raise BadValue(f"is {len(result)} characters long once encoded; the limit is {URL_MAX}")
    return result


def url_host(url: str) -> str:
    """The (ASCII) host of a normalised URL."""
    return (urlsplit(url).hostname or "").lower()


def host_unicode(ascii_host: str) -> str:
    """How an IDN host displays in a browser, for the approver's warning."""
    try:
        return idna.decode(ascii_host)
    except (idna.IDNAError, UnicodeError):
        return ascii_host


# --- address ------------------------------------------------------------------------------------

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
ADDRESS_IN_TEXT = re.compile(r"(?<![0-9A-Za-z])0x[0-9a-fA-F]{40}(?![0-9A-Za-z])")


def normalise_address(raw: str) -> str:
    """``0x`` and 40 hex digits, kept exactly as written so a bad checksum stays visible."""
    text = raw.strip()
    if not _ADDRESS.match(text):
        raise BadValue("must be an EVM address: 0x followed by 40 hex digits")
    return text


def eip55(address: str) -> str:
    """The EIP-55 mixed-case checksum form of an address."""
    lower = address[2:].lower()
    digest = keccak.new(digest_bits=256, data=lower.encode("ascii")).hexdigest()
    chars = (c.upper() if int(d, 16) >= 8 else c for c, d in zip(lower, digest[:40], strict=True))
    return "0x" + "".join(chars)


# --- datetime -----------------------------------------------------------------------------------

_DATETIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,]\d{1,9})?)?"
    r"\s*(Z|z|UTC|[+-]\d{2}(?::?\d{2})?)?$"
)


def parse_datetime(raw: str) -> datetime:
    """ISO-8601 in UTC (``Z``, ``+00:00`` or ``UTC``); another offset or none is refused."""
    text = raw.strip()
    match = _DATETIME.match(text)
    if not match:
        raise BadValue("must be an ISO-8601 date and time in UTC, e.g. 2026-11-27T10:00Z")
    offset = match.group(7)
    if offset is None:
        raise BadValue("must be in UTC: add Z at the end (e.g. 2026-11-27T10:00Z)")
    if offset not in ("Z", "z", "UTC") and offset.lstrip("+-").replace(":", "").strip("0"):
        raise BadValue(f"must be in UTC, not {offset}; convert the time to UTC and end it with Z")
    year, month, day, hour, minute = (int(match.group(i)) for i in range(1, 6))
    second = int(match.group(6) or 0)
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:
        raise BadValue(f"is not a real date and time ({exc})") from None


def normalise_datetime(raw: str) -> str:
    return parse_datetime(raw).strftime("%Y-%m-%dT%H:%M:%SZ")


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_datetime(moment: datetime) -> str:
    """The form users read: ``27 Nov 2026, 10:00 UTC`` (English month names, locale-free)."""
    month = _MONTHS[moment.month - 1]
    return f"{moment.day} {month} {moment.year}, {moment:%H:%M} UTC"


# --- duration -----------------------------------------------------------------------------------

_DURATION = re.compile(
    r"^(?:(\d{1,4})\s*d)?\s*(?:(\d{1,5})\s*h)?\s*(?:(\d{1,6})\s*m(?:in)?)?$", re.IGNORECASE
)


def parse_duration(raw: str) -> int:
    """Minutes in ``30m``, ``2h``, ``1h30m``, ``1d``; zero and absurd lengths are refused."""
    text = raw.strip()
    match = _DURATION.match(text)
    if not text or not match or not any(match.groups()):
        raise BadValue("must be a duration like 30m, 2h, 1h30m or 1d")
    days, hours, minutes = (int(g) if g else 0 for g in match.groups())
    total = days * 1440 + hours * 60 + minutes
    if total == 0:
        raise BadValue("must be longer than zero")
    if total > DURATION_MAX_MINUTES:
        raise BadValue(f"is longer than {DURATION_MAX_MINUTES // 1440} days; check the unit")
    return total


def normalise_duration(raw: str) -> str:
    total = parse_duration(raw)
    days, rest = divmod(total, 1440)
    hours, minutes = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n)


def format_duration(total_minutes: int) -> str:
    """``1 hour 30 minutes``: words, not abbreviations, for readers under stress."""
    days, rest = divmod(total_minutes, 1440)
    hours, minutes = divmod(rest, 60)
    parts = [
        f"{n} {unit}{'' if n == 1 else 's'}"
        for n, unit in ((days, "day"), (hours, "hour"), (minutes, "minute"))
        if n
    ]
    return " ".join(parts)
