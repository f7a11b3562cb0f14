"""The set of templates the service knows, loaded once from a directory of ``*.j2`` files."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import comms
from comms.errors import NotFound
from comms.rendering.spec import TemplateLoadError, TemplateSpec, parse_template

if TYPE_CHECKING:
    from comms.settings import Settings


def default_templates_dir() -> Path:
    """The packaged copy (``comms/_templates``, in a wheel) if present, else the repo's."""
    package = Path(comms.__file__).resolve().parent
    packaged = package / "_templates"
    if packaged.is_dir():
        return packaged
    return package.parent / "templates"


class TemplateRegistry:
    """Templates by name. Loading checks every file, so a broken one stops start-up."""

    def __init__(self, specs: dict[str, TemplateSpec], directory: Path | None = None) -> None:
        self._specs = dict(sorted(specs.items()))
        self.directory = directory

    @classmethod
    def default(cls, templates_dir: Path | None = None) -> TemplateRegistry:
        return cls.load(templates_dir or default_templates_dir())

    @classmethod
    def load(cls, directory: Path) -> TemplateRegistry:
        if not directory.is_dir():
            raise TemplateLoadError(f"templates directory {str(directory)!r} does not exist")
        specs: dict[str, TemplateSpec] = {}
        for path in sorted(directory.glob("*.j2")):
            try:
                source = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise TemplateLoadError(f"{path}: cannot read: {exc}") from None
            try:
                specs[path.stem] = parse_template(path.stem, source)
            except TemplateLoadError as exc:
                raise TemplateLoadError(f"{path}: {exc}") from None
        if not specs:
            raise TemplateLoadError(f"templates directory {str(directory)!r} has no *.j2 files")
        return cls(specs, directory)

    def list(self, audience: Literal["public", "internal"] | None = None) -> list[TemplateSpec]:
        """Templates sorted by name, optionally only one audience."""
        return [s for s in self._specs.values() if audience is None or s.audience == audience]

    def get(self, name: str) -> TemplateSpec:
        try:
            return self._specs[name]
        except KeyError:
            known = ", ".join(self._specs)
            raise NotFound(
                f"unknown template {name!r} (known: {known})", field="template"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)


def registry_for(settings: Settings) -> TemplateRegistry:
    """The templates of ``settings.templates_dir``, loaded (and checked) once per directory."""
    return _loaded(settings.templates_dir)


@lru_cache(maxsize=8)
def _loaded(directory: Path | None) -> TemplateRegistry:
    return TemplateRegistry.default(directory)
