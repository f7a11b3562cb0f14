"""Warnings shown to approvers next to the preview (design rule 7).

Warnings do not block a draft: an attacker's address is rightly "not a known contract", and a
partner's status page is rightly outside our domains. They make sure a human looked. Codes:

``link.unofficial``   a url value's host is not an official domain or a subdomain of one
``link.idn``          a url value's host is internationalised (shown as punycode, with how it reads)
``link.lookalike``    a host that imitates an official domain (digits for letters, homoglyphs)
``text.link``         a text value contained link-like text, which was made inert
``text.mention``      a text value contained @everyone/@here/<@id>, which will not ping
``address.checksum``  an address fails EIP-55, or has no checksum at all (all one case)
``address.unknown``   an address is not in the configured known contracts
``next_update.missing`` the kind must say when the next update comes, and does not
``next_update.past``  the next update time is already past (only when ``now`` is given)
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from comms.rendering.spec import TemplateSpec, VariableSpec
from comms.rendering.text import defang, link_like_pieces, mention_like_pieces
from comms.rendering.values import (
    ADDRESS_IN_TEXT,
    BadValue,
    VarType,
    eip55,
    host_unicode,
    parse_datetime,
    url_host,
)


@dataclass(frozen=True)
class RenderWarning:
    """One thing an approver should look at; ``field`` is ``variables.<name>``."""

    code: str
    message: str
    field: str


# Letters commonly swapped in lookalike domains, mapped to what they imitate.
_CONFUSABLE = str.maketrans(
    {
        "0": "o",
        "1": "l",
        "i": "l",
        "3": "e",
        "5": "s",
        "а": "a",
        "е": "e",
        "о": "o",
        "р": "p",
        "с": "c",
        "у": "y",
        "х": "x",
        "і": "l",
        "ј": "j",
        "ѕ": "s",
        "ԁ": "d",
        "ɡ": "g",
        "ο": "o",
        "α": "a",
        "ν": "v",
        "ı": "l",
    }
)


def _skeleton(host: str) -> str:
    text = unicodedata.normalize("NFKC", host_unicode(host)).lower()
    text = text.translate(_CONFUSABLE)
    return text.replace("rn", "m").replace("vv", "w").replace("-", "")


def _official(host: str, domains: Iterable[str]) -> bool:
    return any(host == d or host.endswith("." + d) for d in domains)


def _normal_domains(domains: Iterable[str]) -> list[str]:
    out: list[str] = []
    for domain in domains:
        text = domain.strip().lower().rstrip(".")
        if not text:
            continue
        try:
            out.append(text.encode("idna").decode("ascii"))
        except UnicodeError:
            out.append(text)
    return out


def _url_warnings(var: VariableSpec, url: str, domains: list[str]) -> list[RenderWarning]:
    host = url_host(url)
    warnings: list[RenderWarning] = []
    label = var.label or var.name
    if any(part.startswith("xn--") for part in host.split(".")):
        warnings.append(
            RenderWarning(
                "link.idn",
                f"{label}: the link's host {host} is an internationalised name that reads as "
                f"{host_unicode(host)!r}; make sure it is not a lookalike of a real domain",
                var.field,
            )
        )
    if not _official(host, domains):
        warnings.append(
            RenderWarning(
                "link.unofficial",
                f"{label}: {host} is not one of the official domains; check the link goes where "
                "you mean",
                var.field,
            )
        )
        skeleton = _skeleton(host)
        for domain in domains:
            core = _skeleton(domain)
            if skeleton == core or skeleton.endswith("." + core):
                warnings.append(
                    RenderWarning(
                        "link.lookalike",
                        f"{label}: {host} imitates the official domain {domain}",
                        var.field,
                    )
                )
                break
    return warnings


def _address_warnings(
    var: VariableSpec, address: str, known: Mapping[str, str], where: str
) -> list[RenderWarning]:
    warnings: list[RenderWarning] = []
    digits = address[2:]
    label = known.get(address.lower())
    named = f"{address} ({label})" if label else address
    if digits.lower() == digits or digits.upper() == digits:
        if any(c.isalpha() for c in digits):
            warnings.append(
                RenderWarning(
                    "address.checksum",
                    f"{where}: {named} has no EIP-55 checksum (all one case), so a typo cannot "
                    f"be detected; the checksummed form is {eip55(address)}",
                    var.field,
                )
            )
    elif eip55(address) != address:
        warnings.append(
            RenderWarning(
                "address.checksum",
                f"{where}: {named} fails the EIP-55 checksum: a character is probably wrong "
                "or the address was altered; copy it again from a trusted source",
                var.field,
            )
        )
    if label is None:
        warnings.append(
            RenderWarning(
                "address.unknown",
                f"{where}: {address} is not one of the known contracts; make sure it is the "
                "address you mean",
                var.field,
            )
        )
    return warnings


def _text_warnings(var: VariableSpec, text: str, known: Mapping[str, str]) -> list[RenderWarning]:
    warnings: list[RenderWarning] = []
    label = var.label or var.name
    if defang(text) != text:
        pieces = ", ".join(link_like_pieces(text)[:5])
        warnings.append(
            RenderWarning(
                "text.link",
                f"{label}: link in text was made inert ({pieces} is shown like "
                f"{defang(pieces)}); use a URL field for links",
                var.field,
            )
        )
    mentions = mention_like_pieces(text)
    if mentions:
        warnings.append(
            RenderWarning(
                "text.mention",
                f"{label}: {', '.join(mentions[:5])} will be shown as text and will not ping "
                "anyone",
                var.field,
            )
        )
    for match in dict.fromkeys(m.group(0) for m in ADDRESS_IN_TEXT.finditer(text)):
        warnings.extend(_address_warnings(var, match, known, f"{label} (address in text)"))
    return warnings


def check_values(
    spec: TemplateSpec,
    values: Mapping[str, str],
    *,
    official_domains: Iterable[str],
    known_contracts: Mapping[str, str],
    now: datetime | None = None,
) -> list[RenderWarning]:
    """Warnings for approvers, in declaration order. Invalid values are skipped (validation
    reports them), so this also works on a half-filled form for a live preview."""
    domains = _normal_domains(official_domains)
    known = {address.lower(): label for address, label in known_contracts.items()}
    warnings: list[RenderWarning] = []
    for var in spec.variables:
        raw = values.get(var.name)
        if not isinstance(raw, str) or not raw.strip():
            if var.name == "next_update" and spec.needs_next_update:
                warnings.append(
                    RenderWarning(
                        "next_update.missing",
                        "this announcement must say when the next update comes",
                        var.field,
                    )
                )
            continue
        try:
            value = var.normalise(raw)
        except BadValue:
            continue
        if var.type is VarType.URL:
            warnings.extend(_url_warnings(var, value, domains))
        elif var.type is VarType.ADDRESS:
            warnings.extend(_address_warnings(var, value, known, var.label or var.name))
        elif var.type is VarType.TEXT:
            warnings.extend(_text_warnings(var, value, known))
        elif (
            var.type is VarType.DATETIME
            and var.name == "next_update"
            and now is not None
            and parse_datetime(value) <= now
        ):
            warnings.append(
                RenderWarning(
                    "next_update.past", f"the next update time {value} is already past", var.field
                )
            )
    return warnings
