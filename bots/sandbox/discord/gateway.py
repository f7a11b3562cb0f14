"""The Gateway: the WebSocket at ``/gateway`` (hello, heartbeat, identify, resume, request guild
members), the sessions with their replay buffers, dispatching events to the sessions whose intents
let them see it, and the REST routes that tell a bot where the Gateway is."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from bots.sandbox import discord_state as ds
from bots.sandbox.common import json_response
from bots.sandbox.core import SandboxCore
from bots.sandbox.discord.routing import Ctx
from bots.sandbox.discord_state import Channel, DiscordWorld, Message

GATEWAY_PATH = "/gateway"
HEARTBEAT_INTERVAL_MS = 41250


@dataclass
class GatewaySession:
    id: str
    intents: int
    shard: tuple[int, int]
    seq: int = 0
    ws: web.WebSocketResponse | None = None
    buffer: collections.deque[dict[str, Any]] = field(
        default_factory=lambda: collections.deque(maxlen=5000)
    )
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Gateway:
    """Every gateway session of one Discord emulator, and the sockets to close on shutdown."""

    def __init__(self, core: SandboxCore, world: DiscordWorld) -> None:
        self.core = core
        self.world = world
        self.sessions: dict[str, GatewaySession] = {}
        self.sockets: set[web.WebSocketResponse] = set()

    def reset(self) -> None:
        for session in self.sessions.values():
            session.buffer.clear()

    async def resync(self) -> None:
        """After a reset, connected bots get the rebuilt guilds again."""
        for guild in self.world.guilds.values():
            await self.dispatch("GUILD_CREATE", self.world.guild_create_json(guild), channel=None)

    async def get_gateway(self, ctx: Ctx) -> web.Response:
        return json_response({"url": self.core.base_ws + GATEWAY_PATH})

    async def get_gateway_bot(self, ctx: Ctx) -> web.Response:
        return json_response(
            {
                "url": self.core.base_ws + GATEWAY_PATH,
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 14_400_000,
                    "max_concurrency": 1,
                },
            }
        )

    def message_payload(self, message: Message) -> dict[str, Any]:
        payload = self.world.message_json(message, include_nonce=True)
        if message.guild_id is not None:
            payload["guild_id"] = str(message.guild_id)
            member = self.world.guilds[message.guild_id].members.get(message.author.id)
            if member is not None:
                payload["member"] = member.to_json(with_user=False)
        channel = self.world.channels.get(message.channel_id)
        if channel is not None:
            payload["channel_type"] = channel.type
        return payload

    async def announce(self, message: Message) -> None:
        if message.visible_to is not None:
            return
        channel = self.world.channels[message.channel_id]
        await self.dispatch(
            "MESSAGE_CREATE", self.message_payload(message), channel=channel, message=message
        )

    def _visible_to_session(
        self,
        session: GatewaySession,
        event: str,
        data: dict[str, Any],
        channel: Channel | None,
        message: Message | None,
    ) -> dict[str, Any] | None:
        if channel is not None and not self.world.can_see(channel, ds.BOT_ID):
            return None
        if event.startswith("MESSAGE_"):
            is_dm = channel is not None and channel.guild_id is None
            needed = ds.INTENT_DIRECT_MESSAGES if is_dm else ds.INTENT_GUILD_MESSAGES
            if not session.intents & needed:
                return None
            if message is not None and not session.intents & ds.INTENT_MESSAGE_CONTENT:
                exempt = is_dm or message.author.id == ds.BOT_ID or ds.BOT_ID in message.mention_ids
                if not exempt:
                    data = {
                        **data,
                        "content": "",
                        "embeds": [],
                        "attachments": [],
                        "components": [],
                    }
        elif event.startswith(("CHANNEL_", "THREAD_", "GUILD_")) and not (
            session.intents & ds.INTENT_GUILDS
        ):
            return None
        return data

    async def dispatch(
        self,
        event: str,
        data: dict[str, Any],
        *,
        channel: Channel | None,
        message: Message | None = None,
        only: GatewaySession | None = None,
    ) -> None:
        """Send an event to every gateway session that should receive it (or buffer it)."""
        targets = [only] if only is not None else list(self.sessions.values())
        for session in targets:
            visible = self._visible_to_session(session, event, data, channel, message)
            if visible is None:
                continue
            session.seq += 1
            frame = {"op": 0, "t": event, "s": session.seq, "d": visible}
            session.buffer.append(frame)
            if self.core.record_exchanges:
                self.core.gateway_frames.append(frame)
            await self._send(session, frame)

    async def _send(self, session: GatewaySession, frame: dict[str, Any]) -> None:
        ws = session.ws
        if ws is None or ws.closed:
            return
        async with session.lock:
            try:
                await ws.send_str(json.dumps(frame, separators=(",", ":")))
            except (ConnectionError, RuntimeError):
                session.ws = None

    async def send_op(self, op: int, data: Any = None) -> int:
        """Send a bare opcode (7 RECONNECT, 9 INVALID_SESSION) to every connected session."""
        sent = 0
        for session in list(self.sessions.values()):
            ws = session.ws
            if ws is None or ws.closed:
                continue
            async with session.lock:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_str(json.dumps({"op": op, "d": data, "s": None, "t": None}))
                    sent += 1
            if op == 9:
                self.sessions.pop(session.id, None)
        return sent

    async def close_all(self) -> None:
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"sandbox stopping")

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=4 * 1024 * 1024)
        await ws.prepare(request)
        self.sockets.add(ws)
        session: GatewaySession | None = None
        self.core.log.add(
            {
                "time": time.time(),
                "platform": "discord",
                "method": "GET",
                "path": request.path,
                "route": "GATEWAY connect",
                "status": 101,
                "duration_ms": 0.0,
            }
        )
        try:
            await ws.send_str(
                json.dumps(
                    {
                        "op": 10,
                        "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS},
                        "s": None,
                        "t": None,
                    }
                )
            )
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    await ws.close(code=4002, message=b"Error while decoding payload.")
                    break
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    payload = json.loads(msg.data)
                    op = payload["op"]
                except (ValueError, KeyError, TypeError):
                    await ws.close(code=4002, message=b"Error while decoding payload.")
                    break
                if op == 1:
                    lock = session.lock if session is not None else asyncio.Lock()
                    async with lock:
                        await ws.send_str('{"op":11,"d":null,"s":null,"t":null}')
                elif op == 2:
                    if session is not None:
                        await ws.close(code=4005, message=b"Already authenticated.")
                        break
                    session = await self._identify(ws, payload.get("d"))
                    if session is None:
                        break
                elif op == 6:
                    session = await self._resume(ws, payload.get("d"))
                elif op in (3, 4, 8):
                    if session is None:
                        await ws.close(code=4003, message=b"Not authenticated.")
                        break
                    if op == 8:
                        await self._member_chunk(session, payload.get("d"))
                else:
                    await ws.close(code=4001, message=b"Unknown opcode.")
                    break
        finally:
            self.sockets.discard(ws)
            if session is not None and session.ws is ws:
                session.ws = None
        return ws

    async def _identify(self, ws: web.WebSocketResponse, data: Any) -> GatewaySession | None:
        if not isinstance(data, dict) or data.get("token") not in (
            ds.BOT_TOKEN,
            f"Bot {ds.BOT_TOKEN}",
        ):
            await ws.close(code=4004, message=b"Authentication failed.")
            return None
        intents = data.get("intents")
        if isinstance(intents, bool) or not isinstance(intents, int) or intents < 0:
            await ws.close(code=4013, message=b"Invalid intent(s).")
            return None
        if intents & ds.INTENT_MESSAGE_CONTENT and not self.world.message_content_allowed:
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return None
        shard_raw = data.get("shard") or [0, 1]
        try:
            shard = (int(shard_raw[0]), max(1, int(shard_raw[1])))
        except (TypeError, ValueError, IndexError):
            await ws.close(code=4010, message=b"Invalid shard.")
            return None
        session = GatewaySession(secrets.token_hex(16), intents, shard, ws=ws)
        self.sessions[session.id] = session
        guilds = [g for g in self.world.guilds.values() if (g.id >> 22) % shard[1] == shard[0]]
        guilds = [g for g in guilds if ds.BOT_ID in g.members]
        bot = self.world.bot.to_json()
        bot.update({"verified": True, "mfa_enabled": False, "email": None, "flags": 0})
        ready = {
            "v": 10,
            "user": bot,
            "user_settings": {},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.core.base_ws + GATEWAY_PATH,
            "shard": list(shard),
            "application": {"id": str(self.world.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "auth": {},
        }
        await self.dispatch("READY", ready, channel=None, only=session)
        for guild in guilds:
            await self.dispatch(
                "GUILD_CREATE", self.world.guild_create_json(guild), channel=None, only=session
            )
        return session

    async def _member_chunk(self, session: GatewaySession, data: Any) -> None:
        """Answer Request Guild Members (op 8) with one GUILD_MEMBERS_CHUNK."""
        if not isinstance(data, dict):
            return
        raw = data.get("guild_id")
        if isinstance(raw, list):  # one request may name several guilds
            raw = raw[0] if raw else None
        text = str(raw or "").strip()
        guild = self.world.guilds.get(int(text)) if text.isdigit() else None
        if guild is None:
            return
        members = [m.to_json() for m in guild.members.values()]
        query = data.get("query")
        if isinstance(query, str) and query:
            members = [m for m in members if m["user"]["username"].startswith(query)]
        chunk: dict[str, Any] = {
            "guild_id": str(guild.id),
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
        }
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        await self.dispatch("GUILD_MEMBERS_CHUNK", chunk, channel=None, only=session)

    async def _resume(self, ws: web.WebSocketResponse, data: Any) -> GatewaySession | None:
        session = None
        if isinstance(data, dict) and data.get("token") in (ds.BOT_TOKEN, f"Bot {ds.BOT_TOKEN}"):
            session = self.sessions.get(str(data.get("session_id")))
        if session is None:
            await ws.send_str(json.dumps({"op": 9, "d": False, "s": None, "t": None}))
            return None
        session.ws = ws
        try:
            seq = int(data.get("seq") or 0)
        except (TypeError, ValueError):
            seq = 0
        for frame in list(session.buffer):
            if frame["s"] > seq:
                await self._send(session, frame)
        await self.dispatch("RESUMED", {}, channel=None, only=session)
        return session
