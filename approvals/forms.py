"""The panel's forms, declared once: which fields a page posts and what each must hold.

A form class lists its inputs as class attributes (the way Fief's WTForms forms do); each input
knows the name the browser posts (a contract with the templates, the tests and ``panel.js``),
how to read what was typed, and how to turn it into a typed value or say what is wrong.
``Form.parse`` never raises: it returns a ``Submitted`` holding the typed form or the problems
keyed by field name, and always the posted data, so a page can be rendered again with what
the person typed and each error next to its field (``web.form_error``, 422). Forms only check
the shape of the input; the services still judge the content (``comms.text.clean_text``,
names, rules), and ``BodyLimitMiddleware`` has already refused bytes that are not UTF-8.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar, overload

from fastapi import Request
from starlette.datastructures import FormData

from comms.db import ROW_ID_MAX
from comms.drafts.payload import DraftOptions
from comms.errors import FieldProblem, InvalidInput

if TYPE_CHECKING:
    from comms.drafts.models import Draft

# What a panel form may hold: no files, and a generous number of fields for long templates.
FORM_LIMITS: dict[str, int] = {"max_files": 0, "max_fields": 400, "max_part_size": 200_000}

R = TypeVar("R")
T = TypeVar("T")
F_co = TypeVar("F_co", bound="Form", covariant=True)


class Invalid(Exception):
    """Raised by an input's ``convert``: what is wrong, reported under the input's field."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def parse_when(value: str, field: str) -> datetime | None:
    """A UTC moment as people type it (``2030-01-01 12:00``, ``...Z``, ``... UTC``); empty is
    None. Shared with the admin pages (token expiry), which report it under their own field."""
    text = value.strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" UTC", ""))
    except ValueError:
        raise InvalidInput(FieldProblem(field, "use YYYY-MM-DD HH:MM (UTC)")) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment.utcoffset() != UTC.utcoffset(None):
        raise InvalidInput(FieldProblem(field, "must be UTC"))
    return moment


def _one(data: FormData, key: str) -> str:
    value = data.get(key)
    return value if isinstance(value, str) else ""


# ---------------------------------------------------------------------------------- inputs


class Input(Generic[R, T]):
    """One declared field. ``raw`` is what was posted, as the page shows it again (it never
    fails); ``convert`` makes the typed value or raises ``Invalid``. Errors are reported under
    ``report_as`` when the error has long had another name than the posted field."""

    def __init__(self, key: str, *, report_as: str | None = None) -> None:
        self.key = key
        self.field = report_as or key
        self.attr = key

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.attr = name

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, obj: Form, owner: type[Any]) -> T: ...
    def __get__(self, obj: Form | None, owner: type[Any]) -> Self | T:
        if obj is None:
            return self
        value: T = obj._values[self.attr]
        return value

    def raw(self, data: FormData) -> R:
        raise NotImplementedError

    def convert(self, raw: R) -> T:
        raise NotImplementedError


class Text(Input[str, str]):
    """Free text, passed on as typed (cut at ``cut`` characters: a lookup key, not content).
    ``required`` is the problem reported when it is empty."""

    def __init__(
        self,
        key: str,
        *,
        cut: int | None = None,
        required: str | None = None,
        report_as: str | None = None,
    ) -> None:
        super().__init__(key, report_as=report_as)
        self.cut = cut
        self.required = required

    def raw(self, data: FormData) -> str:
        value = _one(data, self.key)
        return value[: self.cut] if self.cut is not None else value

    def convert(self, raw: str) -> str:
        if self.required is not None and not raw:
            raise Invalid(self.required)
        return raw


class Checkbox(Input[str, bool]):
    """A checkbox: on when the browser sent ``on``."""

    def raw(self, data: FormData) -> str:
        return _one(data, self.key)

    def convert(self, raw: str) -> bool:
        return raw == "on"


