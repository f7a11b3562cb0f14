"""Browser-facing protections: security headers, request size limits, cookies and CSRF tokens.

CSRF uses two independent checks on every unsafe panel request: the browser's own fetch
metadata (a ``Sec-Fetch-Site: cross-site`` request or a foreign ``Origin`` is refused), and a
synchronizer token that is an HMAC of the session id (or, before login, of a random pre-session
cookie), compared in constant time. API requests authenticate with bearer tokens only, never
cookies, so they need no CSRF token.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import parse_qsl

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from comms.auth.crypto import Keys
from comms.errors import FieldProblem, PermissionDenied
from comms.settings import Settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
MAX_BODY_BYTES = 1_000_000

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "object-src 'none'",
    ]
)

HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    # same-origin, not no-referrer: with no-referrer browsers send "Origin: null" on our own
    # form posts, which the CSRF check must refuse.
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


class CsrfRejected(PermissionDenied):
    """An unsafe request without proof that it came from our own page."""

    def __init__(self, message: str) -> None:
        super().__init__(message, rule="csrf")


def is_https(scope: Scope | Request, settings: Settings) -> bool:
    if settings.secure_cookies is not None:
        return settings.secure_cookies
    raw = scope.scope if isinstance(scope, Request) else scope
    return raw.get("scheme") == "https"


def cookie_name(base: str, *, secure: bool) -> str:
    """``__Host-`` names over HTTPS: the browser then insists on Secure, Path=/ and no Domain."""
    return f"__Host-{base}" if secure else base


SESSION_COOKIE = "comms_session"
PRE_COOKIE = "comms_pre"
# A browser that completed a sign-in to an account: its later attempts at that account are
# throttled on their own, so strangers' guesses never lock the owner out (OWASP device cookies).
DEVICE_COOKIE = "comms_device"
DEVICE_COOKIE_DAYS = 180


def device_cookie(keys: Keys, username: str) -> str:
    """A new device cookie value for ``username``: a random nonce and its MAC."""
    nonce = secrets.token_urlsafe(18)
    return f"{nonce}.{keys.mac(keys.device, f'{username}:{nonce}')}"


def device_nonce(keys: Keys, raw: str, username: str) -> str | None:
    """The nonce of a device cookie issued for ``username``, or None (absent, forged, other)."""
    nonce, _, mac = raw.partition(".")
    name = username.strip().lower()
    if not nonce or not mac or len(raw) > 200:
        return None
    expected = keys.mac(keys.device, f"{name}:{nonce}")
    return nonce if hmac.compare_digest(expected, mac) else None


def set_cookie(
    response: Response,
    request: Request,
    settings: Settings,
    base: str,
    value: str,
    *,
    max_age: int | None = None,
) -> None:
    secure = is_https(request, settings)
    response.set_cookie(
        cookie_name(base, secure=secure),
        value,
        max_age=max_age,
        httponly=True,
        secure=secure,
        samesite="strict",
        path="/",
    )


def clear_cookie(response: Response, request: Request, settings: Settings, base: str) -> None:
    secure = is_https(request, settings)
    response.delete_cookie(
        cookie_name(base, secure=secure), path="/", secure=secure, httponly=True, samesite="strict"
    )


def read_cookie(request: Request, settings: Settings, base: str) -> str:
    return request.cookies.get(cookie_name(base, secure=is_https(request, settings)), "")


def new_pre_session() -> str:
    return secrets.token_urlsafe(24)


def csrf_token(keys: Keys, *, session_hash: str | None, pre_session: str | None) -> str:
    if session_hash:
        return keys.mac(keys.csrf, f"session:{session_hash}")
    if pre_session:
        return keys.mac(keys.csrf, f"pre:{pre_session}")
    return ""


def check_fetch_metadata(request: Request) -> None:
    site = request.headers.get("sec-fetch-site", "")
    if site and site not in ("same-origin", "none"):
        raise CsrfRejected(f"cross-site request refused (Sec-Fetch-Site: {site[:20]})")
    origin = request.headers.get("origin")
    if origin is not None:
        expected = f"{request.url.scheme}://{request.url.netloc}"
        if origin != expected:
            raise CsrfRejected(
                f"request from another origin refused ({origin[:60]} is not {expected[:60]})"
            )


def check_token(expected: str, supplied: str | None) -> None:
    if not expected or not supplied or not hmac.compare_digest(expected, supplied):
        raise CsrfRejected(
            "the form's security token is missing or stale; reload the page and try again"
        )


class SecurityHeadersMiddleware:
    """Adds the security headers to every response, HTML, JSON, static or error."""

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = is_https(scope, self.settings)
        static = scope.get("path", "").startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers[name] = value
                if https:
                    headers["strict-transport-security"] = "max-age=31536000; includeSubDomains"
                if not static:
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimitMiddleware:
    """Reads the request body before anything parses it: 413 over ``MAX_BODY_BYTES`` (declared
    or not: a chunked body without Content-Length is counted as it arrives), and the fields of
    a form body that are not UTF-8 are noted for the guard, which refuses them (422)."""

    def __init__(self, app: ASGIApp, *, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _too_large(scope, receive, send, self.limit)
            return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.limit:
                await _too_large(scope, receive, send, self.limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        if body and content_type.startswith(FORM_TYPES):
            scope.setdefault("state", {})[FORM_PROBLEMS] = form_encoding_problems(
                content_type, body
            )
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


FORM_PROBLEMS = "form_encoding_problems"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _undecodable(name: bytes, value: bytes) -> FieldProblem | None:
    try:
        field = name.decode("utf-8")
    except UnicodeDecodeError:
        return FieldProblem(name.decode("latin-1")[:64], "the field name is not valid UTF-8")
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return FieldProblem(
            field[:64], f"is not valid UTF-8 (byte {exc.start + 1}); nothing was saved"
        )
    return None


def form_encoding_problems(content_type: str, body: bytes) -> list[FieldProblem]:
    """Fields of a form body that are not UTF-8. Starlette would replace such bytes (or decode
    them as Latin-1) and we would store something nobody typed; they are refused instead."""
    problems: list[FieldProblem] = []
    if content_type.startswith("application/x-www-form-urlencoded"):
        # Latin-1 maps bytes to code points one to one, so each field's bytes come back exactly.
        for name, value in parse_qsl(
            body.decode("latin-1"), keep_blank_values=True, encoding="latin-1"
        ):
            problem = _undecodable(name.encode("latin-1"), value.encode("latin-1"))
            if problem is not None:
                problems.append(problem)
        return problems
    _kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        return [FieldProblem("body", "a multipart form needs a boundary")]
    parts: list[tuple[bytes, bytearray]] = []
    header = bytearray()

    def on_part_begin() -> None:
        parts.append((b"", bytearray()))

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header.extend(data[start:end])

    def on_header_end() -> None:
        _value, options = parse_options_header(bytes(header))
        header.clear()
        if b"name" in options:
            parts[-1] = (options[b"name"], parts[-1][1])

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1][1].extend(data[start:end])

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError:
        return [FieldProblem("body", "is not a well-formed multipart form")]
    for part_name, data in parts:
        problem = _undecodable(part_name, bytes(data))
        if problem is not None:
            problems.append(problem)
    return problems


async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    from starlette.responses import JSONResponse, PlainTextResponse

    text = f"request body too large (limit {limit} bytes)"
    response: Response
    if scope.get("path", "").startswith("/api/"):
        response = JSONResponse(
            {
                "error": {
                    "code": "too_large",
                    "message": text,
                    "field": None,
                    "rule": None,
                    "problems": [],
                }
            },
            status_code=413,
        )
    else:
        response = PlainTextResponse(text, status_code=413)
    await response(scope, receive, send)
