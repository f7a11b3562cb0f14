"""The Telegram world: the bot, users, chats of every type, messages and the update queue."""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Any

BOT_ID = 7_000_000_001
BOT_USERNAME = "sandbox_comms_bot"
# "<bot id>:<35 characters>", the documented token shape; a fixed demo value, not a secret.
BOT_TOKEN = f"{BOT_ID}:AAHsandboxDemoTokenNotASecret_00xyz"
assert len(BOT_TOKEN.split(":", 1)[1]) == 35
# The account Telegram shows as the author of a channel post's automatic forward into the
# channel's discussion group (the post itself is in ``sender_chat``).
SERVICE_USER_ID = 777_000

DEFAULT_ALLOWED_UPDATES = frozenset(
    {
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "business_connection",
        "business_message",
        "edited_business_message",
        "deleted_business_messages",
        "inline_query",
        "chosen_inline_result",
        "callback_query",
        "shipping_query",
        "pre_checkout_query",
        "purchased_paid_media",
        "poll",
        "poll_answer",
        "my_chat_member",
        "chat_join_request",
        "chat_boost",
        "removed_chat_boost",
    }
)

ADMIN_RIGHTS = (
    "can_manage_chat",
    "can_delete_messages",
    "can_restrict_members",
    "can_pin_messages",
    "can_post_messages",
    "can_edit_messages",
    "can_change_info",
    "can_invite_users",
)
FULL_RIGHTS = dict.fromkeys(ADMIN_RIGHTS, True)
MEMBER_PERMISSIONS = {
    "can_send_messages": True,
    "can_send_audios": True,
    "can_send_documents": True,
    "can_send_photos": True,
    "can_send_videos": True,
    "can_send_video_notes": True,
    "can_send_voice_notes": True,
    "can_send_polls": True,
    "can_send_other_messages": True,
    "can_add_web_page_previews": True,
    "can_change_info": False,
    "can_invite_users": True,
    "can_pin_messages": False,
    "can_manage_topics": False,
}


@dataclass
class TgUser:
    id: int
    first_name: str
    username: str | None = None
    last_name: str | None = None
    is_bot: bool = False
    language_code: str | None = "en"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        if self.last_name:
            data["last_name"] = self.last_name
        if self.username:
            data["username"] = self.username
        if self.language_code and not self.is_bot:
            data["language_code"] = self.language_code
        return data


@dataclass
class TgMessage:
    message_id: int
    chat_id: int
    date: int
    text: str
    entities: list[dict[str, Any]]
    sender: TgUser | None  # None for channel posts
    reply_to: int | None = None
    edit_date: int | None = None
    link_preview_options: dict[str, Any] | None = None
    silent: bool = False
    protected: bool = False
    pinned: bool = False
    pinned_message_id: int | None = None  # a "pinned_message" service message
    reply_markup: dict[str, Any] | None = None
    # A photo: ``text`` and ``entities`` are its caption (``caption``, ``caption_entities``).
    photo: list[dict[str, Any]] | None = None
    # A channel post copied into the channel's discussion group (``is_automatic_forward``).
    forwarded_from: tuple[int, int] | None = None  # (channel id, its message id)


@dataclass
class TgChat:
    id: int
    type: str  # private, group, supergroup, channel
    title: str | None = None
    username: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    description: str | None = None
    bot_member: bool = True
    bot_admin: bool = False
    bot_rights: dict[str, bool] = field(default_factory=dict)
    permissions: dict[str, bool] = field(default_factory=lambda: dict(MEMBER_PERMISSIONS))
    members: set[int] = field(default_factory=set)
    messages: dict[int, TgMessage] = field(default_factory=dict)
    next_message_id: int = 1
    last_bot_id: int | None = None
    slow_mode_delay: int = 0
    linked_chat_id: int | None = None  # a channel's discussion group, and back

    @property
    def is_group(self) -> bool:
        return self.type in ("group", "supergroup")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.type == "private":
            data["first_name"] = self.first_name or ""
            if self.last_name:
                data["last_name"] = self.last_name
        else:
            data["title"] = self.title or ""
        if self.username:
            data["username"] = self.username
        return data

    def right(self, name: str) -> bool:
        return self.bot_admin and self.bot_rights.get(name, False)


