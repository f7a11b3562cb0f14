"""The test command: ``python3 tests/run.py [pytest args]``.

Creates ``.venv`` with the test extras if needed (standard library only until then), makes sure
Debian's Chromium is there for the browser tests when it can be installed, and runs pytest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from comms import _bootstrap  # noqa: E402


def _ensure_chromium() -> None:
    if os.environ.get("CHROMIUM_PATH") or shutil.which("chromium"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("[tests] installing Debian's chromium for the browser tests", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=False, env=env)
    if not shutil.which("chromium"):
        print(
            "[tests] chromium is not installed: browser tests will be skipped "
            "(install Debian's 'chromium' package to run them)",
            file=sys.stderr,
        )


def main() -> int:
    if not _bootstrap.in_venv():
        _bootstrap.reexec("test", [str(Path(__file__).resolve()), *sys.argv[1:]])
    _ensure_chromium()
    os.chdir(ROOT)
    return subprocess.call([sys.executable, "-m", "pytest", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
