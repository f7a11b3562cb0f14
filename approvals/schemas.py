"""Request and response models of the JSON API (``/api/v1``), and its one error schema."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from comms.db import ROW_ID_MAX
from comms.enums import Severity
from comms.text import text_problem


def _typed_text(multiline: bool) -> AfterValidator:
    def check(value: str) -> str:
        if multiline:  # as the panel's forms: \r\n and a lone \r are line breaks
            value = value.replace("\r\n", "\n").replace("\r", "\n")
        problem = text_problem(value, multiline=multiline)
        if problem is not None:
            raise ValueError(problem)
        return value

    return AfterValidator(check)


# What people may type: no control characters (but tab and line breaks where text is multi-line)
# and no lone surrogates. The pattern documents it in /openapi.json; the validator enforces it.
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
LINE_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
# The same, with at least one character that is not a space (a required value).
_VISIBLE = r"[^\s\x00-\x1f\x7f-\x9f]"
TEXT_REQUIRED = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*" + _VISIBLE + TEXT_PATTERN[1:]
LINE_REQUIRED = r"^[^\x00-\x1f\x7f-\x9f]*" + _VISIBLE + LINE_PATTERN[1:]
Text = Annotated[str, _typed_text(True), Field(json_schema_extra={"pattern": TEXT_PATTERN})]
Line = Annotated[str, _typed_text(False), Field(json_schema_extra={"pattern": LINE_PATTERN})]
RequiredText = Annotated[
    str, _typed_text(True), Field(json_schema_extra={"pattern": TEXT_REQUIRED})
]
RequiredLine = Annotated[
    str, _typed_text(False), Field(json_schema_extra={"pattern": LINE_REQUIRED})
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProblemOut(BaseModel):
    field: str
    problem: str


class ErrorDetail(BaseModel):
    code: str = Field(
        description="invalid_input, not_found, conflict, rule_violation, "
        "forbidden, unauthenticated, ..."
    )
    message: str
    field: str | None = Field(description="The input that was wrong, if any")
    rule: str | None = Field(description="The policy rule that refused, if any")
    problems: list[ProblemOut]


class ErrorOut(BaseModel):
    error: ErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": text}
    for status, text in {
        400: "Malformed request (e.g. a body that is not JSON)",
        401: "No valid API token",
        403: "Scope or role does not allow this",
        404: "Unknown id",
        409: "Refused by a rule, or changed since you read it",
        413: "Request body too large",
        422: "Invalid input (names each field)",
        429: "Too many failed second-factor attempts; retry after Retry-After seconds",
    }.items()
}


class RoleOut(BaseModel):
    role: str
    user: str
    acknowledged_at: datetime | None


class IncidentOut(BaseModel):
    key: str
    title: str
    summary: str
    severity: Severity
    status: str
    opened_at: datetime
    opened_by: str
    leader: str | None
    last_public_update_at: datetime | None
    roles: list[RoleOut]


class IncidentCreate(Strict):
    title: RequiredLine = Field(min_length=1, max_length=200)
    severity: Severity
    summary: Text = Field(default="", max_length=5000)


class DraftOptionsIn(Strict):
    pin: bool | None = None
    silent: bool | None = None
    link_previews: bool = False
    publish_at: datetime | None = Field(default=None, description="UTC; empty = when approved")


class DraftCreate(Strict):
    incident: str = Field(min_length=1, max_length=32, description="Incident key")
    template: str = Field(min_length=1, max_length=64)
    variables: dict[str, str] = Field(default_factory=dict, max_length=50)
    destinations: list[str] = Field(min_length=1, max_length=50)
    options: DraftOptionsIn = Field(default_factory=DraftOptionsIn)
    correction_of: int | None = Field(
        default=None,
        ge=1,
        le=ROW_ID_MAX,
        description="Draft id of the published announcement (same incident) this one corrects",
    )


class DraftEdit(Strict):
    expected_version: int = Field(
        ge=1, le=1_000_000, description="Refused with 409 if the draft moved on"
    )
    variables: dict[str, str] | None = Field(default=None, max_length=50)
    destinations: list[str] | None = Field(default=None, min_length=1, max_length=50)
    options: DraftOptionsIn | None = None


class ApproveIn(Strict):
    expected_hash: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="The content hash you reviewed"
    )


class RejectIn(Strict):
    reason: RequiredText = Field(min_length=1, max_length=2000)
    expected_hash: str = Field(pattern=r"^[0-9a-f]{64}$")


class ApprovalOut(BaseModel):
    by: str
    decision: Literal["approve", "reject"]
    version: int
    content_hash: str
    at: datetime
    reason: str
    counts: bool
    why: str


class QuorumOut(BaseModel):
    needed: int
    have: int
    met: bool
    blocked: str | None


class WarningOut(BaseModel):
    code: str
    message: str
    field: str


class DeliveryOut(BaseModel):
    id: int
    destination: str
    platform: str
    state: str
    attempts: int
    version: int
    message_ids: list[str]
    sent_at: datetime | None
    last_error: str


class RenderedOut(BaseModel):
    discord: list[str]
    telegram: list[str]


class DraftOut(BaseModel):
    id: int
    incident: str
    severity: Severity
    template: str
    version: int
    status: str
    content_hash: str
    author: str
    last_editor: str
    destinations: list[str]
    variables: dict[str, str]
    options: dict[str, Any]
    publish_at: datetime | None
    correction_of: int | None
    rendered: RenderedOut
    payload: dict[str, Any]
    approvals: list[ApprovalOut]
    quorum: QuorumOut
    warnings: list[WarningOut]
    rejection_reason: str
    deliveries: list[DeliveryOut]


class DraftSummary(BaseModel):
    id: int
    incident: str
    template: str
    version: int
    status: str
    content_hash: str
    author: str
    updated_at: datetime


class DestinationOut(BaseModel):
    id: int
    name: str
    platform: str
    target: str
    visibility: str
    enabled: bool
    compromised: bool
    pin: bool
    silent: bool
    crosspost: bool
    allow_everyone: bool
    thread_updates: bool


class VariableOut(BaseModel):
    name: str
    type: str
    required: bool
    label: str
    help: str
    choices: list[str]
    max_length: int


class TemplateOut(BaseModel):
    name: str
    title: str
    description: str
    audience: str
    needs_next_update: bool
    mentions_everyone: bool
    variables: list[VariableOut]


class MeOut(BaseModel):
    username: str
    roles: list[str]
    scopes: list[str]
    two_factor: bool


_HOST = r"([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
# Printable ASCII but space: not ``\S``, which JSON Schema's (ECMA) regexes, Python's and
# pydantic's (Rust) read differently (U+0085 is whitespace to the last two only).
_URL_CHAR = "[!-~]"


class AddressIn(Strict):
    type: Literal["address"]
    value: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$", description="EVM address")


class TxIn(Strict):
    type: Literal["tx"]
    value: str = Field(pattern=r"^0x[0-9a-fA-F]{64}$", description="Transaction hash")


class UrlIn(Strict):
    type: Literal["url"]
    value: str = Field(max_length=2000, pattern=rf"^https?://{_HOST}([/?#]{_URL_CHAR}*)?$")


class DomainIn(Strict):
    type: Literal["domain"]
    value: str = Field(max_length=253, pattern=rf"^{_HOST}$", description="IDNs as xn--")


EntityIn = Annotated[AddressIn | TxIn | UrlIn | DomainIn, Field(discriminator="type")]


class EntityOut(BaseModel):
    type: str
    value: str
    flags: list[str]


class DetectionIn(Strict):
    """A monitoring system's alert (POST /api/v1/detections)."""

    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Your id for this alert: a repeated POST with the same id changes nothing",
    )
    title: RequiredLine = Field(min_length=1, max_length=200)
    text: Text = Field(default="", max_length=4000)
    severity: Literal["critical", "high", "warning", "info"] = "warning"
    source: Line = Field(
        default="", max_length=64, description="The monitoring system's name (e.g. forta)"
    )
    url: str | None = Field(
        default=None,
        max_length=2000,
        pattern=rf"^https?://{_URL_CHAR}+$",
        description="http(s), in ASCII: percent-encode anything else",
    )
    entities: list[EntityIn] = Field(default_factory=list, max_length=50)


