"""Discord's error answers: the JSON shape every failed request gets, and the codes the resources
share, so that every handler fails the way Discord does."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bots.sandbox.common import json_response


class DiscordError(Exception):
    """An error answered in Discord's JSON shape."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        errors: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra or {}

    def response(self) -> web.Response:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        body.update(self.extra)
        return json_response(body, self.status, headers=self.headers)


def invalid_form(errors: dict[str, Any]) -> DiscordError:
    return DiscordError(400, 50035, "Invalid Form Body", errors)


def unknown(kind: str) -> DiscordError:
    codes = {
        "Channel": 10003,
        "Message": 10008,
        "Guild": 10004,
        "Application": 10002,
        "interaction": 10062,
        "Webhook": 10015,
    }
    return DiscordError(404, codes[kind], f"Unknown {kind}")


MISSING_ACCESS = (403, 50001, "Missing Access")
MISSING_PERMISSIONS = (403, 50013, "Missing Permissions")


def field_error(code: str, message: str) -> dict[str, Any]:
    """One entry of an ``errors`` tree: ``{"_errors": [{"code": ..., "message": ...}]}``."""
    return {"_errors": [{"code": code, "message": message}]}
