"""``python3 -m comms ...``: bootstrap the virtual environment, then run the CLI in it."""

from __future__ import annotations

import sys

from comms import _bootstrap

if __name__ == "__main__":
    if not _bootstrap.in_venv():
        _bootstrap.reexec("", ["-m", "comms", *sys.argv[1:]])
    from comms.cli import main

    main(prog_name="comms")
