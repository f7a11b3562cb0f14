"""Create and refresh the project's virtual environment using the standard library only.

The README's two commands run on a machine that has nothing but ``python3``; this module is
what makes that true. It installs the project (editable) into ``.venv`` and re-executes the
caller there. A stamp of ``pyproject.toml`` avoids reinstalling on every run.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("COMMS_VENV", ROOT / ".venv"))


def venv_python() -> Path:
    return VENV / "bin" / "python"


def _stamp(extras: str) -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update(extras.encode())
    return digest.hexdigest()


def in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def ensure(extras: str = "") -> Path:
    """Make sure ``.venv`` exists with the project installed; return its python."""
    python = venv_python()
    stamp_file = VENV / ".comms-installed"
    wanted = _stamp(extras)
    if not python.exists():
        print(f"[bootstrap] creating {VENV}", file=sys.stderr, flush=True)
        venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
    installed = stamp_file.read_text().split() if stamp_file.exists() else []
    # A venv with the test extras also satisfies a plain install.
    if wanted not in installed and not (
        extras == "" and len(installed) > 0 and _has_all(installed)
    ):
        target = f"{ROOT}[{extras}]" if extras else str(ROOT)
        print(
            f"[bootstrap] installing {target} (about a minute the first time)",
            file=sys.stderr,
            flush=True,
        )
        subprocess.run(  # noqa: S603 - our own venv's pip, fixed arguments
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-e",
                target,
            ],
            check=True,
        )
        stamp_file.write_text("\n".join([*installed, wanted]))
    return python


def _has_all(installed: list[str]) -> bool:
    return _stamp("test") in installed


def reexec(extras: str, argv: list[str]) -> None:
    """Run ``argv`` with the venv's python, installing first if needed."""
    python = ensure(extras)
    os.execv(str(python), [str(python), *argv])  # noqa: S606 - re-exec in the venv
