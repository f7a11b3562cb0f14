"""Template files: the TOML header that declares a template, and the checks made when loading.

A template file ``templates/<name>.j2`` starts with a Jinja comment holding TOML::

    {#---
    title = "Protocol paused"
    description = "..."
    audience = "public"          # or "internal"
    mentions_everyone = true     # the body calls everyone(); sent only for P1 where allowed
    needs_next_update = true     # requires a datetime variable named next_update
    [[variables]]
    name = "reason"
    type = "text"                # text / url / address / datetime / duration / choice
    required = true
    label = "Why we paused"
    help = "..."
    max_length = 400
    ---#}

Everything is checked when the file is loaded, so a broken template fails at start-up, not in
the middle of an incident: unknown keys, bad names, defaults that do not validate, variables the
body uses but does not declare (or declares but never uses), ``everyone()`` without the flag.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import jinja2
from jinja2 import meta

from comms.enums import Platform
from comms.errors import NotFound
from comms.rendering.environment import CONTEXT_NAMES, ENVIRONMENTS, HELPERS
from comms.rendering.limits import CHOICE_MAX, DEFAULT_TEXT_MAX, MAX_TEXT_MAX, URL_MAX
from comms.rendering.values import (
    BadValue,
    VarType,
    normalise_address,
    normalise_datetime,
    normalise_duration,
    normalise_text_value,
    normalise_url,
)

Audience = Literal["public", "internal"]

_HEADER = re.compile(r"\A\{#---\n(?P<toml>.*?)\n---#\}\n", re.DOTALL)
_TEMPLATE_NAME = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
_VARIABLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_CHOICE = re.compile(r"^[a-z0-9][a-z0-9_]{0,39}$")
_TOP_KEYS = {
    "title",
    "description",
    "audience",
    "mentions_everyone",
    "needs_next_update",
    "needs_incident",
    "locks_thread",
    "is_correction",
    "variables",
}
# Keys earlier releases declared but never acted on; a header that still sets one is refused
# with where that behaviour lives, rather than as an unknown key.
_REMOVED_KEYS = {
    "pin": "pinning is the destination's `pin` setting, or the draft's pin option",
    "thread_reply": (
        "follow-ups thread after the incident's first announcement wherever the destination "
        "has `thread_updates`"
    ),
}
_FLAG_DEFAULTS: dict[str, bool] = {
    "mentions_everyone": False,
    "needs_next_update": False,
    "locks_thread": False,
    "is_correction": False,
}
_VARIABLE_KEYS = {"name", "type", "required", "help", "label", "choices", "max_length", "default"}


class TemplateLoadError(Exception):
    """A template file is malformed; the message names the file and what is wrong."""


@dataclass(frozen=True)
class VariableSpec:
    """One declared variable of a template."""

    name: str
    type: VarType
    required: bool = False
    help: str = ""
    choices: tuple[str, ...] = ()
    max_length: int = DEFAULT_TEXT_MAX
    default: str | None = None
    label: str = ""

    @property
    def field(self) -> str:
        """The field name errors and warnings use (``variables.<name>``)."""
        return f"variables.{self.name}"

    def normalise(self, raw: str) -> str:
        """The canonical form of ``raw`` for this variable; raises BadValue with the problem."""
        if self.type is VarType.TEXT:
            return normalise_text_value(raw, max_length=self.max_length)
        if self.type is VarType.URL:
            return normalise_url(raw)
        if self.type is VarType.ADDRESS:
            return normalise_address(raw)
        if self.type is VarType.DATETIME:
            return normalise_datetime(raw)
        if self.type is VarType.DURATION:
            return normalise_duration(raw)
        value = raw.strip()
        if value not in self.choices:
            raise BadValue(f"must be one of {', '.join(self.choices)} (got {value[:40]!r})")
        return value


@dataclass(frozen=True)
class TemplateSpec:
    """A loaded template: what it is for, what it needs, and its compiled bodies."""

    name: str
    title: str
    description: str
    audience: Audience
    variables: tuple[VariableSpec, ...]
    needs_next_update: bool = False
    mentions_everyone: bool = False
    needs_incident: bool = True
    locks_thread: bool = False
    is_correction: bool = False
    digest: str = ""
    source: str = field(default="", repr=False)
    compiled: Mapping[Platform, jinja2.Template] = field(
        default_factory=dict, repr=False, compare=False
    )

    def variable(self, name: str) -> VariableSpec:
        for var in self.variables:
            if var.name == name:
                return var
        raise NotFound(
            f"template {self.name!r} has no variable {name!r}", field=f"variables.{name}"
        )

    @property
    def variable_names(self) -> tuple[str, ...]:
        return tuple(var.name for var in self.variables)


def _fail(name: str, problem: str) -> TemplateLoadError:
    return TemplateLoadError(f"template {name!r}: {problem}")


def _bool(name: str, data: Mapping[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise _fail(name, f"{key} must be true or false")
    return value


def _str(name: str, data: Mapping[str, Any], key: str, *, required: bool) -> str:
    value = data.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise _fail(name, f"{key} must be a non-empty string")
    return value.strip()


def _variable(name: str, index: int, data: Any) -> VariableSpec:
    if not isinstance(data, dict):
        raise _fail(name, f"variables[{index}] must be a table")
    unknown = set(data) - _VARIABLE_KEYS
    if unknown:
        raise _fail(name, f"variables[{index}] has unknown keys: {', '.join(sorted(unknown))}")
    var_name = data.get("name")
    if not isinstance(var_name, str) or not _VARIABLE_NAME.match(var_name):
        raise _fail(name, f"variables[{index}].name must match {_VARIABLE_NAME.pattern}")
    where = f"variable {var_name!r}"
    if var_name in CONTEXT_NAMES or var_name in HELPERS:
        raise _fail(name, f"{where}: the name is reserved for the render context or a helper")
    try:
        var_type = VarType(str(data.get("type")))
    except ValueError:
        kinds = ", ".join(t.value for t in VarType)
        raise _fail(name, f"{where}: type must be one of {kinds}") from None
    choices = data.get("choices", [])
    if var_type is VarType.CHOICE:
        if (
            not isinstance(choices, list)
            or not choices
            or not all(isinstance(c, str) and _CHOICE.match(c) for c in choices)
            or len(set(choices)) != len(choices)
        ):
            raise _fail(name, f"{where}: choices must be distinct lowercase identifiers")
    elif choices:
        raise _fail(name, f"{where}: only choice variables have choices")
    default_max = {VarType.TEXT: DEFAULT_TEXT_MAX, VarType.URL: URL_MAX}.get(var_type, CHOICE_MAX)
    max_length = data.get("max_length", default_max)
    if var_type is not VarType.TEXT and "max_length" in data:
        raise _fail(name, f"{where}: max_length applies to text variables only")
    if not isinstance(max_length, int) or not 1 <= max_length <= MAX_TEXT_MAX:
        raise _fail(name, f"{where}: max_length must be between 1 and {MAX_TEXT_MAX}")
    required = _bool(name, data, "required", False)
    label = data.get("label", var_name.replace("_", " ").capitalize())
    help_text = data.get("help", "")
    if not isinstance(label, str) or not isinstance(help_text, str):
        raise _fail(name, f"{where}: label and help must be strings")
    spec = VariableSpec(
        name=var_name,
        type=var_type,
        required=required,
        help=" ".join(help_text.split()),
        choices=tuple(choices),
        max_length=max_length,
        default=None,
        label=label.strip(),
    )
    default = data.get("default")
    if default is not None:
        if not isinstance(default, str):
            raise _fail(name, f"{where}: default must be a string")
        try:
            normalised = spec.normalise(default)
        except BadValue as exc:
            raise _fail(name, f"{where}: default {exc}") from None
        spec = replace(spec, default=normalised)
    return spec


def parse_template(name: str, source: str) -> TemplateSpec:
    """Parse, check and compile one template; raises TemplateLoadError naming the problem."""
    if not _TEMPLATE_NAME.match(name):
        raise _fail(name, "the file name must be lowercase words joined by hyphens")
    match = _HEADER.match(source)
    if not match:
        raise _fail(name, "the file must start with a {#--- TOML header ---#}")
    try:
        data = tomllib.loads(match.group("toml"))
    except tomllib.TOMLDecodeError as exc:
        raise _fail(name, f"header is not valid TOML: {exc}") from None
    removed = sorted(set(data) & set(_REMOVED_KEYS))
    if removed:
        why = "; ".join(f"{key}: {_REMOVED_KEYS[key]}" for key in removed)
        raise _fail(name, f"header keys no longer exist (they were never acted on): {why}")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise _fail(name, f"header has unknown keys: {', '.join(sorted(unknown))}")
    audience = data.get("audience")
    if audience not in ("public", "internal"):
        raise _fail(name, "audience must be 'public' or 'internal'")
    if (audience == "internal") != name.startswith("internal-"):
        raise _fail(name, "internal templates, and only they, are named internal-<...>")
    flags = {key: _bool(name, data, key, default) for key, default in _FLAG_DEFAULTS.items()}
    needs_incident = _bool(name, data, "needs_incident", audience == "public")
    if audience == "internal" and flags["mentions_everyone"]:
        raise _fail(name, "internal notifications never ping @everyone")
    raw_vars = data.get("variables", [])
    if not isinstance(raw_vars, list):
        raise _fail(name, "variables must be an array of tables ([[variables]])")
    variables = tuple(_variable(name, i, item) for i, item in enumerate(raw_vars))
    names = [var.name for var in variables]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise _fail(name, f"variables declared twice: {', '.join(duplicates)}")
    if flags["needs_next_update"]:
        nxt = next((v for v in variables if v.name == "next_update"), None)
        if nxt is None or nxt.type is not VarType.DATETIME or not nxt.required:
            raise _fail(name, "needs_next_update requires a required datetime next_update")

    try:
        ast = ENVIRONMENTS[Platform.DISCORD].parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise _fail(name, f"line {exc.lineno}: {exc.message}") from None
    used = meta.find_undeclared_variables(ast)
    undeclared = sorted(used - set(names) - CONTEXT_NAMES - HELPERS)
    if undeclared:
        raise _fail(name, f"the body uses undeclared variables: {', '.join(undeclared)}")
    unused = sorted(set(names) - used)
    if unused:
        raise _fail(name, f"declared variables the body never uses: {', '.join(unused)}")
    if ("everyone" in used) != flags["mentions_everyone"]:
        raise _fail(name, "call everyone() in the body if and only if mentions_everyone = true")
    if "incident_key" in used and not needs_incident:
        raise _fail(name, "uses incident_key but sets needs_incident = false")

    compiled = {platform: env.from_string(source) for platform, env in ENVIRONMENTS.items()}
    return TemplateSpec(
        name=name,
        title=_str(name, data, "title", required=True),
        description=" ".join(_str(name, data, "description", required=True).split()),
        audience=audience,
        variables=variables,
        needs_incident=needs_incident,
        digest=hashlib.sha256(source.encode("utf-8")).hexdigest(),
        source=source,
        compiled=compiled,
        **flags,
    )
