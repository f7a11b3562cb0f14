"""Field validation producing Discord's ``errors`` tree: ``Form`` collects errors at dotted paths
for any request body; ``validate_embeds`` checks the embed limits that messages and interactions
share."""

from __future__ import annotations

import re
from typing import Any

from bots.sandbox.discord.errors import invalid_form


class Form:
    """Collects field errors at dotted paths and renders Discord's nested ``errors`` object."""

    def __init__(self) -> None:
        self.errors: dict[str, Any] = {}

    def add(self, path: str, code: str, message: str) -> None:
        node = self.errors
        for part in path.split("."):
            node = node.setdefault(part, {})
        node.setdefault("_errors", []).append({"code": code, "message": message})

    def merge(self, path: str, tree: dict[str, Any]) -> None:
        if not tree:
            return
        node = self.errors
        for part in path.split("."):
            node = node.setdefault(part, {})
        node.update(tree)

    def raise_if_any(self) -> None:
        if self.errors:
            raise invalid_form(self.errors)

    def string(
        self, data: dict[str, Any], key: str, *, max_len: int, min_len: int = 0, path: str = ""
    ) -> str | None:
        value = data.get(key)
        where = path or key
        if value is None:
            return None
        if not isinstance(value, str):
            self.add(where, "STRING_TYPE_CONVERT", f'Could not interpret "{value}" as string.')
            return None
        if len(value) > max_len or len(value) < min_len:
            if min_len:
                self.add(
                    where,
                    "BASE_TYPE_BAD_LENGTH",
                    f"Must be between {min_len} and {max_len} in length.",
                )
            else:
                self.add(where, "BASE_TYPE_MAX_LENGTH", f"Must be {max_len} or fewer in length.")
            return None
        return value

    def integer(
        self,
        data: dict[str, Any],
        key: str,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        path: str = "",
    ) -> int | None:
        value = data.get(key)
        where = path or key
        if value is None:
            return None
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(where, "NUMBER_TYPE_COERCE", f'Value "{value}" is not int.')
            return None
        if minimum is not None and value < minimum:
            self.add(
                where, "NUMBER_TYPE_MIN", f"int value should be greater than or equal to {minimum}."
            )
            return None
        if maximum is not None and value > maximum:
            self.add(
                where, "NUMBER_TYPE_MAX", f"int value should be less than or equal to {maximum}."
            )
            return None
        return value

    def boolean(self, data: dict[str, Any], key: str) -> bool | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            self.add(key, "BOOLEAN_TYPE_CONVERT", "Must be either true or false.")
            return None
        return value

    def choice(self, data: dict[str, Any], key: str, choices: tuple[int, ...]) -> int | None:
        value = self.integer(data, key)
        if value is not None and value not in choices:
            self.add(key, "BASE_TYPE_CHOICES", f"Value must be one of {set(choices)}.")
            return None
        return value

    def snowflake(self, data: dict[str, Any], key: str, path: str = "") -> int | None:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, str) and value.isdigit() and len(value) <= 20:
            return int(value)
        self.add(path or key, "NUMBER_TYPE_COERCE", f'Value "{value}" is not snowflake.')
        return None


EMBED_LIMITS = {"title": 256, "description": 4096}


def validate_embeds(form: Form, value: Any) -> list[dict[str, Any]]:
    """Check the documented embed limits and return embeds in the response shape."""
    if value is None:
        return []
    if not isinstance(value, list):
        form.add("embeds", "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
        return []
    if len(value) > 10:
        form.add("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        return []
    result: list[dict[str, Any]] = []
    total = 0
    for index, embed in enumerate(value):
        base = f"embeds.{index}"
        if not isinstance(embed, dict):
            form.add(base, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
            continue
        out: dict[str, Any] = {"type": "rich"}
        for key, limit in EMBED_LIMITS.items():
            text = form.string(embed, key, max_len=limit, path=f"{base}.{key}")
            if text is not None:
                out[key] = text
                total += len(text)
        url = form.string(embed, "url", max_len=2048, path=f"{base}.url")
        if url is not None:
            out["url"] = url
        color = form.integer(embed, "color", minimum=0, maximum=0xFFFFFF, path=f"{base}.color")
        if color is not None:
            out["color"] = color
        stamp = form.string(embed, "timestamp", max_len=64, path=f"{base}.timestamp")
        if stamp is not None:
            out["timestamp"] = stamp
        fields = embed.get("fields")
        if fields is not None:
            if not isinstance(fields, list):
                form.add(f"{base}.fields", "LIST_TYPE_CONVERT", "Only iterables may be used")
            elif len(fields) > 25:
                form.add(f"{base}.fields", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
            else:
                out_fields = []
                for f_index, item in enumerate(fields):
                    f_base = f"{base}.fields.{f_index}"
                    if not isinstance(item, dict):
                        form.add(f_base, "DICT_TYPE_CONVERT", "Only dictionaries may be used")
                        continue
                    name = form.string(item, "name", max_len=256, min_len=1, path=f"{f_base}.name")
                    val = form.string(
                        item, "value", max_len=1024, min_len=1, path=f"{f_base}.value"
                    )
                    if item.get("name") is None:
                        form.add(f"{f_base}.name", "BASE_TYPE_REQUIRED", "This field is required")
                    if item.get("value") is None:
                        form.add(f"{f_base}.value", "BASE_TYPE_REQUIRED", "This field is required")
                    if name is not None and val is not None:
                        total += len(name) + len(val)
                        out_fields.append(
                            {"name": name, "value": val, "inline": bool(item.get("inline", False))}
                        )
                out["fields"] = out_fields
        for key, sub, limit in (("footer", "text", 2048), ("author", "name", 256)):
            part = embed.get(key)
            if part is None:
                continue
            if not isinstance(part, dict):
                form.add(f"{base}.{key}", "DICT_TYPE_CONVERT", "Only dictionaries may be used")
                continue
            text = form.string(part, sub, max_len=limit, path=f"{base}.{key}.{sub}")
            if text is not None:
                total += len(text)
                out[key] = {sub: text}
                for extra in ("url", "icon_url"):
                    if isinstance(part.get(extra), str):
                        out[key][extra] = part[extra]
        for key in ("image", "thumbnail"):
            part = embed.get(key)
            if isinstance(part, dict) and isinstance(part.get("url"), str):
                out[key] = {"url": part["url"], "proxy_url": part["url"], "width": 0, "height": 0}
        result.append(out)
    if total > 6000:
        form.add("embeds", "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")
    return result
