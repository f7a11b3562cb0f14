"""Free text people type (titles, notes, reasons): one check for every service.

Control characters have no business in an incident record: NUL cannot even be stored by
PostgreSQL (so without this check it surfaced as a 500 there and only there), and escape
sequences rewrite an operator's terminal when the log is printed by the CLI. Newlines and tabs
are kept where a field is multi-line; ``\\r\\n`` from browsers becomes ``\\n``.
"""

from __future__ import annotations

import unicodedata

from comms.errors import FieldProblem, InvalidInput


def text_problem(value: str, *, multiline: bool = True) -> str | None:
    """Why ``value`` cannot be stored as typed text, or None."""
    for index, char in enumerate(value):
        if char in "\n\t" and multiline:
            continue
        if char == "\n":
            return f"contains a line break at position {index + 1}; use one line"
        category = unicodedata.category(char)
        if category == "Cc":
            return (
                f"contains a control character (U+{ord(char):04X}) at position {index + 1}; "
                "remove it"
            )
        if category == "Cs":
            return f"contains a lone surrogate at position {index + 1}; remove it"
    return None


def clean_text(
    field: str, value: str, *, limit: int, required: bool = False, multiline: bool = True
) -> str:
    """The stripped, newline-normalised text, or InvalidInput naming ``field``."""
    text = value.replace("\r\n", "\n").replace("\r", "\n").strip()
    if required and not text:
        raise InvalidInput(FieldProblem(field, "is required"))
    problem = text_problem(text, multiline=multiline)
    if problem is not None:
        raise InvalidInput(FieldProblem(field, problem))
    if len(text) > limit:
        raise InvalidInput(FieldProblem(field, f"is {len(text)} characters; the limit is {limit}"))
    return text


def is_storable_name(value: str) -> bool:
    """False for a lookup key that no stored name can equal (and a driver may choke on)."""
    return value.isprintable()


def one_line_inert(value: str, *, limit: int = 80) -> str:
    """Untrusted text (a community report) for one line of an operator's terminal: control and
    format characters (escape sequences, bidi overrides, zero-width) shown as ``\\uXXXX``, line
    breaks as spaces, cut at ``limit`` characters."""
    shown = []
    for char in value.replace("\r\n", " ").replace("\n", " "):
        if unicodedata.category(char) in ("Cc", "Cf", "Cs"):
            shown.append(f"\\u{ord(char):04x}")
        else:
            shown.append(char)
    line = "".join(shown)
    return line if len(line) <= limit else line[: limit - 1] + "…"