class TriState(Input[str, bool | None]):
    """``default`` (or empty) leaves the choice to the destination; ``yes`` or ``no`` decide."""

    def raw(self, data: FormData) -> str:
        return _one(data, self.key)

    def convert(self, raw: str) -> bool | None:
        if raw in ("", "default"):
            return None
        if raw in ("yes", "no"):
            return raw == "yes"
        raise Invalid("choose default, yes or no")


class UtcMoment(Input[str, datetime | None]):
    """A moment in UTC (see ``parse_when``); empty means none."""

    def raw(self, data: FormData) -> str:
        return _one(data, self.key)

    def convert(self, raw: str) -> datetime | None:
        try:
            return parse_when(raw, self.field)
        except InvalidInput as exc:
            raise Invalid(exc.problems[0].problem) from None


class RowRef(Input[str, int | None]):
    """The id of a row (hidden field); empty means none. Whether the row exists is the route's
    lookup (a 404 naming the field), not the form's."""

    def __init__(self, key: str, *, problem: str, report_as: str | None = None) -> None:
        super().__init__(key, report_as=report_as)
        self.problem = problem

    def raw(self, data: FormData) -> str:
        return _one(data, self.key)

    def convert(self, raw: str) -> int | None:
        value = raw.strip()
        if not value:
            return None
        if not value.isdigit() or not 1 <= int(value) <= ROW_ID_MAX:
            raise Invalid(self.problem)
        return int(value)


class Number(Input[str, int | None]):
    """An integer the page put in a hidden field; None when absent or unreadable, so the form
    decides (in ``check``) when it is needed."""

    def raw(self, data: FormData) -> str:
        return _one(data, self.key)

    def convert(self, raw: str) -> int | None:
        try:
            return int(raw)
        except ValueError:
            return None


class Many(Input[list[str], list[str]]):
    """Every value of a repeated field (checkboxes), in the order posted."""

    def raw(self, data: FormData) -> list[str]:
        return [v for v in data.getlist(self.key) if isinstance(v, str)]

    def convert(self, raw: list[str]) -> list[str]:
        return raw


class Prefixed(Input[dict[str, str], dict[str, str]]):
    """Every field whose name starts with ``key`` (a template's variables: ``var.summary``),
    keyed by the rest of the name."""

    def raw(self, data: FormData) -> dict[str, str]:
        cut = len(self.key)
        posted = data.multi_items()
        return {k[cut:]: v for k, v in posted if k.startswith(self.key) and isinstance(v, str)}

    def convert(self, raw: dict[str, str]) -> dict[str, str]:
        return raw


# ----------------------------------------------------------------------------------- forms


class Form:
    """A declared form; subclasses list their ``Input``s as class attributes."""

    inputs: ClassVar[dict[str, Input[Any, Any]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, Input[Any, Any]] = {}
        for klass in reversed(cls.__mro__):  # the base's fields first, in declaration order
            found.update({k: v for k, v in vars(klass).items() if isinstance(v, Input)})
        cls.inputs = found

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._values!r})"

    def check(self) -> list[FieldProblem]:
        """Rules across fields, run once every field converted."""
        return []

    @classmethod
    def parse(cls, data: FormData) -> Submitted[Self]:
        values: dict[str, Any] = {}
        problems: list[FieldProblem] = []
        for name, spec in cls.inputs.items():
            try:
                values[name] = spec.convert(spec.raw(data))
            except Invalid as exc:
                problems.append(FieldProblem(spec.field, exc.problem))
        form = None if problems else cls(values)
        if form is not None:
            problems = form.check()
        return Submitted(data, None if problems else form, problems)

    @classmethod
    async def read(cls, request: Request) -> Submitted[Self]:
        """Parse the request's form body (within ``FORM_LIMITS``)."""
        return cls.parse(await request.form(**FORM_LIMITS))


