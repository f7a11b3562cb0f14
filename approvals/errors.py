"""One place that turns errors into responses: an error page for people, JSON for the API.

Every domain error (``comms.errors``) carries its HTTP status, the field it is about and the
rule that refused; both forms show them. Nothing else leaks: unexpected exceptions become a
plain 500 without a stack trace (it goes to the log).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from approvals.deps import StageRequired
from approvals.web import FormInvalid, page
from comms.errors import AuthenticationRequired, CommsError, InvalidInput, PermissionDenied

log = logging.getLogger("approvals")

TITLES = {
    400: "Bad request",
    401: "Log in again",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Too large",
    422: "Invalid input",
    429: "Too many attempts",
    500: "Something went wrong",
}


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path == "/openapi.json"


def error_body(
    *,
    code: str,
    message: str,
    field: str | None = None,
    rule: str | None = None,
    problems: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "field": field,
            "rule": rule,
            "problems": problems or [],
        }
    }


def _api_error(status: int, body: dict[str, Any]) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="comms"'} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def _page(
    request: Request,
    status: int,
    message: str,
    *,
    rule: str | None = None,
    problems: list[dict[str, str]] | None = None,
) -> HTMLResponse:
    return page(
        request,
        "error.html",
        {
            "status": status,
            "title": TITLES.get(status, "Error"),
            "message": message,
            "rule": rule,
            "problem_list": problems or [],
        },
        status=status,
    )


async def on_comms_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CommsError)
    if isinstance(exc, PermissionDenied):
        log.warning(
            "denied %s %s: %s (%s)", request.method, request.url.path, exc.message, exc.rule
        )
    problems = (
        [{"field": p.field, "problem": p.problem} for p in exc.problems]
        if isinstance(exc, InvalidInput)
        else []
    )
    if is_api(request):
        return _api_error(
            exc.status,
            error_body(
                code=exc.code,
                message=exc.message,
                field=exc.field,
                rule=exc.rule,
                problems=problems,
            ),
        )
    if isinstance(exc, AuthenticationRequired) and request.method in ("GET", "HEAD"):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
    return _page(request, exc.status, exc.message, rule=exc.rule, problems=problems)


async def on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for item in exc.errors():
        loc = [
            str(part)
            for part in item.get("loc", ())
            if part not in ("body", "query", "path", "header", "form")
        ]
        problems.append({"field": ".".join(loc) or "body", "problem": str(item.get("msg", ""))})
    message = "; ".join(f"{p['field']}: {p['problem']}" for p in problems) or "invalid request"
    if is_api(request):
        return _api_error(
            422,
            error_body(
                code="invalid_input",
                message=message,
                field=problems[0]["field"] if problems else None,
                problems=problems,
            ),
        )
    return _page(request, 422, message, problems=problems)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    message = str(exc.detail) if exc.detail else TITLES.get(exc.status_code, "Error")
    if exc.status_code == 404:
        message = "There is nothing at this address."
    headers = dict(exc.headers or {})
    response: Response
    if is_api(request):
        response = _api_error(
            exc.status_code,
            error_body(
                code="not_found" if exc.status_code == 404 else "http_error", message=message
            ),
        )
    else:
        response = _page(request, exc.status_code, message)
    response.headers.update(headers)
    return response


async def on_form_invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FormInvalid)
    return HTMLResponse(exc.body, status_code=exc.status)


async def on_stage_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StageRequired)
    return RedirectResponse(exc.location, status_code=303)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    message = "An unexpected error occurred; nothing was saved. The details are in the server log."
    if is_api(request):
        return _api_error(500, error_body(code="internal", message=message))
    return HTMLResponse(
        "<!doctype html><title>Error</title><h1>Something went wrong</h1>"
        f'<p>{message}</p><p><a href="/">Back to the dashboard</a></p>',
        status_code=500,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(CommsError, on_comms_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(FormInvalid, on_form_invalid)
    app.add_exception_handler(StageRequired, on_stage_required)
    app.add_exception_handler(Exception, on_unexpected)
