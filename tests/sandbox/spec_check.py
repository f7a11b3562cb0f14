"""Check every request and answer the sandbox handled against the platforms' published specs.

Discord: the OpenAPI 3.1 document (JSON Schema 2020-12), request bodies against the operation's
``requestBody`` and answers against its ``responses``. Telegram: each method's ``fields`` for the
parameters and the ``types`` for the result, recursively.

Where Discord's documentation and its spec disagree we follow the documentation (the spec's own
README says so); each such place is patched in ``DOCS_OVER_SPEC`` and listed in docs/SANDBOX.md.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jsonschema import Draft202012Validator  # type: ignore[import-untyped,unused-ignore]
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from bots.sandbox.core import Exchange

ROOT = Path(__file__).resolve().parents[2]
DISCORD_URI = "urn:discord-openapi"


def specs_dir() -> Path:
    configured = os.environ.get("COMMS_SPECS_DIR")
    candidates = [Path(configured)] if configured else []
    candidates += [Path(__file__).resolve().parent / "specs", ROOT.parent / "shared" / "specs"]
    for candidate in candidates:
        if (candidate / "discord-openapi.json").exists():
            return candidate
    raise FileNotFoundError(
        "the platform specs were not found in tests/sandbox/specs (or ../shared/specs); "
        "set COMMS_SPECS_DIR to the folder holding discord-openapi.json and telegram-api.json"
    )


# --------------------------------------------------------------------------------------------
# Discord


def _docs_over_spec(doc: dict[str, Any], side: str) -> None:
    """Patch the spec where Discord's documentation says otherwise (see docs/SANDBOX.md)."""
    schemas = doc["components"]["schemas"]
    if side == "request":
        # 3. reference.mdx (snowflakes): ids are returned as strings, and requests may carry
        #    them as integers (discord.py sends permission overwrite ids as integers).
        schemas["SnowflakeType"] = {
            "oneOf": [
                schemas["SnowflakeType"],
                {"type": "integer", "minimum": 0, "maximum": 18446744073709551615},
            ]
        }
    # 1. resources/message.mdx: content is "up to 2000 characters"; the spec says 4000.
    for name in ("MessageCreateRequest", "MessageEditRequestPartial"):
        schemas[name]["properties"]["content"]["maxLength"] = 2000
    # 2. reference.mdx (error messages): the codes inside "_errors" are strings such as
    #    "BASE_TYPE_MAX_LENGTH"; the spec types them as integers.
    # 4. topics/rate-limits.mdx: the 429 body is {"message", "retry_after", "global"} with an
    #    optional "code" (the docs' own example has none); the spec requires "code".
    schemas["RatelimitedResponse"]["allOf"][0] = {
        "type": "object",
        "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
        "required": ["message"],
    }
    schemas["InnerErrors"]["properties"]["_errors"]["items"] = {
        "type": "object",
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        "required": ["code", "message"],
    }


@functools.cache
def _discord_raw() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((specs_dir() / "discord-openapi.json").read_text())
    return data