class Submitted(Generic[F_co]):
    """A parsed form: the typed form when every field is valid, else the problems by field;
    the posted data either way, to show the page again as it was typed."""

    def __init__(self, data: FormData, form: F_co | None, problems: list[FieldProblem]) -> None:
        self.data = data
        self.form = form
        self.problems = problems

    @property
    def errors(self) -> dict[str, str]:
        """The first problem of each field, keyed by field name (as the templates look up)."""
        found: dict[str, str] = {}
        for problem in self.problems:
            found.setdefault(problem.field, problem.problem)
        return found

    def valid(self) -> F_co:
        """The typed form, or InvalidInput naming every field that is wrong (422)."""
        if self.form is None:
            raise InvalidInput(self.problems)
        return self.form

    def raw(self, spec: Input[R, Any]) -> R:
        """What was posted for ``spec`` (e.g. ``EditorForm.variables``), valid or not."""
        return spec.raw(self.data)


# ------------------------------------------------------------------------ the draft editor


class EditorForm(Form):
    """What the draft editor posts; the live preview, new drafts and edits share it."""

    template = Text("template", cut=64)
    variables = Prefixed("var.")
    destinations = Many("destinations")
    pin = TriState("options.pin")
    silent = TriState("options.silent")
    publish_at = UtcMoment("options.publish_at")
    link_previews = Checkbox("options.link_previews")
    action = Text("action")

    @property
    def options(self) -> DraftOptions:
        return DraftOptions(
            pin=self.pin,
            silent=self.silent,
            link_previews=self.link_previews,
            publish_at=self.publish_at,
        )


class PreviewForm(EditorForm):
    """The live preview (``panel.js`` posts the editor's form with the incident's key)."""

    incident = Text("incident", cut=32)


class NewDraftForm(EditorForm):
    """A new draft; ``correction_of`` is set when it corrects a published announcement."""

    correction_of = RowRef("correction_of", problem="must be a draft id")


class EditDraftForm(EditorForm):
    """A new version of a draft; ``expected_version`` is the version the editor showed."""

    expected_version = Number("expected_version")

    def check(self) -> list[FieldProblem]:
        # A preview saves nothing, so it needs no version; saving without one could overwrite
        # a version the person never saw.
        if self.action != "preview" and self.expected_version is None:
            return [FieldProblem("version", "missing; reload the page")]
        return []


OPTION_INPUTS: dict[str, Input[str, Any]] = {
    "pin": EditorForm.pin,
    "silent": EditorForm.silent,
    "publish_at": EditorForm.publish_at,
    "link_previews": EditorForm.link_previews,
}


def posted_options(submitted: Submitted[EditorForm]) -> dict[str, str]:
    """The editor's option fields as they were posted (to show the form again)."""
    return {name: submitted.raw(spec) for name, spec in OPTION_INPUTS.items()}


def stored_options(draft: Draft | None) -> dict[str, str]:
    """The editor's option fields for a saved draft (or blank for a new one): what
    ``EditorForm`` would read back as the same options."""
    if draft is None:
        return dict.fromkeys(OPTION_INPUTS, "")
    opts = draft.options

    def tri(value: Any) -> str:
        return "" if value is None else ("yes" if value else "no")

    return {
        "pin": tri(opts.get("pin")),
        "silent": tri(opts.get("silent")),
        "publish_at": (opts.get("publish_at") or "").replace("+00:00", ""),
        "link_previews": "on" if opts.get("link_previews") else "",
    }


# ----------------------------------------------------------------- the review page, deliveries


class ApproveForm(Form):
    """Approving: the content hash of the version on screen, and a step-up credential."""

    expected_hash = Text(
        "expected_hash", required="missing; reload the page", report_as="content_hash"
    )
    credential = Text("credential")


class RejectForm(Form):
    """Rejecting; the service asks for the reason (``clean_text``), the hash is optional."""

    reason = Text("reason")
    expected_hash = Text("expected_hash")


class WithdrawForm(Form):
    reason = Text("reason")


class DeliveryActionForm(Form):
    """Retry, resend or dismiss a delivery; the note goes to the audit trail."""

    note = Text("note")
