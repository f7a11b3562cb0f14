"""The real python-telegram-bot against the Telegram emulator: methods, polling, privacy, 429s."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from telegram import (
    BotCommand,
    ChatPermissions,
    LinkPreviewOptions,
    MessageEntity,
    ReplyParameters,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter
from telegram.ext import AIORateLimiter, CommandHandler, ContextTypes, MessageHandler, filters

from bots.sandbox import Sandbox

from .conftest import Control, TelegramFactory


def _chat(sandbox: Sandbox, name: str) -> int:
    chat_id: int = sandbox.info["telegram_chats"][name]
    return chat_id


async def test_get_me_and_bot_methods(
    sandbox: Sandbox, telegram_factory: TelegramFactory, control: Control
) -> None:
    app = await telegram_factory(poll=False)
    bot = app.bot
    assert bot.username == sandbox.info["telegram_bot_username"]
    assert bot.id == sandbox.info["telegram_bot_id"]
    me = await bot.get_me()
    assert me.is_bot
    assert me.can_read_all_group_messages is False

    announcements = _chat(sandbox, "announcements")
    sent = await bot.send_message(
        announcements,
        "<b>Bridge paused</b>\nDetails: https://status.example.com/incidents/12 #incident",
        parse_mode=ParseMode.HTML,
        disable_notification=True,
        link_preview_options=LinkPreviewOptions(is_disabled=True),
    )
    assert sent.text.startswith("Bridge paused\n")
    kinds = [e.type for e in sent.entities]
    assert kinds == [MessageEntity.BOLD, MessageEntity.URL, MessageEntity.HASHTAG]
    assert sent.sender_chat is not None
    assert sent.sender_chat.id == announcements
    assert sent.link_preview_options is not None
    assert sent.link_preview_options.is_disabled

    edited = await bot.edit_message_text(
        "<b>Bridge paused</b>: funds are safe", announcements, sent.message_id, parse_mode="HTML"
    )
    assert isinstance(edited, type(sent))
    assert edited.edit_date is not None
    assert await bot.pin_chat_message(announcements, sent.message_id, disable_notification=True)
    chat = await bot.get_chat(announcements)
    assert chat.pinned_message is not None
    assert chat.pinned_message.message_id == sent.message_id

    shown = await control.get(f"/telegram/chats/{announcements}/messages")
    assert len(shown) == 1
    first = shown[0]
    assert first["text"] == "Bridge paused: funds are safe"
    assert first["silent"]
    assert first["pinned"]
    assert first["edited"]
    assert first["entities"] == [{"type": "bold", "offset": 0, "length": 13}]

    assert await bot.unpin_chat_message(announcements, sent.message_id)
    assert await bot.delete_message(announcements, sent.message_id)
    assert await control.get(f"/telegram/chats/{announcements}/messages") == []

    assert await bot.set_my_commands([BotCommand("report", "Report a problem")])
    assert [c.command for c in await bot.get_my_commands()] == ["report"]
    responders = _chat(sandbox, "responders")
    assert await bot.set_chat_permissions(responders, ChatPermissions(can_send_messages=False))
    group = await bot.get_chat(responders)
    assert group.permissions is not None
    assert group.permissions.can_send_messages is False


async def test_reply_and_markdown_v2(
    sandbox: Sandbox, telegram_factory: TelegramFactory, control: Control
) -> None:
    app = await telegram_factory(poll=False)
    community = _chat(sandbox, "community")
    posted = await control.post(
        f"/telegram/chats/{community}/messages",
        {"user": "alice", "text": "is the bridge down?"},
        expect=201,
    )
    reply = await app.bot.send_message(
        community,
        r"*Yes*, paused for maintenance\. See [status](https://status.example.com)",
        parse_mode=ParseMode.MARKDOWN_V2,
        reply_parameters=ReplyParameters(message_id=posted["id"]),
    )
    assert reply.reply_to_message is not None
    assert reply.reply_to_message.message_id == posted["id"]
    assert reply.text == "Yes, paused for maintenance. See status"
    link = reply.entities[-1]
    assert link.type == MessageEntity.TEXT_LINK
    assert link.url == "https://status.example.com/"
    with pytest.raises(BadRequest, match=r"(?i)can't parse entities"):
        await app.bot.send_message(community, "1.5 is bad", parse_mode=ParseMode.MARKDOWN_V2)
    shown = await control.get(f"/telegram/chats/{community}/messages")
    assert shown[-1]["reply_to"] == posted["id"]


async def test_polling_receives_commands_and_mentions_under_privacy_mode(
    sandbox: Sandbox, telegram_factory: TelegramFactory, control: Control
) -> None:
    commands: asyncio.Queue[tuple[list[str], int]] = asyncio.Queue()
    mentions: asyncio.Queue[str] = asyncio.Queue()

    async def report(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        commands.put_nowait((list(context.args or []), update.effective_message.message_id))
        await update.effective_message.reply_text("Report received")

    async def mentioned(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        mentions.put_nowait(update.effective_message.text or "")

    await telegram_factory(
        handlers=[
            CommandHandler("report", report),
            MessageHandler(filters.Entity(MessageEntity.MENTION), mentioned),
        ]
    )
    community = _chat(sandbox, "community")
    username = sandbox.info["telegram_bot_username"]
    ignored = await control.post(
        f"/telegram/chats/{community}/messages", {"user": "bob", "text": "just chatting"}
    )
    assert ignored["delivered_to_bot"] is False  # privacy mode
    other_bot = await control.post(
        f"/telegram/chats/{community}/messages", {"user": "bob", "text": "/report@other_bot x"}
    )
    assert other_bot["delivered_to_bot"] is False
    command = await control.post(
        f"/telegram/chats/{community}/messages",
        {"user": "alice", "text": f"/report@{username} bridge drained 🚨"},
    )
    assert command["delivered_to_bot"] is True
    length = len(f"/report@{username}")
    assert command["entities"][0] == {"type": "bot_command", "offset": 0, "length": length}
    args, message_id = await asyncio.wait_for(commands.get(), 10)
    assert args == ["bridge", "drained", "🚨"]
    assert message_id == command["id"]

    mention = await control.post(
        f"/telegram/chats/{community}/messages",
        {"user": "dave_responder", "text": f"😀 @{username} can you help?"},
    )
    # "😀" is two UTF-16 code units, so the mention starts at offset 3.
    assert mention["entities"] == [{"type": "mention", "offset": 3, "length": len(username) + 1}]
    assert await asyncio.wait_for(mentions.get(), 10) == f"😀 @{username} can you help?"

    shown = await control.get(f"/telegram/chats/{community}/messages")
    answer = shown[-2] if shown[-1]["id"] == mention["id"] else shown[-1]
    assert answer["author"]["bot"]
    assert answer["reply_to"] == command["id"]


async def test_privacy_off_delivers_everything(
    sandbox: Sandbox, telegram_factory: TelegramFactory, control: Control
) -> None:
    seen: asyncio.Queue[str] = asyncio.Queue()

    async def anything(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        seen.put_nowait(update.effective_message.text or "")

    await control.patch("/telegram/bot", {"privacy_mode": False})
    await telegram_factory(handlers=[MessageHandler(filters.TEXT, anything)])
    community = _chat(sandbox, "community")
    await control.post(f"/telegram/chats/{community}/messages", {"user": "bob", "text": "hello"})
    assert await asyncio.wait_for(seen.get(), 10) == "hello"


async def test_flood_limit_raises_retry_after_and_the_rate_limiter_recovers(
    sandbox: Sandbox, telegram_factory: TelegramFactory, control: Control
) -> None:
    app = await telegram_factory(poll=False)
    community = _chat(sandbox, "community")
    for index in range(3):  # the per-chat burst
        await app.bot.send_message(community, f"update {index}")
    with pytest.raises(RetryAfter) as caught:
        await app.bot.send_message(community, "one too many")
    assert caught.value.retry_after in (1, pytest.approx(1.0))

    limited = await telegram_factory(poll=False, rate_limiter=AIORateLimiter(max_retries=3))
    started = time.monotonic()
    await limited.bot.send_message(community, "sent after waiting")
    assert time.monotonic() - started >= 0.5
    stats = await control.get("/stats")
    assert stats["rate_limited"]["telegram"]["chat"] >= 1


async def test_fault_then_recovery(
    sandbox: Sandbox, telegram_factory: TelegramFactory, control: Control
) -> None:
    app = await telegram_factory(poll=False)
    chat = _chat(sandbox, "responders")
    fault: dict[str, Any] = {"platform": "telegram", "endpoint": "sendMessage", "kind": "502"}
    await control.post("/faults", {**fault, "count": 1}, expect=201)
    with pytest.raises(NetworkError):
        await app.bot.send_message(chat, "first try")
    assert await control.get(f"/telegram/chats/{chat}/messages") == []
    sent = await app.bot.send_message(chat, "second try")
    shown = await control.get(f"/telegram/chats/{chat}/messages")
    assert [m["id"] for m in shown] == [sent.message_id]

    await control.post(
        "/faults", {**fault, "kind": "429", "retry_after": 1, "count": 1}, expect=201
    )
    limited = await telegram_factory(poll=False, rate_limiter=AIORateLimiter(max_retries=1))
    again = await limited.bot.send_message(chat, "after a forced 429")
    assert again.text == "after a forced 429"


async def test_private_chat_after_the_user_starts_the_bot(
    sandbox: Sandbox, telegram_factory: TelegramFactory, control: Control
) -> None:
    started: asyncio.Queue[int] = asyncio.Queue()

    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_chat is not None
        started.put_nowait(update.effective_chat.id)
        await context.bot.send_message(update.effective_chat.id, "Subscribed to alerts")

    app = await telegram_factory(handlers=[CommandHandler("start", start)])
    bob = sandbox.info["telegram_users"]["bob"]
    with pytest.raises(Forbidden, match="initiate conversation"):
        await app.bot.send_message(bob, "hello")
    posted = await control.post(f"/telegram/chats/{bob}/messages", {"user": bob, "text": "/start"})
    assert posted["delivered_to_bot"] is True
    assert await asyncio.wait_for(started.get(), 10) == bob
    chat = await app.bot.get_chat(bob)
    assert chat.type == "private"
    assert chat.first_name == "Bob"


async def test_member_edit_reaches_the_bot(
    sandbox: Sandbox, telegram_factory: TelegramFactory, control: Control
) -> None:
    edits: asyncio.Queue[str] = asyncio.Queue()

    async def edited(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.edited_message is not None
        edits.put_nowait(update.edited_message.text or "")

    await telegram_factory(handlers=[MessageHandler(filters.UpdateType.EDITED_MESSAGE, edited)])
    community = _chat(sandbox, "community")
    username = sandbox.info["telegram_bot_username"]
    posted = await control.post(
        f"/telegram/chats/{community}/messages", {"user": "alice", "text": f"@{username} hi"}
    )
    changed = await control.patch(
        f"/telegram/chats/{community}/messages/{posted['id']}",
        {"text": f"@{username} the bridge is fine now"},
    )
    assert changed["edited"]
    assert await asyncio.wait_for(edits.get(), 10) == f"@{username} the bridge is fine now"
