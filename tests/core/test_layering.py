"""Which package may import which: the drafts service queues its notices through
``comms.outbox.notify``, so notify imports nothing of ``comms.drafts``, not even inside a function
or for typing; and ``comms.rendering`` (templates, the registry, the render context) is below
both, importing no domain package."""

from __future__ import annotations

import ast
from pathlib import Path

import comms

COMMS = Path(comms.__file__).resolve().parent


def _imported(path: Path) -> set[str]:
    """What ``path`` imports, anywhere in the file (top level, functions, TYPE_CHECKING), as
    dotted names: ``from comms.enums import Platform`` is ``comms.enums.Platform``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _under(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(f"{p}.") for p in packages)


def test_notify_imports_nothing_of_drafts() -> None:
    imported = _imported(COMMS / "outbox" / "notify.py")
    assert {name for name in imported if _under(name, "comms.drafts")} == set()


def test_rendering_imports_no_domain_package() -> None:
    allowed = ("comms.rendering", "comms.enums", "comms.errors", "comms.settings")
    for path in sorted((COMMS / "rendering").glob("*.py")):
        ours = {n for n in _imported(path) if _under(n, "comms") and n != "comms"}
        assert {n for n in ours if not _under(n, *allowed)} == set(), path.name