@functools.cache
def _discord(
    side: str = "response",
) -> tuple[dict[str, Any], Registry[Any], dict[tuple[str, str], dict[str, Any]]]:
    doc = copy.deepcopy(_discord_raw())
    _docs_over_spec(doc, side)
    resource = Resource.from_contents(doc, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(DISCORD_URI, resource)
    operations: dict[tuple[str, str], dict[str, Any]] = {}
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                operations[(method.upper(), _normalise(path))] = {
                    "path": path,
                    "method": method,
                    "operation": operation,
                }
    return doc, registry, operations


def _normalise(path: str) -> str:
    return re.sub(r"{[^}]+}", "{}", path.rstrip("/"))


def _pointer(*parts: str) -> str:
    escaped = [p.replace("~", "~0").replace("/", "~1") for p in parts]
    return f"{DISCORD_URI}#/" + "/".join(quote(p, safe="~") for p in escaped)


@functools.cache
def _validator(ref: str, side: str) -> Draft202012Validator:
    _, registry, _ = _discord(side)
    return Draft202012Validator({"$ref": ref}, registry=registry)


def _schema_errors(ref: str, instance: Any, label: str, side: str = "response") -> list[str]:
    validator = _validator(ref, side)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    result = []
    for error in errors[:5]:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        result.append(f"{label}: {where}: {error.message[:300]}")
    return result


def check_discord(exchange: Exchange, *, requests: bool = True) -> list[str]:
    doc, _, operations = _discord()
    method, _, template = exchange.operation.partition(" ")
    found = operations.get((method, _normalise(template)))
    label = f"discord {exchange.operation} -> {exchange.status}"
    if found is None:
        if exchange.status in (404, 405):  # no such route: Discord's generic error object
            ref = _pointer("components", "schemas", "ErrorResponse")
            return _schema_errors(ref, exchange.response, f"{label} response")
        return [f"{label}: no such operation in the spec"]
    path, operation = found["path"], found["operation"]
    problems: list[str] = []
    body = operation.get("requestBody")
    has_json = body is not None and "application/json" in body.get("content", {})
    if requests and has_json and exchange.request is not None:
        ref = _pointer("paths", path, found["method"], "requestBody", "content",
                       "application/json", "schema")  # fmt: skip
        problems += _schema_errors(ref, exchange.request, f"{label} request", "request")
    if exchange.status >= 500:
        return problems  # injected faults: the spec describes no 5xx answers
    responses = operation.get("responses", {})
    key = str(exchange.status)
    if key not in responses and 400 <= exchange.status < 500:
        key = "4XX"
    response = responses.get(key)
    if response is None:
        return [*problems, f"{label}: status {exchange.status} is not documented"]
    pointer_parts = ["paths", path, found["method"], "responses", key]
    if "$ref" in response:
        name = response["$ref"].rsplit("/", 1)[1]
        response = doc["components"]["responses"][name]
        pointer_parts = ["components", "responses", name]
    content = response.get("content", {})
    if "application/json" not in content:
        if exchange.response not in (None, ""):
            problems.append(f"{label}: expected no body, got {str(exchange.response)[:200]}")
        return problems
    if exchange.headers.get("Content-Type") != "application/json":
        problems.append(f"{label}: Content-Type is {exchange.headers.get('Content-Type')!r}")
    ref = _pointer(*pointer_parts, "content", "application/json", "schema")
    problems += _schema_errors(ref, exchange.response, f"{label} response")
    return problems


GATEWAY_SCHEMAS = {
    "MESSAGE_CREATE": "MessageResponse",
    "MESSAGE_UPDATE": "MessageResponse",
    "THREAD_CREATE": "ThreadResponse",
    "THREAD_UPDATE": "ThreadResponse",
    "CHANNEL_CREATE": "GuildChannelResponse",
    "CHANNEL_UPDATE": "GuildChannelResponse",
}


def check_gateway(frames: Iterable[dict[str, Any]]) -> list[str]:
    """Gateway dispatches that carry REST objects (messages, channels) must match them too."""
    problems: list[str] = []
    for frame in frames:
        schema = GATEWAY_SCHEMAS.get(frame.get("t", ""))
        if schema is not None:
            ref = _pointer("components", "schemas", schema)
            problems += _schema_errors(ref, frame["d"], f"gateway {frame['t']} #{frame['s']}")
    return problems


# --------------------------------------------------------------------------------------------
# Telegram


@functools.cache
def _telegram() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((specs_dir() / "telegram-api.json").read_text())
    return data


def _type_errors(value: Any, types: Iterable[str], path: str) -> list[str]:
    options = list(types)
    first: list[str] | None = None
    for kind in options:
        errors = _one_type_errors(value, kind, path)
        if not errors:
            return []
        if first is None:
            first = errors
    return first or [f"{path}: no type"]


def _one_type_errors(value: Any, kind: str, path: str) -> list[str]:
    if kind.startswith("Array of "):
        if not isinstance(value, list):
            return [f"{path}: expected {kind}, got {type(value).__name__}"]
        errors: list[str] = []
        for index, item in enumerate(value):
            errors += _type_errors(item, [kind[9:]], f"{path}[{index}]")
        return errors
    simple = {
        "Integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "Float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "String": lambda v: isinstance(v, str),
        "Boolean": lambda v: isinstance(v, bool),
        "True": lambda v: v is True,
    }
    if kind in simple:
        return [] if simple[kind](value) else [f"{path}: {value!r} is not {kind}"]
    spec = _telegram()["types"].get(kind)
    if spec is None:
        return [f"{path}: unknown type {kind}"]
    if spec.get("subtypes"):
        return _type_errors(value, spec["subtypes"], path)
    if not isinstance(value, dict):
        return [f"{path}: expected {kind} object, got {type(value).__name__}"]
    fields = {f["name"]: f for f in spec.get("fields", [])}
    errors = [f"{path}: {kind} has no field {name!r}" for name in value if name not in fields]
    for name, field in fields.items():
        if name not in value:
            if field["required"]:
                errors.append(f"{path}: {kind}.{name} is required")
            continue
        errors += _type_errors(value[name], field["types"], f"{path}.{name}")
    return errors


def _decode_form(value: Any, types: list[str]) -> Any:
    """PTB's wire format: strings raw, everything else JSON-encoded."""
    if not isinstance(value, str) or "String" in types:
        return value
    if "Integer" in types and re.fullmatch(r"-?\d+", value):
        return int(value)
    try:
        return json.loads(value)
    except ValueError:
        return value


def check_telegram(exchange: Exchange, *, requests: bool = True) -> list[str]:
    spec = _telegram()
    label = f"telegram {exchange.operation} -> {exchange.status}"
    method = spec["methods"].get(exchange.operation)
    if method is None:
        if exchange.status in (401, 404):  # bad token or no such method: only the error shape
            method = {"fields": [], "returns": []}
            requests = False
        else:
            return [f"{label}: no such method in the spec"]
    problems: list[str] = []
    if requests and isinstance(exchange.request, dict):
        fields = {f["name"]: f for f in method.get("fields", [])}
        for name, raw in exchange.request.items():
            field = fields.get(name)
            if field is None:
                problems.append(f"{label}: unknown parameter {name!r}")
                continue
            value = _decode_form(raw, field["types"])
            problems += _type_errors(value, field["types"], f"{label} param {name}")
        for name, field in fields.items():
            if field["required"] and name not in exchange.request:
                problems.append(f"{label}: missing required parameter {name!r}")
    body = exchange.response
    if exchange.status >= 500 and not isinstance(body, dict):
        return problems
    if not isinstance(body, dict) or not isinstance(body.get("ok"), bool):
        return [*problems, f"{label}: not a Bot API response: {str(body)[:200]}"]
    if body["ok"]:
        if set(body) != {"ok", "result"}:
            problems.append(f"{label}: unexpected keys {sorted(body)}")
        problems += _type_errors(body.get("result"), method["returns"], f"{label} result")
    else:
        allowed = {"ok", "error_code", "description", "parameters"}
        if not set(body) <= allowed or not isinstance(body.get("error_code"), int):
            problems.append(f"{label}: bad error shape {body}")
        if not isinstance(body.get("description"), str):
            problems.append(f"{label}: error without description")
        if body.get("error_code") != exchange.status:
            problems.append(f"{label}: error_code {body.get('error_code')} != HTTP status")
        if "parameters" in body:
            problems += _type_errors(body["parameters"], ["ResponseParameters"], label)
    return problems


def check_exchanges(exchanges: Iterable[Exchange], *, requests: bool = True) -> list[str]:
    problems: list[str] = []
    for exchange in exchanges:
        if exchange.platform == "discord":
            problems += check_discord(exchange, requests=requests)
        else:
            problems += check_telegram(exchange, requests=requests)
    return problems
