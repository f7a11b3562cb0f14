"""Application commands: list and bulk-overwrite global and guild commands under
``/applications/{id}``; a member running one is in interactions.py."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from bots.sandbox import discord_state as ds
from bots.sandbox.common import json_response
from bots.sandbox.discord.errors import (
    MISSING_ACCESS,
    DiscordError,
    field_error,
    invalid_form,
    unknown,
)
from bots.sandbox.discord.forms import Form
from bots.sandbox.discord.resource import Resource
from bots.sandbox.discord.routing import Ctx


class Commands(Resource):
    """``/applications/{id}/commands`` and ``/applications/{id}/guilds/{id}/commands``."""

    def _check_application(self, ctx: Ctx) -> int | None:
        if ctx.params["application_id"] != self.world.application_id:
            raise DiscordError(*MISSING_ACCESS)
        guild_id = ctx.params.get("guild_id")
        if guild_id is not None and guild_id not in self.world.guilds:
            raise unknown("Guild")
        return guild_id

    async def list_commands(self, ctx: Ctx) -> web.Response:
        guild_id = self._check_application(ctx)
        commands = [c for c in self.world.commands.values() if c.guild_id == guild_id]
        return json_response([c.to_json() for c in commands])

    async def put_commands(self, ctx: Ctx) -> web.Response:
        guild_id = self._check_application(ctx)
        body = ctx.body if ctx.body is not None else []
        if not isinstance(body, list):
            raise invalid_form(
                field_error("LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
            )
        form = Form()
        specs: list[dict[str, Any]] = []
        for index, item in enumerate(body):
            path = str(index)
            if not isinstance(item, dict):
                form.add(path, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
                continue
            kind = item.get("type") or 1
            if isinstance(kind, bool) or kind not in (1, 2, 3, 4):
                form.add(f"{path}.type", "BASE_TYPE_CHOICES", "Value must be one of {1, 2, 3, 4}.")
                continue
            name = item.get("name")
            if not isinstance(name, str) or not 1 <= len(name) <= 32:
                form.add(
                    f"{path}.name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length."
                )
            elif kind == 1 and (not re.fullmatch(r"[-_'\w]{1,32}", name) or name != name.lower()):
                form.add(
                    f"{path}.name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid"
                )
            description = item.get("description") or ""
            if kind == 1 and (not isinstance(description, str) or not 1 <= len(description) <= 100):
                form.add(
                    f"{path}.description",
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 100 in length.",
                )
            options = item.get("options") or []
            if not isinstance(options, list) or len(options) > 25:
                form.add(
                    f"{path}.options", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."
                )
                continue
            for o_index, option in enumerate(options):
                o_path = f"{path}.options.{o_index}"
                if not isinstance(option, dict):
                    form.add(o_path, "DICT_TYPE_CONVERT", "Only dictionaries may be used")
                    continue
                o_type = option.get("type")
                if isinstance(o_type, bool) or o_type not in range(1, 12):
                    form.add(f"{o_path}.type", "BASE_TYPE_CHOICES", "Value must be 1-11.")
                form.string(option, "name", max_len=32, min_len=1, path=f"{o_path}.name")
                form.string(option, "description", max_len=100, min_len=1,
                            path=f"{o_path}.description")  # fmt: skip
                for key in ("name", "description"):
                    if not isinstance(option.get(key), str):
                        form.add(f"{o_path}.{key}", "BASE_TYPE_REQUIRED", "This field is required")
            if (
                item.get("default_member_permissions") is not None
                and not str(item["default_member_permissions"]).isdigit()
            ):
                form.add(
                    f"{path}.default_member_permissions",
                    "NUMBER_TYPE_COERCE",
                    "Value is not int.",
                )
            for key in ("contexts", "integration_types"):
                value = item.get(key)
                if value is not None and (
                    not isinstance(value, list)
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
                ):
                    form.add(f"{path}.{key}", "LIST_TYPE_CONVERT", "Only lists of integers")
            specs.append(item)
        form.raise_if_any()
        existing = {
            (c.name, c.type): c for c in self.world.commands.values() if c.guild_id == guild_id
        }
        for command in existing.values():
            del self.world.commands[command.id]
        result = []
        for item in specs:
            kind = int(item.get("type") or 1)
            previous = existing.get((item["name"], kind))
            permissions = item.get("default_member_permissions")
            command = ds.Command(
                id=previous.id if previous else self.world.ids.next(),
                application_id=self.world.application_id,
                name=item["name"],
                description=item.get("description") or "",
                type=kind,
                options=[
                    self._option_json(o) for o in item.get("options") or [] if isinstance(o, dict)
                ],
                guild_id=guild_id,
                version=self.world.ids.next(),
                default_member_permissions=None if permissions is None else str(permissions),
                contexts=item.get("contexts"),
                integration_types=item.get("integration_types") or [0],
                nsfw=bool(item.get("nsfw", False)),
            )
            self.world.commands[command.id] = command
            result.append(command.to_json())
        return json_response(result)

    @staticmethod
    def _option_json(option: dict[str, Any]) -> dict[str, Any]:
        data = {
            "type": option.get("type", 3),
            "name": option.get("name", ""),
            "description": option.get("description", ""),
        }
        if option.get("required"):
            data["required"] = True
        if isinstance(option.get("choices"), list):
            data["choices"] = option["choices"]
        return data