class UpdateQueue:
    """Pending updates for the bot, with Telegram's getUpdates semantics."""

    def __init__(self) -> None:
        self.updates: collections.deque[dict[str, Any]] = collections.deque()
        self.next_id = 100_000_001
        self.allowed: frozenset[str] = DEFAULT_ALLOWED_UPDATES
        self.generation = 0
        self.changed = asyncio.Condition()

    async def push(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        update = {"update_id": self.next_id, kind: payload}
        self.next_id += 1
        self.updates.append(update)
        async with self.changed:
            self.changed.notify_all()
        return update

    def confirm(self, offset: int) -> None:
        if offset > 0:
            while self.updates and self.updates[0]["update_id"] < offset:
                self.updates.popleft()
        elif offset < 0:
            while len(self.updates) > -offset:
                self.updates.popleft()

    def available(self, limit: int) -> list[dict[str, Any]]:
        result = []
        for update in self.updates:
            kind = next(k for k in update if k != "update_id")
            if kind in self.allowed:
                result.append(update)
                if len(result) >= limit:
                    break
        return result

    def clear(self) -> None:
        self.updates.clear()


class TelegramWorld:
    """All Telegram state; ``reset()`` rebuilds the default world with the same ids."""

    def __init__(self) -> None:
        self.queue = UpdateQueue()
        self.reset()

    def reset(self) -> None:
        self.bot = TgUser(BOT_ID, "Sandbox Comms", BOT_USERNAME, is_bot=True)
        self.privacy_mode = True
        # /revoke in BotFather: the old token is refused (401) everywhere.
        self.token_revoked = False
        self.users: dict[int, TgUser] = {self.bot.id: self.bot}
        self.service_user = TgUser(SERVICE_USER_ID, "Telegram", language_code=None)
        self.chats: dict[int, TgChat] = {}
        self.commands: dict[str, list[dict[str, str]]] = {}
        # setWebhook: while ``webhook_url`` is set, updates are pushed there (TelegramAPI) and
        # getUpdates answers 409.
        self.webhook_url = ""
        self.webhook_secret: str | None = None
        self.webhook_max_connections = 40
        self.webhook_allowed_updates: list[str] | None = None  # as last given, for getWebhookInfo
        self.webhook_last_error_date: int | None = None
        self.webhook_last_error_message: str | None = None
        self.queue.clear()
        self._next_user_id = 1_000_100
        self._next_chat_id = 1_000_100
        self.default_users: dict[str, int] = {}
        for user_id, first, username in (
            (1_000_001, "Alice", "alice"),
            (1_000_002, "Bob", "bob"),
            (1_000_003, "Carol", None),  # no username: mentioned through text_mention
            (1_000_004, "Dave", "dave_responder"),
        ):
            user = TgUser(user_id, first, username)
            self.users[user.id] = user
            self.default_users[(username or first).lower()] = user.id
        everyone = set(self.default_users.values())
        self.default_chats = {
            "announcements": -1_001_000_000_001,
            "community": -1_001_000_000_002,
            "responders": -4_000_000_003,
        }
        self.add_chat(
            TgChat(
                self.default_chats["announcements"],
                "channel",
                title="Sandbox Protocol Announcements",
                username="sandbox_announcements",
                description="Official incident announcements",
                bot_admin=True,
                bot_rights=dict(FULL_RIGHTS),
                members=set(everyone),
            )
        )
        self.add_chat(
            TgChat(
                self.default_chats["community"],
                "supergroup",
                title="Sandbox Protocol Community",
                username="sandbox_community",
                members=set(everyone),
            )
        )
        self.add_chat(
            TgChat(
                self.default_chats["responders"],
                "group",
                title="Sandbox Responders",
                bot_admin=True,
                bot_rights=dict(FULL_RIGHTS),
                members={self.default_users["dave_responder"], self.default_users["alice"]},
            )
        )

    def add_chat(self, chat: TgChat) -> TgChat:
        self.chats[chat.id] = chat
        return chat

    def new_chat_id(self, kind: str) -> int:
        self._next_chat_id += 1
        if kind in ("supergroup", "channel"):
            return -1_001_000_000_000 - self._next_chat_id
        return -4_000_000_000 - self._next_chat_id

    def add_user(
        self, first_name: str, username: str | None = None, *, is_bot: bool = False
    ) -> TgUser:
        self._next_user_id += 1
        user = TgUser(self._next_user_id, first_name, username, is_bot=is_bot)
        self.users[user.id] = user
        return user

    def find_user(self, ref: Any) -> TgUser | None:
        if isinstance(ref, int) or (isinstance(ref, str) and ref.lstrip("-").isdigit()):
            return self.users.get(int(ref))
        if isinstance(ref, str):
            name = ref.lstrip("@").lower()
            for user in self.users.values():
                if (user.username or "").lower() == name or user.first_name.lower() == name:
                    return user
        return None

    def find_chat(self, ref: Any) -> TgChat | None:
        if isinstance(ref, int):
            return self.chats.get(ref)
        if isinstance(ref, str):
            if ref.lstrip("-").isdigit():
                return self.chats.get(int(ref))
            if ref.startswith("@"):
                name = ref[1:].lower()
                for chat in self.chats.values():
                    if (chat.username or "").lower() == name and chat.type != "private":
                        return chat
        return None

    def link_discussion(self, channel: TgChat, group: TgChat) -> None:
        """Make ``group`` the discussion group of ``channel``: every post in the channel is
        then forwarded into the group automatically, as Telegram does."""
        if channel.type != "channel" or group.type != "supergroup":
            raise ValueError("a channel's discussion group is a supergroup")
        channel.linked_chat_id = group.id
        group.linked_chat_id = channel.id

    def private_chat(self, user: TgUser) -> TgChat:
        chat = self.chats.get(user.id)
        if chat is None:
            chat = self.add_chat(
                TgChat(
                    user.id,
                    "private",
                    first_name=user.first_name,
                    last_name=user.last_name,
                    username=user.username,
                    members={user.id},
                )
            )
        return chat

    def add_message(self, chat: TgChat, message: TgMessage) -> None:
        chat.messages[message.message_id] = message

    def next_message_id(self, chat: TgChat) -> int:
        message_id = chat.next_message_id
        chat.next_message_id += 1
        return message_id

    def message_json(
        self, chat: TgChat, message: TgMessage, *, nested: bool = False
    ) -> dict[str, Any]:
        data: dict[str, Any] = {"message_id": message.message_id}
        if message.sender is not None:
            data["from"] = message.sender.to_json()
        if chat.type == "channel":
            data["sender_chat"] = chat.to_json()
        if message.forwarded_from is not None:
            channel_id, post_id = message.forwarded_from
            channel = self.chats[channel_id]
            data["sender_chat"] = channel.to_json()
        data["chat"] = chat.to_json()
        data["date"] = message.date
        if message.forwarded_from is not None:
            data["forward_origin"] = {
                "type": "channel",
                "chat": channel.to_json(),
                "message_id": post_id,
                "date": message.date,
            }
            data["is_automatic_forward"] = True
        if message.edit_date is not None:
            data["edit_date"] = message.edit_date
        if message.protected:
            data["has_protected_content"] = True
        if message.pinned_message_id is not None:
            pinned = chat.messages.get(message.pinned_message_id)
            if pinned is not None and not nested:
                data["pinned_message"] = self.message_json(chat, pinned, nested=True)
            return data
        if message.reply_to is not None and not nested:
            replied = chat.messages.get(message.reply_to)
            if replied is not None:
                data["reply_to_message"] = self.message_json(chat, replied, nested=True)
        if message.photo is not None:
            data["photo"] = message.photo
            if message.text:
                data["caption"] = message.text
            if message.entities:
                data["caption_entities"] = message.entities
        else:
            data["text"] = message.text
            if message.entities:
                data["entities"] = message.entities
        if message.link_preview_options:
            data["link_preview_options"] = message.link_preview_options
        if message.reply_markup is not None:
            data["reply_markup"] = message.reply_markup
        return data

    def now(self) -> int:
        return int(time.time())
