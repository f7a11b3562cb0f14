"""Who a Discord message pings: ``mentions``, ``mention_roles`` and ``mention_everyone``.

Discord computes these server-side from the content, the request's ``allowed_mentions`` and the
author's permissions; discord.py only reads the resulting arrays. Kept free of sandbox state so
tests of mention safety can call it directly.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

USER_MENTION = re.compile(r"<@!?(\d{1,20})>")
ROLE_MENTION = re.compile(r"<@&(\d{1,20})>")
PARSE_TYPES = ("users", "roles", "everyone")


@dataclass(frozen=True)
class Mentions:
    user_ids: tuple[int, ...]
    role_ids: tuple[int, ...]
    everyone: bool


def validate_allowed_mentions(value: Any) -> dict[str, Any]:
    """Return Discord's ``errors`` tree for a bad ``allowed_mentions`` ({} when valid)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        return _err("DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
    errors: dict[str, Any] = {}
    parse = value.get("parse")
    if parse is not None:
        if not isinstance(parse, list):
            errors["parse"] = _err("LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
        else:
            for index, item in enumerate(parse):
                if item not in PARSE_TYPES:
                    errors.setdefault("parse", {})[str(index)] = _err(
                        "BASE_TYPE_CHOICES", "Value must be one of ('users', 'roles', 'everyone')."
                    )
    for key in ("users", "roles"):
        ids = value.get(key)
        if ids is None:
            continue
        if not isinstance(ids, list):
            errors[key] = _err("LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
            continue
        if len(ids) > 100:
            errors[key] = _err("BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
            continue
        for index, item in enumerate(ids):
            if not _is_snowflake(item):
                errors.setdefault(key, {})[str(index)] = _err(
                    "NUMBER_TYPE_COERCE", f'Value "{item}" is not snowflake.'
                )
        if isinstance(parse, list) and key in parse and ids:
            errors.setdefault("_errors", []).append(
                {
                    "code": "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                    "message": f'parse:["{key}"] and {key}: [ids...] are mutually exclusive.',
                }
            )
    replied = value.get("replied_user")
    if replied is not None and not isinstance(replied, bool):
        errors["replied_user"] = _err("BOOLEAN_TYPE_CONVERT", "Must be either true or false.")
    return errors


def compute_mentions(
    content: str,
    allowed_mentions: Mapping[str, Any] | None,
    *,
    known_user_ids: Collection[int],
    role_mentionable: Mapping[int, bool],
    can_mention_everyone: bool,
    replied_user_id: int | None = None,
) -> Mentions:
    """Apply Discord's rules; ``allowed_mentions=None`` means the field was omitted (parse all).

    A role that is not mentionable is only pinged when the author may mention everyone, as on
    Discord; unknown ids are not pinged.
    """
    if allowed_mentions is None:
        parse: Collection[str] = PARSE_TYPES
        allowed_users: set[int] = set()
        allowed_roles: set[int] = set()
        replied = True
    else:
        parse = [p for p in (allowed_mentions.get("parse") or []) if p in PARSE_TYPES]
        allowed_users = {int(x) for x in allowed_mentions.get("users") or [] if _is_snowflake(x)}
        allowed_roles = {int(x) for x in allowed_mentions.get("roles") or [] if _is_snowflake(x)}
        replied = bool(allowed_mentions.get("replied_user", False))

    users: list[int] = []
    for match in USER_MENTION.finditer(content):
        user_id = int(match.group(1))
        if user_id not in known_user_ids or user_id in users:
            continue
        if "users" in parse or user_id in allowed_users:
            users.append(user_id)
    if replied and replied_user_id is not None and replied_user_id not in users:
        users.append(replied_user_id)

    roles: list[int] = []
    for match in ROLE_MENTION.finditer(content):
        role_id = int(match.group(1))
        if role_id not in role_mentionable or role_id in roles:
            continue
        if not (role_mentionable[role_id] or can_mention_everyone):
            continue
        if "roles" in parse or role_id in allowed_roles:
            roles.append(role_id)

    everyone = (
        "everyone" in parse
        and can_mention_everyone
        and ("@everyone" in content or "@here" in content)
    )
    return Mentions(tuple(users), tuple(roles), everyone)


def _is_snowflake(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 0 <= value < 2**64
    return isinstance(value, str) and value.isdigit() and len(value) <= 20


def _err(code: str, message: str) -> dict[str, Any]:
    return {"_errors": [{"code": code, "message": message}]}
