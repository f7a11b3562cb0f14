"""The Discord world: users, guilds, roles, channels, threads, messages and permissions.

Objects serialise to the shapes of Discord API v10 (``to_json``); ids are snowflakes, and the
default world's ids are fixed so the demo and the docs can name them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .common import WORLD_EPOCH_MS, SnowflakeFactory, iso, snowflake

# Permission bits (topics/permissions).
CREATE_INSTANT_INVITE = 1 << 0
ADMINISTRATOR = 1 << 3
MANAGE_CHANNELS = 1 << 4
MANAGE_GUILD = 1 << 5
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
MENTION_EVERYONE = 1 << 17
USE_EXTERNAL_EMOJIS = 1 << 18
MANAGE_ROLES = 1 << 28
USE_APPLICATION_COMMANDS = 1 << 31
MANAGE_THREADS = 1 << 34
CREATE_PUBLIC_THREADS = 1 << 35
CREATE_PRIVATE_THREADS = 1 << 36
SEND_MESSAGES_IN_THREADS = 1 << 38
PIN_MESSAGES = 1 << 51
ALL_PERMISSIONS = (1 << 53) - 1

EVERYONE_DEFAULT = (
    CREATE_INSTANT_INVITE
    | ADD_REACTIONS
    | VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | USE_EXTERNAL_EMOJIS
    | USE_APPLICATION_COMMANDS
    | CREATE_PUBLIC_THREADS
    | SEND_MESSAGES_IN_THREADS
)
BOT_ROLE_DEFAULT = (
    VIEW_CHANNEL
    | SEND_MESSAGES
    | MANAGE_MESSAGES
    | EMBED_LINKS
    | READ_MESSAGE_HISTORY
    | MENTION_EVERYONE
    | MANAGE_THREADS
    | CREATE_PUBLIC_THREADS
    | SEND_MESSAGES_IN_THREADS
    | MANAGE_CHANNELS
    | PIN_MESSAGES
)

# Channel types.
GUILD_TEXT = 0
DM = 1
GUILD_CATEGORY = 4
GUILD_ANNOUNCEMENT = 5
ANNOUNCEMENT_THREAD = 10
PUBLIC_THREAD = 11
PRIVATE_THREAD = 12
THREAD_TYPES = (ANNOUNCEMENT_THREAD, PUBLIC_THREAD, PRIVATE_THREAD)
GUILD_CHANNEL_TYPES = (0, 2, 4, 5, 13, 14, 15)

# Message flags.
CROSSPOSTED = 1 << 0
SUPPRESS_EMBEDS = 1 << 2
HAS_THREAD = 1 << 5
EPHEMERAL = 1 << 6
LOADING = 1 << 7
SUPPRESS_NOTIFICATIONS = 1 << 12
IS_VOICE_MESSAGE = 1 << 13
IS_COMPONENTS_V2 = 1 << 15
CREATABLE_FLAGS = SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | IS_VOICE_MESSAGE | IS_COMPONENTS_V2
EDITABLE_FLAGS = SUPPRESS_EMBEDS | IS_COMPONENTS_V2

# Gateway intents.
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
INTENT_GUILD_PRESENCES = 1 << 8
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT

# Fixed credentials of the demo bot: realistic shapes, no secrets.
BOT_ID = 1_328_000_000_000_000_001
BOT_TOKEN = "MTMyODAwMDAwMDAwMDAwMDAwMQ.GsBx7Q.c2FuZGJveC1kZW1vLXRva2VuLW5vdC1hLXNlY3JldA"  # noqa: S105 - a fixed demo token
OWNER_ID = 1_328_000_000_000_000_002


def _world_id(sequence: int) -> int:
    return snowflake(WORLD_EPOCH_MS, 0, sequence)


@dataclass
class User:
    id: int
    username: str
    global_name: str | None = None
    bot: bool = False

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "username": self.username,
            "avatar": None,
            "discriminator": "0",
            "public_flags": 0,
            "flags": 0,
            "global_name": self.global_name,
            "primary_guild": None,
            "avatar_decoration_data": None,
            "collectibles": None,
            "banner": None,
            "accent_color": None,
        }
        if self.bot:
            data["bot"] = True
        return data


@dataclass
class Role:
    id: int
    name: str
    permissions: int
    position: int = 0
    mentionable: bool = False
    managed: bool = False
    color: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "description": None,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": self.color,
            "colors": {
                "primary_color": self.color,
                "secondary_color": None,
                "tertiary_color": None,
            },
            "hoist": False,
            "managed": self.managed,
            "mentionable": self.mentionable,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }


@dataclass
class Overwrite:
    id: int
    type: int  # 0 role, 1 member
    allow: int = 0
    deny: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "type": self.type,
            "allow": str(self.allow),
            "deny": str(self.deny),
        }


@dataclass
class Member:
    user: User
    roles: list[int] = field(default_factory=list)
    joined_at: float = WORLD_EPOCH_MS / 1000

    def to_json(self, *, with_user: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "roles": [str(r) for r in self.roles],
            "joined_at": iso(self.joined_at),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "nick": None,
            "avatar": None,
            "banner": None,
            "premium_since": None,
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = self.user.to_json()
        return data


@dataclass
class Message:
    id: int
    channel_id: int
    guild_id: int | None
    author: User
    content: str
    timestamp: float
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    flags: int = 0
    tts: bool = False
    type: int = 0
    nonce: int | str | None = None
    mention_ids: tuple[int, ...] = ()
    mention_role_ids: tuple[int, ...] = ()
    mention_everyone: bool = False
    pinned: bool = False
    pinned_at: float | None = None
    edited_timestamp: float | None = None
    thread_id: int | None = None
    reference: dict[str, Any] | None = None
    interaction: dict[str, Any] | None = None
    application_id: int | None = None
    webhook_id: int | None = None
    position: int | None = None
    visible_to: int | None = None  # ephemeral: only this user sees it
    deleted: bool = False

    @property
    def is_system(self) -> bool:
        return self.type not in (0, 19, 20, 23)


@dataclass
class Channel:
    id: int
    guild_id: int | None
    type: int
    name: str
    position: int = 0
    topic: str | None = None
    nsfw: bool = False
    rate_limit_per_user: int = 0
    parent_id: int | None = None
    overwrites: list[Overwrite] = field(default_factory=list)
    messages: dict[int, Message] = field(default_factory=dict)
    last_message_id: int | None = None
    last_pin_timestamp: float | None = None
    default_auto_archive_duration: int = 1440
    # Threads only:
    owner_id: int | None = None
    archived: bool = False
    locked: bool = False
    auto_archive_duration: int = 1440
    archive_timestamp: float | None = None
    create_timestamp: float | None = None
    message_count: int = 0
    total_message_sent: int = 0
    member_ids: set[int] = field(default_factory=set)
    recipient_ids: list[int] = field(default_factory=list)  # DMs only
    # Slowmode bookkeeping: user id -> monotonic time of the last message.
    last_post: dict[int, float] = field(default_factory=dict)

    @property
    def is_thread(self) -> bool:
        return self.type in THREAD_TYPES


@dataclass
class Guild:
    id: int
    name: str
    owner_id: int
    roles: dict[int, Role] = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)
    channel_ids: list[int] = field(default_factory=list)

    @property
    def everyone_role(self) -> Role:
        return self.roles[self.id]


@dataclass
class Command:
    id: int
    application_id: int
    name: str
    description: str
    type: int = 1
    options: list[dict[str, Any]] = field(default_factory=list)
    guild_id: int | None = None
    version: int = 0
    default_member_permissions: str | None = None
    contexts: list[int] | None = None
    integration_types: list[int] = field(default_factory=lambda: [0])
    nsfw: bool = False

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "application_id": str(self.application_id),
            "version": str(self.version),
            "default_member_permissions": self.default_member_permissions,
            "type": self.type,
            "name": self.name,
            "name_localizations": None,
            "description": self.description,
            "description_localizations": None,
            "options": self.options,
            "contexts": self.contexts,
            "integration_types": self.integration_types,
            "nsfw": self.nsfw,
        }
        if self.guild_id is not None:
            data["guild_id"] = str(self.guild_id)
        else:
            data["dm_permission"] = True
        return data


@dataclass
class Interaction:
    id: int
    token: str
    channel_id: int
    guild_id: int | None
    user: User
    command: Command
    options: list[dict[str, Any]]
    created: float
    responded: bool = False
    response_type: int | None = None
    response_message_id: int | None = None
    ephemeral: bool = False
    followup_ids: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "guild_id": str(self.guild_id) if self.guild_id else None,
            "user": self.user.to_json(),
            "command": self.command.name,
            "responded": self.responded,
            "response_type": self.response_type,
            "response_message_id": str(self.response_message_id)
            if self.response_message_id
            else None,
            "ephemeral": self.ephemeral,
            "followup_message_ids": [str(x) for x in self.followup_ids],
        }


class DiscordWorld:
    """All Discord state; ``reset()`` rebuilds the default world with the same ids."""

    def __init__(self) -> None:
        self.ids = SnowflakeFactory(worker=1)
        self.reset()

    def reset(self) -> None:
        self.users: dict[int, User] = {}
        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, Channel] = {}
        self.messages: dict[int, Message] = {}
        self.commands: dict[int, Command] = {}
        self.interactions: dict[int, Interaction] = {}
        self.nonces: dict[tuple[int, int, str], tuple[int, float]] = {}
        self.message_content_allowed = True
        # A token reset in the developer portal: the old token is refused (401) everywhere.
        self.token_revoked = False
        self.bot = User(BOT_ID, "sandbox-comms", "Sandbox Comms", bot=True)
        self.owner = User(OWNER_ID, "sandbox-owner", "Sandbox Owner")
        self.users[self.bot.id] = self.bot
        self.users[self.owner.id] = self.owner
        self.application_id = BOT_ID
        self._build_default_world()

    # --- the default world -------------------------------------------------------------

    def _build_default_world(self) -> None:
        guild = Guild(_world_id(1), "Sandbox Protocol", OWNER_ID)
        self.guilds[guild.id] = guild
        self.default_guild_id = guild.id
        guild.roles[guild.id] = Role(guild.id, "@everyone", EVERYONE_DEFAULT, 0, mentionable=False)
        bot_role = Role(_world_id(2), "Sandbox Comms", BOT_ROLE_DEFAULT, 3, managed=True)
        responders = Role(_world_id(3), "responders", EVERYONE_DEFAULT, 2, mentionable=True)
        moderators = Role(
            _world_id(4), "moderators", EVERYONE_DEFAULT | MANAGE_MESSAGES | MENTION_EVERYONE, 1
        )
        for role in (bot_role, responders, moderators):
            guild.roles[role.id] = role
        self.default_roles = {
            "everyone": guild.id,
            "bot": bot_role.id,
            "responders": responders.id,
            "moderators": moderators.id,
        }
        guild.members[self.bot.id] = Member(self.bot, [bot_role.id])
        guild.members[self.owner.id] = Member(self.owner, [moderators.id])
        self.default_users: dict[str, int] = {}
        for seq, (name, display, roles) in enumerate(
            [
                ("alice", "Alice", []),
                ("bob", "Bob", []),
                ("carol", "Carol", []),
                ("dave", "Dave (responder)", [responders.id]),
            ],
            start=20,
        ):
            user = User(_world_id(seq), name, display)
            self.users[user.id] = user
            guild.members[user.id] = Member(user, list(roles))
            self.default_users[name] = user.id
        # Another application's bot in the guild (as most community servers have): its
        # messages, mentions of our bot included, are not community reports.
        other_bot = User(_world_id(24), "status-bot", "Status Bot", bot=True)
        self.users[other_bot.id] = other_bot
        guild.members[other_bot.id] = Member(other_bot, [])
        announcements = Channel(
            _world_id(10),
            guild.id,
            GUILD_ANNOUNCEMENT,
            "announcements",
            position=0,
            topic="Official incident announcements",
            overwrites=[
                Overwrite(guild.id, 0, deny=SEND_MESSAGES | CREATE_PUBLIC_THREADS),
                Overwrite(bot_role.id, 0, allow=SEND_MESSAGES | CREATE_PUBLIC_THREADS),
                Overwrite(moderators.id, 0, allow=SEND_MESSAGES),
            ],
        )
        general = Channel(_world_id(11), guild.id, GUILD_TEXT, "general", position=1)
        private = Channel(
            _world_id(12),
            guild.id,
            GUILD_TEXT,
            "responders",
            position=2,
            topic="Incident responders only",
            overwrites=[
                Overwrite(guild.id, 0, deny=VIEW_CHANNEL),
                Overwrite(responders.id, 0, allow=VIEW_CHANNEL | SEND_MESSAGES),
                Overwrite(bot_role.id, 0, allow=VIEW_CHANNEL | SEND_MESSAGES),
            ],
        )
        for channel in (announcements, general, private):
            self.add_channel(channel)
        self.default_channels = {
            "announcements": announcements.id,
            "general": general.id,
            "responders": private.id,
        }

    # --- mutation helpers --------------------------------------------------------------

    def add_channel(self, channel: Channel) -> Channel:
        self.channels[channel.id] = channel
        if channel.guild_id is not None and not channel.is_thread:
            self.guilds[channel.guild_id].channel_ids.append(channel.id)
        return channel

    def add_user(self, username: str, global_name: str | None = None) -> User:
        user = User(self.ids.next(), username, global_name)
        self.users[user.id] = user
        return user

    def find_user(self, ref: Any) -> User | None:
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            return self.users.get(int(ref))
        if isinstance(ref, str):
            for user in self.users.values():
                if user.username == ref:
                    return user
        return None

    def add_message(self, message: Message) -> None:
        channel = self.channels[message.channel_id]
        channel.messages[message.id] = message
        self.messages[message.id] = message
        channel.last_message_id = message.id
        if channel.is_thread:
            channel.message_count += 1
            channel.total_message_sent += 1
            message.position = channel.total_message_sent

    def delete_message(self, message: Message) -> None:
        message.deleted = True
        channel = self.channels[message.channel_id]
        channel.messages.pop(message.id, None)
        self.messages.pop(message.id, None)
        if channel.is_thread:
            channel.message_count = max(0, channel.message_count - 1)

    # --- permissions -------------------------------------------------------------------

    def base_permissions(self, guild: Guild, user_id: int) -> int:
        if user_id == guild.owner_id:
            return ALL_PERMISSIONS
        member = guild.members.get(user_id)
        if member is None:
            return 0
        perms = guild.everyone_role.permissions
        for role_id in member.roles:
            role = guild.roles.get(role_id)
            if role is not None:
                perms |= role.permissions
        if perms & ADMINISTRATOR:
            return ALL_PERMISSIONS
        return perms

    def dm_channel(self, user: User) -> Channel:
        """The DM channel between the bot and ``user``, opened on first use."""
        for channel in self.channels.values():
            if channel.type == DM and user.id in channel.recipient_ids:
                return channel
        channel = Channel(self.ids.next(), None, DM, "", recipient_ids=[user.id])
        return self.add_channel(channel)

    def permissions(self, channel: Channel, user_id: int) -> int:
        """Discord's algorithm: role permissions, then @everyone, role and member overwrites."""
        if channel.guild_id is None:
            if user_id != BOT_ID and user_id not in channel.recipient_ids:
                return 0
            # Slash commands work in the bot's DMs (context BOT_DM) as in servers.
            return (
                VIEW_CHANNEL
                | SEND_MESSAGES
                | READ_MESSAGE_HISTORY
                | EMBED_LINKS
                | USE_APPLICATION_COMMANDS
            )
        guild = self.guilds[channel.guild_id]
        source = channel
        if channel.is_thread and channel.parent_id in self.channels:
            source = self.channels[channel.parent_id]
        base = self.base_permissions(guild, user_id)
        if base == ALL_PERMISSIONS:
            return ALL_PERMISSIONS
        member = guild.members.get(user_id)
        if member is None:
            return 0
        perms = base
        overwrites = {(o.type, o.id): o for o in source.overwrites}
        everyone = overwrites.get((0, guild.id))
        if everyone is not None:
            perms = (perms & ~everyone.deny) | everyone.allow
        allow = deny = 0
        for role_id in member.roles:
            overwrite = overwrites.get((0, role_id))
            if overwrite is not None:
                allow |= overwrite.allow
                deny |= overwrite.deny
        perms = (perms & ~deny) | allow
        own = overwrites.get((1, user_id))
        if own is not None:
            perms = (perms & ~own.deny) | own.allow
        if not perms & VIEW_CHANNEL:
            return 0
        return perms

    def can_see(self, channel: Channel, user_id: int) -> bool:
        return bool(self.permissions(channel, user_id) & VIEW_CHANNEL)

    # --- serialisation -----------------------------------------------------------------

    def channel_json(self, channel: Channel) -> dict[str, Any]:
        if channel.type == DM:
            return {
                "id": str(channel.id),
                "type": DM,
                "last_message_id": str(channel.last_message_id)
                if channel.last_message_id
                else None,
                "flags": 0,
                "recipients": [
                    self.users[uid].to_json() for uid in channel.recipient_ids if uid in self.users
                ],
            }
        data: dict[str, Any] = {
            "id": str(channel.id),
            "type": channel.type,
            "last_message_id": str(channel.last_message_id) if channel.last_message_id else None,
            "flags": 0,
            "name": channel.name,
            "rate_limit_per_user": channel.rate_limit_per_user,
        }
        if channel.guild_id is not None:
            data["guild_id"] = str(channel.guild_id)
        data["last_pin_timestamp"] = (
            iso(channel.last_pin_timestamp) if channel.last_pin_timestamp else None
        )
        if channel.is_thread:
            data.update(
                {
                    "parent_id": str(channel.parent_id) if channel.parent_id else None,
                    "owner_id": str(channel.owner_id),
                    "thread_metadata": {
                        "archived": channel.archived,
                        "archive_timestamp": iso(channel.archive_timestamp or time.time()),
                        "auto_archive_duration": channel.auto_archive_duration,
                        "locked": channel.locked,
                        "create_timestamp": iso(channel.create_timestamp or time.time()),
                    },
                    "message_count": channel.message_count,
                    "member_count": len(channel.member_ids),
                    "total_message_sent": channel.total_message_sent,
                }
            )
            if channel.type == PRIVATE_THREAD:
                data["thread_metadata"]["invitable"] = True
        else:
            data.update(
                {
                    "parent_id": str(channel.parent_id) if channel.parent_id else None,
                    "position": channel.position,
                    "permission_overwrites": [o.to_json() for o in channel.overwrites],
                    "topic": channel.topic,
                    "nsfw": channel.nsfw,
                    "default_auto_archive_duration": channel.default_auto_archive_duration,
                }
            )
        return data

    def message_json(self, message: Message, *, include_nonce: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": message.type,
            "content": message.content,
            "mentions": [
                self.users[uid].to_json() for uid in message.mention_ids if uid in self.users
            ],
            "mention_roles": [str(r) for r in message.mention_role_ids],
            "attachments": [],
            "embeds": message.embeds,
            "timestamp": iso(message.timestamp),
            "edited_timestamp": iso(message.edited_timestamp) if message.edited_timestamp else None,
            "flags": message.flags,
            "components": message.components,
            "id": str(message.id),
            "channel_id": str(message.channel_id),
            "author": message.author.to_json(),
            "pinned": message.pinned,
            "mention_everyone": message.mention_everyone,
            "tts": message.tts,
        }
        if include_nonce and message.nonce is not None:
            data["nonce"] = message.nonce
        if message.reference is not None:
            data["message_reference"] = message.reference
            ref_id = message.reference.get("message_id")
            referenced = self.messages.get(int(ref_id)) if ref_id else None
            if message.type == 19:
                data["referenced_message"] = (
                    self._basic_message_json(referenced) if referenced else None
                )
        if message.thread_id is not None and message.thread_id in self.channels:
            data["thread"] = self.channel_json(self.channels[message.thread_id])
        if message.position is not None:
            data["position"] = message.position
        if message.application_id is not None:
            data["application_id"] = str(message.application_id)
        if message.webhook_id is not None:
            data["webhook_id"] = str(message.webhook_id)
        if message.interaction is not None:
            data["interaction_metadata"] = message.interaction["metadata"]
            data["interaction"] = message.interaction["legacy"]
        return data

    def _basic_message_json(self, message: Message) -> dict[str, Any]:
        data = self.message_json(message)
        for key in ("referenced_message", "thread"):
            data.pop(key, None)
        return data

    def guild_create_json(self, guild: Guild) -> dict[str, Any]:
        channels = [
            self.channel_json(self.channels[cid])
            for cid in guild.channel_ids
            if cid in self.channels
        ]
        threads = [
            self.channel_json(ch)
            for ch in self.channels.values()
            if ch.is_thread and ch.guild_id == guild.id and not ch.archived
        ]
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": str(guild.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "roles": [r.to_json() for r in guild.roles.values()],
            "emojis": [],
            "stickers": [],
            "features": ["NEWS", "COMMUNITY"],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "public_updates_channel_id": None,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "joined_at": iso(WORLD_EPOCH_MS / 1000),
            "large": False,
            "unavailable": False,
            "member_count": len(guild.members),
            "voice_states": [],
            "members": [m.to_json() for m in guild.members.values()],
            "channels": channels,
            "threads": threads,
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }
