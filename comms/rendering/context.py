"""The render context this service gives its templates, built from the settings (and the
incident, when a message is about one), the same way wherever a message is rendered: a
draft's preview and its frozen version, and the internal notices about it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from comms.enums import Severity
from comms.rendering.engine import OfficialLink, RenderContext

if TYPE_CHECKING:
    from comms.settings import Settings


class IncidentFacts(Protocol):
    """What a template is told about an incident (``comms.incidents.models.Incident`` is one)."""

    @property
    def key(self) -> str: ...

    @property
    def title(self) -> str: ...

    @property
    def severity(self) -> str: ...


def official_links(settings: Settings) -> tuple[OfficialLink, ...]:
    """The channels to trust (``COMMS_OFFICIAL_LINKS``), in the order configured."""
    return tuple(OfficialLink(label, url) for label, url in settings.official_links.items())


def render_context(settings: Settings, incident: IncidentFacts | None = None) -> RenderContext:
    """The protocol's name and official links, and the incident's key, title and severity."""
    if incident is None:
        return RenderContext(
            protocol_name=settings.protocol_name, official_links=official_links(settings)
        )
    return RenderContext(
        protocol_name=settings.protocol_name,
        incident_key=incident.key,
        incident_title=incident.title,
        severity=Severity(incident.severity),
        official_links=official_links(settings),
    )
