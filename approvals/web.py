"""Rendering helpers shared by the panel's routes: pages, form errors, redirects."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Path as FastPath
from fastapi import Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from starlette.responses import Response

from approvals import preview
from approvals.deps import Viewer, panel
from approvals.security import CSRF_FIELD
from comms.clock import utcnow
from comms.db import ROW_ID_MAX
from comms.errors import CommsError, InvalidInput
from comms.permissions import Action

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

# A number beyond any row id in a URL is a 4xx naming the parameter, not a driver overflow.
RowId = Annotated[int, FastPath(ge=1, le=ROW_ID_MAX)]
OptionalRowQuery = Annotated[int | None, Query(ge=1, le=ROW_ID_MAX)]


class FormInvalid(Exception):
    """A form that must be shown again with its errors. Raised (so the transaction rolls
    back, nothing is half-saved) with the page already rendered while the data was loaded."""

    def __init__(self, body: str, status: int) -> None:
        super().__init__(f"form invalid ({status})")
        self.body = body
        self.status = status


def ago(moment: datetime | None) -> str:
    """'4 min ago' style, for people scanning a dashboard at 3 a.m."""
    if moment is None:
        return "never"
    seconds = int((utcnow() - moment).total_seconds())
    if seconds < 0:
        return "in the future"
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min ago"
    return f"{seconds // 86400} d ago"


def until(moment: datetime) -> str:
    """'in 12 min' or 'overdue by 3 min': a deadline, to the minute (``panel.js`` keeps it
    counting down to the second)."""
    seconds = int((moment - utcnow()).total_seconds())
    span = abs(seconds)
    if span < 60:
        text = f"{span} s"
    elif span < 3600:
        text = f"{span // 60} min"
    else:
        text = f"{span // 3600} h {span % 3600 // 60} min"
    return f"in {text}" if seconds >= 0 else f"overdue by {text}"


def utc(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "-"


def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    env = templates.env
    env.autoescape = True
    env.filters["ago"] = ago
    env.filters["utc"] = utc
    env.filters["until"] = until
    env.globals["Action"] = Action
    env.globals["render_preview"] = preview.render
    env.globals["choice_options"] = lambda choices: [(c, c.replace("_", " ")) for c in choices]
    return templates


def context(request: Request, extra: dict[str, Any]) -> dict[str, Any]:
    state = panel(request)
    viewer = getattr(request.state, "viewer", None)
    token = getattr(request.state, "csrf", "")

    def allowed(action: Action) -> bool:
        return isinstance(viewer, Viewer) and viewer.can(action)

    return {
        "viewer": viewer,
        "can": allowed,
        "csrf_token": token,
        "csrf_input": Markup('<input type="hidden" name="{}" value="{}">').format(
            CSRF_FIELD, token
        ),
        "protocol_name": state.settings.protocol_name,
        "poll_seconds": state.settings.panel_poll_seconds,
        "errors": {},
        "error": None,
        **extra,
    }


def page(
    request: Request,
    name: str,
    extra: dict[str, Any] | None = None,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    templates = panel(request).templates
    response = templates.TemplateResponse(
        request, name, context(request, extra or {}), status_code=status, headers=headers
    )
    assert isinstance(response, HTMLResponse)
    return response


def render_text(request: Request, name: str, extra: dict[str, Any]) -> str:
    template = panel(request).templates.get_template(name)
    return template.render({"request": request, **context(request, extra)})


def problems_of(error: CommsError) -> dict[str, str]:
    if isinstance(error, InvalidInput):
        found: dict[str, str] = {}
        for problem in error.problems:
            found.setdefault(problem.field, problem.problem)
        return found
    if error.field:
        return {error.field: error.message}
    return {}


def form_error(
    request: Request, name: str, extra: dict[str, Any], error: CommsError
) -> FormInvalid:
    """Render ``name`` again with the error(s) next to their fields (422 for bad input)."""
    status = error.status
    body = render_text(request, name, {**extra, "error": error, "errors": problems_of(error)})
    return FormInvalid(body, status)


def redirect(url: str) -> Response:
    """Post/redirect/get: 303 so a reload never re-submits."""
    return RedirectResponse(url, status_code=303)


def path_to(request: Request, name: str, /, **params: str | int) -> str:
    """The path of a named route. A path, not ``url_for``'s absolute URL (built from the Host
    header the client sent): Location headers and links stay relative, as they always were."""
    return str(request.app.url_path_for(name, **params))


def redirect_to(
    request: Request, name: str, /, *, fragment: str = "", **params: str | int
) -> Response:
    """``redirect`` to a named route, so a moved path cannot leave a stale redirect behind."""
    return redirect(path_to(request, name, **params) + (f"#{fragment}" if fragment else ""))
