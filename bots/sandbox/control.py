"""The control API under ``/control``: build the world, act as community members, read what
members see, set limits, inject faults, reset, and read the request log and counters."""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import discord_state as ds
from . import telegram_markup as markup
from . import telegram_state as ts
from .common import iso, json_response
from .discord import DiscordError
from .faults import FaultError
from .telegram_api import TelegramError

if TYPE_CHECKING:
    from .server import Sandbox

log = logging.getLogger(__name__)


class ControlError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ControlError(400, f"{name} must be a boolean")
    return value


class ControlAPI:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sb = sandbox

    def routes(self) -> list[web.RouteDef]:
        w = self._wrap
        return [
            web.get("/control", w(self.index)),
            web.get("/control/info", w(self.info)),
            web.get("/control/world", w(self.world)),
            web.post("/control/reset", w(self.reset)),
            web.get("/control/limits", w(self.get_limits)),
            web.patch("/control/limits", w(self.set_limits)),
            web.put("/control/limits", w(self.set_limits)),
            web.get("/control/faults", w(self.list_faults)),
            web.post("/control/faults", w(self.add_fault)),
            web.delete("/control/faults", w(self.clear_faults)),
            web.delete("/control/faults/{fault_id}", w(self.remove_fault)),
            web.get("/control/requests", w(self.requests)),
            web.get("/control/stats", w(self.stats)),
            web.post("/control/discord/guilds", w(self.d_create_guild)),
            web.post("/control/discord/guilds/{guild_id}/channels", w(self.d_create_channel)),
            web.patch("/control/discord/guilds/{guild_id}/roles/{role_id}", w(self.d_patch_role)),
            web.post("/control/discord/users", w(self.d_create_user)),
            web.patch("/control/discord/bot", w(self.d_patch_bot)),
            web.get("/control/discord/channels/{channel_id}", w(self.d_channel)),
            web.get("/control/discord/channels/{channel_id}/messages", w(self.d_messages)),
            web.post("/control/discord/channels/{channel_id}/messages", w(self.d_post)),
            web.patch(
                "/control/discord/channels/{channel_id}/messages/{message_id}", w(self.d_edit)
            ),
            web.delete(
                "/control/discord/channels/{channel_id}/messages/{message_id}", w(self.d_delete)
            ),
            web.post("/control/discord/dms", w(self.d_dm)),
            web.post("/control/discord/interactions", w(self.d_interaction)),
            web.get("/control/discord/interactions/{interaction_id}", w(self.d_get_interaction)),
            web.post("/control/discord/gateway/reconnect", w(self.d_reconnect)),
            web.post("/control/discord/gateway/invalidate", w(self.d_invalidate)),
            web.post("/control/telegram/chats", w(self.t_create_chat)),
            web.post("/control/telegram/users", w(self.t_create_user)),
            web.patch("/control/telegram/bot", w(self.t_patch_bot)),
            web.get("/control/telegram/chats/{chat_id}", w(self.t_chat)),
            web.patch("/control/telegram/chats/{chat_id}", w(self.t_patch_chat)),
            web.get("/control/telegram/chats/{chat_id}/messages", w(self.t_messages)),
            web.post("/control/telegram/chats/{chat_id}/messages", w(self.t_post)),
            web.patch("/control/telegram/chats/{chat_id}/messages/{message_id}", w(self.t_edit)),
            web.get("/control/telegram/updates", w(self.t_updates)),
        ]

    def _wrap(self, handler: Any) -> Any:
        async def wrapped(request: web.Request) -> web.Response:
            try:
                result = await handler(request)
            except ControlError as exc:
                return json_response({"error": exc.message, **exc.extra}, exc.status)
            except DiscordError as exc:
                return json_response(
                    {"error": exc.message, "code": exc.code, "errors": exc.errors}, exc.status
                )
            except TelegramError as exc:
                return json_response({"error": exc.description}, exc.status)
            except (markup.EntityParseError, markup.MessageTextError) as exc:
                return json_response({"error": exc.description}, 400)
            except Exception as exc:
                log.exception("sandbox bug in the control API")
                return json_response({"error": f"sandbox bug: {exc!r}"}, 500)
            if isinstance(result, web.Response):
                return result
            return json_response(result)

        return wrapped

    @staticmethod
    async def body(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ControlError(400, "the body is not valid JSON") from exc
        if not isinstance(data, dict):
            raise ControlError(400, "the body must be a JSON object")
        return data

    # --- general -----------------------------------------------------------------------

    async def index(self, request: web.Request) -> Any:
        return {
            "endpoints": sorted(
                {f"{r.method} {r.path}" for r in self.routes()}  # type: ignore[attr-defined,unused-ignore]
            )
        }

    async def info(self, request: web.Request) -> Any:
        return self.sb.info

    async def world(self, request: web.Request) -> Any:
        d = self.sb.discord_world
        t = self.sb.telegram_world
        return {
            "discord": {
                "guilds": [
                    {
                        "id": str(g.id),
                        "name": g.name,
                        "roles": [
                            {"id": str(r.id), "name": r.name, "permissions": str(r.permissions)}
                            for r in g.roles.values()
                        ],
                        "channels": [
                            self._d_channel_view(d.channels[cid]) for cid in g.channel_ids
                        ],
                        "threads": [
                            self._d_channel_view(c)
                            for c in d.channels.values()
                            if c.is_thread and c.guild_id == g.id
                        ],
                        "members": [
                            {
                                "id": str(m.user.id),
                                "username": m.user.username,
                                "bot": m.user.bot,
                                "roles": [str(r) for r in m.roles],
                            }
                            for m in g.members.values()
                        ],
                    }
                    for g in d.guilds.values()
                ],
                "bot": {"id": str(d.bot.id), "username": d.bot.username},
            },
            "telegram": {
                "bot": {"id": t.bot.id, "username": t.bot.username, "privacy_mode": t.privacy_mode},
                "chats": [self._t_chat_view(c) for c in t.chats.values()],
                "users": [
                    {"id": u.id, "first_name": u.first_name, "username": u.username}
                    for u in t.users.values()
                    if not u.is_bot
                ],
            },
        }

    async def reset(self, request: web.Request) -> Any:
        self.sb.reset()
        await self.sb.discord.gateway.resync()
        return {"ok": True}

    async def get_limits(self, request: web.Request) -> Any:
        return self.sb.core.limits.to_dict()

    async def set_limits(self, request: web.Request) -> Any:
        data = await self.body(request)
        try:
            self.sb.set_limits(self.sb.core.limits.updated(data))
        except ValueError as exc:
            raise ControlError(400, str(exc)) from exc
        return self.sb.core.limits.to_dict()

    async def list_faults(self, request: web.Request) -> Any:
        return [f.to_dict() for f in self.sb.core.faults.active]

    async def add_fault(self, request: web.Request) -> Any:
        data = await self.body(request)
        try:
            fault = self.sb.core.faults.add(data)
        except FaultError as exc:
            raise ControlError(400, str(exc)) from exc
        return json_response(fault.to_dict(), 201)

    async def clear_faults(self, request: web.Request) -> Any:
        self.sb.core.faults.reset()
        return {"ok": True}

    async def remove_fault(self, request: web.Request) -> Any:
        raw = request.match_info["fault_id"]
        if not raw.isdigit() or not self.sb.core.faults.remove(int(raw)):
            raise ControlError(404, "no such fault")
        return {"ok": True}

    async def requests(self, request: web.Request) -> Any:
        since = request.query.get("since", "0")
        if not since.isdigit():
            raise ControlError(400, "since must be a request sequence number")
        platform = request.query.get("platform")
        return self.sb.core.log.since(int(since), platform)

    async def stats(self, request: web.Request) -> Any:
        return {**self.sb.core.log.stats.to_dict(), "last_seq": self.sb.core.log.last_seq}

    # --- Discord -----------------------------------------------------------------------

    def _d_user(self, data: dict[str, Any]) -> ds.User:
        ref = data.get("user_id", data.get("username", data.get("user")))
        if ref is None:
            raise ControlError(400, "give user_id or username")
        user = self.sb.discord_world.find_user(ref)
        if user is None:
            raise ControlError(404, f"unknown Discord user {ref!r}")
        return user

    def _d_chan(self, request: web.Request) -> ds.Channel:
        raw = request.match_info["channel_id"]
        channel = self.sb.discord_world.channels.get(int(raw)) if raw.isdigit() else None
        if channel is None:
            raise ControlError(404, "unknown Discord channel")
        return channel

    def _d_channel_view(self, channel: ds.Channel) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(channel.id),
            "name": channel.name,
            "type": channel.type,
            "guild_id": str(channel.guild_id) if channel.guild_id else None,
            "topic": channel.topic,
            "rate_limit_per_user": channel.rate_limit_per_user,
            "announcement": channel.type == ds.GUILD_ANNOUNCEMENT,
            "private": bool(
                channel.guild_id
                and not self.sb.discord_world.can_see(channel, self._everyone_probe(channel))
            ),
            "message_count": sum(1 for m in channel.messages.values() if not m.is_system),
            "recipients": [str(r) for r in channel.recipient_ids] or None,
            "pinned_message_ids": [str(m.id) for m in channel.messages.values() if m.pinned],
        }
        if channel.is_thread:
            data.update(
                {
                    "thread": True,
                    "parent_id": str(channel.parent_id) if channel.parent_id else None,
                    "archived": channel.archived,
                    "locked": channel.locked,
                    "auto_archive_duration": channel.auto_archive_duration,
                }
            )
        return data

    def _everyone_probe(self, channel: ds.Channel) -> int:
        """A member with no roles, to tell whether a channel is private."""
        guild = self.sb.discord_world.guilds.get(channel.guild_id or 0)
        if guild is None:
            return 0
        for member in guild.members.values():
            if not member.roles and member.user.id != guild.owner_id:
                return member.user.id
        return 0

    def _d_message_view(self, message: ds.Message) -> dict[str, Any]:
        world = self.sb.discord_world
        ref = message.reference or {}
        return {
            "id": str(message.id),
            "type": message.type,
            "system": message.is_system,
            "text": message.content,
            "author": {
                "id": str(message.author.id),
                "username": message.author.username,
                "bot": message.author.bot,
            },
            "timestamp": iso(message.timestamp),
            "flags": message.flags,
            "silent": bool(message.flags & ds.SUPPRESS_NOTIFICATIONS),
            "suppress_embeds": bool(message.flags & ds.SUPPRESS_EMBEDS),
            "ephemeral": message.visible_to is not None,
            "visible_to": str(message.visible_to) if message.visible_to else None,
            "pinned": message.pinned,
            "pinned_at": iso(message.pinned_at) if message.pinned_at else None,
            "edited": message.edited_timestamp is not None,
            "edited_timestamp": iso(message.edited_timestamp) if message.edited_timestamp else None,
            "thread": str(message.thread_id) if message.thread_id else None,
            "crossposted": bool(message.flags & ds.CROSSPOSTED),
            "reply_to": ref.get("message_id"),
            "nonce": message.nonce,
            "mention_everyone": message.mention_everyone,
            "mentions": [
                {"id": str(uid), "username": world.users[uid].username}
                for uid in message.mention_ids
                if uid in world.users
            ],
            "mention_roles": [str(r) for r in message.mention_role_ids],
            "embeds": message.embeds,
            "interaction": message.interaction["legacy"] if message.interaction else None,
        }

    async def d_channel(self, request: web.Request) -> Any:
        return self._d_channel_view(self._d_chan(request))

    async def d_messages(self, request: web.Request) -> Any:
        channel = self._d_chan(request)
        include_system = request.query.get("include_system", "").lower() in ("1", "true")
        return [
            self._d_message_view(m)
            for m in channel.messages.values()
            if include_system or not m.is_system
        ]

    async def d_dm(self, request: web.Request) -> Any:
        data = await self.body(request)
        user = self._d_user(data)
        if user.bot:
            raise ControlError(400, "bots do not open DMs here")
        channel = self.sb.discord_world.dm_channel(user)
        return await self._d_member_post(channel, user, data)

    async def d_post(self, request: web.Request) -> Any:
        channel = self._d_chan(request)
        data = await self.body(request)
        user = self._d_user(data)
        return await self._d_member_post(channel, user, data)

    async def _d_member_post(self, channel: ds.Channel, user: ds.User, data: dict[str, Any]) -> Any:
        content = data.get("content")
        if not isinstance(content, str) or not content.strip() or len(content) > 2000:
            raise ControlError(400, "content must be 1-2000 characters")
        world = self.sb.discord_world
        api = self.sb.discord
        perms = world.permissions(channel, user.id)
        if not perms & ds.VIEW_CHANNEL:
            raise ControlError(403, f"{user.username} cannot see #{channel.name}", code=50001)
        needed = ds.SEND_MESSAGES_IN_THREADS if channel.is_thread else ds.SEND_MESSAGES
        if not perms & needed:
            raise ControlError(403, f"{user.username} cannot post in #{channel.name}", code=50013)
        if channel.is_thread and channel.locked and not perms & ds.MANAGE_THREADS:
            raise ControlError(403, "this thread is locked", code=160005)
        bypass = perms & (ds.MANAGE_MESSAGES | ds.MANAGE_CHANNELS)
        now = time.monotonic()
        if channel.rate_limit_per_user and not bypass:
            last = channel.last_post.get(user.id)
            if last is not None and now - last < channel.rate_limit_per_user:
                wait = channel.rate_limit_per_user - (now - last)
                raise ControlError(429, "slowmode", code=20016, retry_after=round(wait, 3))
        reference = None
        if data.get("reply_to") is not None:
            target = str(data["reply_to"])
            if not target.isdigit() or int(target) not in channel.messages:
                raise ControlError(404, "reply_to: unknown message in this channel")
            reference = {"type": 0, "channel_id": str(channel.id), "message_id": target}
            if channel.guild_id:
                reference["guild_id"] = str(channel.guild_id)
        if channel.is_thread and channel.archived:
            channel.archived = False
            channel.archive_timestamp = time.time()
        channel.last_post[user.id] = now
        message = api.messages.new_message(channel, user, content, reference=reference)
        await api.gateway.announce(message)
        return json_response(self._d_message_view(message), 201)

    def _d_message(self, channel: ds.Channel, request: web.Request) -> ds.Message:
        raw = request.match_info["message_id"]
        message = channel.messages.get(int(raw)) if raw.isdigit() else None
        if message is None:
            raise ControlError(404, "unknown message in this channel")
        return message

    async def d_edit(self, request: web.Request) -> Any:
        """The author edits their message: content and mentions change, MESSAGE_UPDATE."""
        channel = self._d_chan(request)
        message = self._d_message(channel, request)
        data = await self.body(request)
        content = data.get("content")
        if message.author.bot:
            raise ControlError(403, "bot messages are edited through the Discord API")
        if not isinstance(content, str) or not content.strip() or len(content) > 2000:
            raise ControlError(400, "content must be 1-2000 characters")
        await self.sb.discord.messages.apply_edit(
            message,
            channel,
            {"content": content},
            {"content": content, "embeds": [], "components": [], "flags": None},
        )
        return self._d_message_view(message)

    async def d_delete(self, request: web.Request) -> Any:
        """A member or a moderator deletes a message: MESSAGE_DELETE."""
        channel = self._d_chan(request)
        message = self._d_message(channel, request)
        await self.sb.discord.messages.remove_message(message, channel)
        return {"ok": True}

    async def d_interaction(self, request: web.Request) -> Any:
        data = await self.body(request)
        user = self._d_user(data)
        world = self.sb.discord_world
        raw_channel = str(data.get("channel_id", ""))
        channel = world.channels.get(int(raw_channel)) if raw_channel.isdigit() else None
        if channel is None:
            raise ControlError(404, "unknown Discord channel")
        name = data.get("command")
        options = data.get("options") or {}
        if not isinstance(name, str) or not isinstance(options, dict):
            raise ControlError(400, "command must be a string and options an object")
        if not world.permissions(channel, user.id) & ds.USE_APPLICATION_COMMANDS:
            raise ControlError(403, f"{user.username} cannot use commands in #{channel.name}")
        candidates = [
            c
            for c in world.commands.values()
            if c.name == name and c.type == 1 and c.guild_id in (channel.guild_id, None)
        ]
        candidates.sort(key=lambda c: c.guild_id is None)
        if not candidates:
            raise ControlError(404, f"the bot has not registered a /{name} command")
        interaction = await self.sb.discord.interactions.run_command(
            user, channel, candidates[0], options
        )
        return json_response(
            {"interaction_id": str(interaction.id), "token": interaction.token}, 201
        )

    async def d_get_interaction(self, request: web.Request) -> Any:
        raw = request.match_info["interaction_id"]
        interaction = self.sb.discord_world.interactions.get(int(raw)) if raw.isdigit() else None
        if interaction is None:
            raise ControlError(404, "unknown interaction")
        result = interaction.to_json()
        message_id = interaction.response_message_id
        message = self.sb.discord_world.messages.get(message_id or 0)
        result["response"] = self._d_message_view(message) if message else None
        result["followups"] = [
            self._d_message_view(self.sb.discord_world.messages[m])
            for m in interaction.followup_ids
            if m in self.sb.discord_world.messages
        ]
        return result

    async def d_reconnect(self, request: web.Request) -> Any:
        return {"sessions": await self.sb.discord.gateway.send_op(7)}

    async def d_invalidate(self, request: web.Request) -> Any:
        return {"sessions": await self.sb.discord.gateway.send_op(9, False)}

    async def d_create_guild(self, request: web.Request) -> Any:
        data = await self.body(request)
        name = data.get("name")
        if not isinstance(name, str) or not 2 <= len(name) <= 100:
            raise ControlError(400, "name must be 2-100 characters")
        world = self.sb.discord_world
        guild = ds.Guild(world.ids.next(), name, world.owner.id)
        guild.roles[guild.id] = ds.Role(guild.id, "@everyone", ds.EVERYONE_DEFAULT)
        bot_role = ds.Role(
            world.ids.next(), world.bot.username, ds.BOT_ROLE_DEFAULT, 1, managed=True
        )
        guild.roles[bot_role.id] = bot_role
        guild.members[world.bot.id] = ds.Member(world.bot, [bot_role.id])
        guild.members[world.owner.id] = ds.Member(world.owner)
        world.guilds[guild.id] = guild
        await self.sb.discord.gateway.dispatch(
            "GUILD_CREATE", world.guild_create_json(guild), channel=None
        )
        return json_response(
            {"id": str(guild.id), "name": guild.name, "bot_role_id": str(bot_role.id)}, 201
        )

    async def d_create_channel(self, request: web.Request) -> Any:
        data = await self.body(request)
        world = self.sb.discord_world
        raw = request.match_info["guild_id"]
        guild = world.guilds.get(int(raw)) if raw.isdigit() else None
        if guild is None:
            raise ControlError(404, "unknown guild")
        name = data.get("name")
        kind = data.get("type", ds.GUILD_TEXT)
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise ControlError(400, "name must be 1-100 characters")
        if kind not in (ds.GUILD_TEXT, ds.GUILD_ANNOUNCEMENT, ds.GUILD_CATEGORY):
            raise ControlError(400, "type must be 0 (text), 4 (category) or 5 (announcement)")
        # "private": members cannot see it; "read_only": members cannot post. The bot keeps
        # access through an overwrite for its role unless "bot_access" is false.
        deny = (ds.VIEW_CHANNEL if data.get("private") else 0) | (
            ds.SEND_MESSAGES if data.get("read_only") else 0
        )
        overwrites = [ds.Overwrite(guild.id, 0, deny=deny)] if deny else []
        if deny and data.get("bot_access", True):
            for role in guild.roles.values():
                if role.managed:
                    overwrites.append(ds.Overwrite(role.id, 0, allow=deny))
        channel = world.add_channel(
            ds.Channel(
                world.ids.next(),
                guild.id,
                kind,
                name,
                position=len(guild.channel_ids),
                topic=data.get("topic") if isinstance(data.get("topic"), str) else None,
                overwrites=overwrites,
            )
        )
        await self.sb.discord.gateway.dispatch(
            "CHANNEL_CREATE", world.channel_json(channel), channel=channel
        )
        return json_response(self._d_channel_view(channel), 201)

    async def d_patch_role(self, request: web.Request) -> Any:
        data = await self.body(request)
        world = self.sb.discord_world
        guild_raw = request.match_info["guild_id"]
        guild = world.guilds.get(int(guild_raw)) if guild_raw.isdigit() else None
        role_raw = request.match_info["role_id"]
        role = guild.roles.get(int(role_raw)) if guild and role_raw.isdigit() else None
        if guild is None or role is None:
            raise ControlError(404, "unknown guild or role")
        if "permissions" in data:
            try:
                role.permissions = int(data["permissions"])
            except (TypeError, ValueError) as exc:
                raise ControlError(400, "permissions must be an integer") from exc
        if "mentionable" in data:
            role.mentionable = _bool(data["mentionable"], "mentionable")
        return role.to_json()

    async def d_create_user(self, request: web.Request) -> Any:
        data = await self.body(request)
        world = self.sb.discord_world
        username = data.get("username")
        if not isinstance(username, str) or not 2 <= len(username) <= 32:
            raise ControlError(400, "username must be 2-32 characters")
        if world.find_user(username) is not None:
            raise ControlError(409, "username taken")
        global_name = data.get("global_name")
        if global_name is not None and not isinstance(global_name, str):
            raise ControlError(400, "global_name must be a string")
        user = world.add_user(username, global_name)
        guild_ids = data.get("guild_ids") or [str(world.default_guild_id)]
        role_refs = data.get("roles") or []
        for raw in guild_ids:
            guild = world.guilds.get(int(raw)) if str(raw).isdigit() else None
            if guild is None:
                raise ControlError(404, f"unknown guild {raw}")
            roles = [
                r.id
                for r in guild.roles.values()
                if str(r.id) in map(str, role_refs) or r.name in role_refs
            ]
            guild.members[user.id] = ds.Member(user, roles)
        return json_response(user.to_json(), 201)

    async def d_patch_bot(self, request: web.Request) -> Any:
        data = await self.body(request)
        world = self.sb.discord_world
        if "message_content_intent" in data:
            world.message_content_allowed = _bool(
                data["message_content_intent"], "message_content_intent"
            )
        if "token_revoked" in data:
            world.token_revoked = _bool(data["token_revoked"], "token_revoked")
        return {
            "message_content_intent": world.message_content_allowed,
            "token_revoked": world.token_revoked,
        }

    # --- Telegram ----------------------------------------------------------------------

    def _t_chat(self, request: web.Request) -> ts.TgChat:
        world = self.sb.telegram_world
        raw = request.match_info["chat_id"]
        chat = world.find_chat(raw)
        if chat is None and raw.isdigit():
            user = world.users.get(int(raw))
            if user is not None and not user.is_bot:
                return world.private_chat(user)  # a member opening a chat with the bot
        if chat is None:
            raise ControlError(404, "unknown Telegram chat")
        return chat

    def _t_chat_view(self, chat: ts.TgChat) -> dict[str, Any]:
        return {
            **chat.to_json(),
            "bot_member": chat.bot_member,
            "bot_admin": chat.bot_admin,
            "bot_rights": chat.bot_rights,
            "permissions": chat.permissions if chat.is_group else None,
            "message_count": sum(1 for m in chat.messages.values() if m.pinned_message_id is None),
            "pinned_message_ids": [m.message_id for m in chat.messages.values() if m.pinned],
        }

    def _t_message_view(self, chat: ts.TgChat, message: ts.TgMessage) -> dict[str, Any]:
        sender = message.sender
        mentions = [
            markup.entity_text(message.text, e)
            if e["type"] == "mention"
            else "@" + str(e["user"].get("username") or e["user"]["first_name"])
            for e in message.entities
            if e["type"] in ("mention", "text_mention")
        ]
        return {
            "id": message.message_id,
            "text": message.text,
            "author": None
            if sender is None
            else {
                "id": sender.id,
                "username": sender.username,
                "first_name": sender.first_name,
                "bot": sender.is_bot,
            },
            "sender_chat": chat.to_json() if chat.type == "channel" else None,
            "date": message.date,
            "service": "pinned_message" if message.pinned_message_id is not None else None,
            "pinned_message_id": message.pinned_message_id,
            "silent": message.silent,
            "flags": {"silent": message.silent, "protected": message.protected},
            "protected": message.protected,
            "pinned": message.pinned,
            "edited": message.edit_date is not None,
            "edit_date": message.edit_date,
            "reply_to": message.reply_to,
            "entities": message.entities,
            "mentions": mentions,
            "mention_everyone": False,
            "link_preview_options": message.link_preview_options,
            "reply_markup": message.reply_markup,
        }

    async def t_chat(self, request: web.Request) -> Any:
        return self._t_chat_view(self._t_chat(request))

    async def t_messages(self, request: web.Request) -> Any:
        chat = self._t_chat(request)
        include_system = request.query.get("include_system", "").lower() in ("1", "true")
        return [
            self._t_message_view(chat, m)
            for m in chat.messages.values()
            if include_system or m.pinned_message_id is None
        ]

    async def t_post(self, request: web.Request) -> Any:
        chat = self._t_chat(request)
        data = await self.body(request)
        world = self.sb.telegram_world
        ref = data.get("user", data.get("user_id", data.get("username")))
        user = world.find_user(ref) if ref is not None else None
        if user is None:
            raise ControlError(404 if ref is not None else 400, f"unknown Telegram user {ref!r}")
        text = data.get("text")
        if not isinstance(text, str):
            raise ControlError(400, "text must be a string")
        if chat.type == "channel":
            raise ControlError(403, "only administrators post in a channel")
        if chat.type == "private" and chat.id != user.id:
            raise ControlError(403, "only that user writes in a private chat with the bot")
        if chat.is_group and not chat.permissions.get("can_send_messages", True):
            raise ControlError(403, "members may not send messages in this chat")
        reply_to = data.get("reply_to")
        if reply_to is not None and (isinstance(reply_to, bool) or not isinstance(reply_to, int)):
            raise ControlError(400, "reply_to must be a message id")
        parse_mode = data.get("parse_mode")
        message, delivered = await self.sb.telegram.post_as_member(
            chat,
            user,
            text,
            reply_to=reply_to,
            parse_mode=parse_mode if isinstance(parse_mode, str) else None,
        )
        return json_response(
            {**self._t_message_view(chat, message), "delivered_to_bot": delivered}, 201
        )

    async def t_edit(self, request: web.Request) -> Any:
        """The author edits their message; the bot gets ``edited_message`` if it saw it."""
        chat = self._t_chat(request)
        raw = request.match_info["message_id"]
        message = chat.messages.get(int(raw)) if raw.isdigit() else None
        if message is None:
            raise ControlError(404, "unknown message in this chat")
        if message.sender is None or message.sender.is_bot:
            raise ControlError(403, "bot messages are edited through the Bot API")
        data = await self.body(request)
        text = data.get("text")
        if not isinstance(text, str):
            raise ControlError(400, "text must be a string")
        delivered = await self.sb.telegram.edit_as_member(chat, message, text)
        return {**self._t_message_view(chat, message), "delivered_to_bot": delivered}

    async def t_create_chat(self, request: web.Request) -> Any:
        data = await self.body(request)
        world = self.sb.telegram_world
        kind = data.get("type")
        title = data.get("title")
        if kind not in ("group", "supergroup", "channel"):
            raise ControlError(400, "type must be group, supergroup or channel")
        if not isinstance(title, str) or not 1 <= len(title) <= 128:
            raise ControlError(400, "title must be 1-128 characters")
        admin = data.get("bot_admin", kind == "channel")
        chat = world.add_chat(
            ts.TgChat(
                world.new_chat_id(kind),
                kind,
                title=title,
                username=data.get("username") if isinstance(data.get("username"), str) else None,
                bot_member=bool(data.get("bot_member", True)),
                bot_admin=bool(admin),
                bot_rights=dict(ts.FULL_RIGHTS) if admin else {},
                members={u.id for u in world.users.values() if not u.is_bot},
            )
        )
        return json_response(self._t_chat_view(chat), 201)

    async def t_create_user(self, request: web.Request) -> Any:
        data = await self.body(request)
        world = self.sb.telegram_world
        first = data.get("first_name")
        username = data.get("username")
        if not isinstance(first, str) or not 1 <= len(first) <= 64:
            raise ControlError(400, "first_name must be 1-64 characters")
        if username is not None and (not isinstance(username, str) or not 5 <= len(username) <= 32):
            raise ControlError(400, "username must be 5-32 characters")
        if username is not None and world.find_user(username) is not None:
            raise ControlError(409, "username taken")
        user = world.add_user(first, username)
        return json_response(user.to_json(), 201)

    async def t_patch_bot(self, request: web.Request) -> Any:
        data = await self.body(request)
        world = self.sb.telegram_world
        if "privacy_mode" in data:
            world.privacy_mode = _bool(data["privacy_mode"], "privacy_mode")
        if "token_revoked" in data:
            world.token_revoked = _bool(data["token_revoked"], "token_revoked")
        return {"privacy_mode": world.privacy_mode, "token_revoked": world.token_revoked}

    async def t_patch_chat(self, request: web.Request) -> Any:
        chat = self._t_chat(request)
        data = await self.body(request)
        if "bot_member" in data:
            chat.bot_member = _bool(data["bot_member"], "bot_member")
        if "bot_admin" in data:
            chat.bot_admin = _bool(data["bot_admin"], "bot_admin")
            chat.bot_rights = dict(ts.FULL_RIGHTS) if chat.bot_admin else {}
        rights = data.get("bot_rights")
        if rights is not None:
            if not isinstance(rights, dict):
                raise ControlError(400, "bot_rights must be an object")
            for key, value in rights.items():
                if key not in ts.ADMIN_RIGHTS:
                    raise ControlError(400, f"unknown right {key}")
                chat.bot_rights[key] = _bool(value, key)
        permissions = data.get("permissions")
        if permissions is not None:
            if not isinstance(permissions, dict):
                raise ControlError(400, "permissions must be an object")
            for key, value in permissions.items():
                if key not in ts.MEMBER_PERMISSIONS:
                    raise ControlError(400, f"unknown permission {key}")
                chat.permissions[key] = _bool(value, key)
        return self._t_chat_view(chat)

    async def t_updates(self, request: web.Request) -> Any:
        return list(self.sb.telegram_world.queue.updates)