class ReporterOut(BaseModel):
    id: str
    name: str
    created_at: datetime | None


class DetectionOut(BaseModel):
    id: int
    reference: str = Field(description="R- and the id: what a reporter is told to quote")
    source: str = Field(description="discord, telegram, webhook, alertmanager or panel")
    origin: str
    external_id: str | None
    title: str
    text: str
    severity: str | None
    status: str
    url: str
    reporter: ReporterOut
    location: dict[str, str]
    message_url: str
    entities: list[EntityOut]
    details: dict[str, Any] = Field(description="What a monitoring system sent beside the text")
    submitted_by: str | None
    received_at: datetime


class _AlertmanagerModel(BaseModel):
    # Alertmanager's payload as it is: fields it adds in later versions are accepted.
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class AlertmanagerAlert(_AlertmanagerModel):
    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict, max_length=200)
    annotations: dict[str, str] = Field(default_factory=dict, max_length=200)
    starts_at: str = Field(alias="startsAt", max_length=64)
    ends_at: str = Field(default="", alias="endsAt", max_length=64)
    generator_url: str = Field(default="", alias="generatorURL", max_length=4000)
    fingerprint: str = Field(min_length=1, max_length=128)


class AlertmanagerIn(_AlertmanagerModel):
    """Prometheus Alertmanager's webhook payload, version 4 (``webhook_configs``)."""

    version: Literal["4"]
    group_key: str = Field(alias="groupKey", min_length=1, max_length=10_000)
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts", ge=0)
    status: Literal["firing", "resolved"]
    receiver: str = Field(default="", max_length=1000)
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL", max_length=4000)
    alerts: list[AlertmanagerAlert] = Field(max_length=1000)


class DetectionBatchIn(Strict):
    """Several alerts in one POST (POST /api/v1/detections/batch): one transaction, in order."""

    detections: list[DetectionIn] = Field(min_length=1, max_length=500)


class DetectionBatchItemOut(BaseModel):
    created: bool = Field(description="False: this id had already been received")
    detection: DetectionOut


class DetectionBatchOut(BaseModel):
    detections: list[DetectionBatchItemOut]


class AlertmanagerOut(BaseModel):
    created: list[int] = Field(description="Detections made from alerts seen for the first time")
    unchanged: list[int] = Field(description="Alerts already received: nothing changed")
    resolved: list[int] = Field(description="Detections marked resolved by this notification")
