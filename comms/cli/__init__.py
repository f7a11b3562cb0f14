"""The ``comms`` command: the operator's tool, and (in ``runtime``) the composition root.

One module per command group; ``base`` holds what they share (the root group, one transaction
per command, exit codes). Importing this package registers every command.
"""

from __future__ import annotations

from comms.cli import (  # noqa: F401 - each module registers its commands on ``cli``
    audit,
    clusters,
    database,
    deliveries,
    destinations,
    detections,
    drafts,
    incidents,
    runtime,
    tasks,
    templates,
    tokens,
    users,
)
from comms.cli.base import cli

__all__ = ["cli", "main"]


def main(prog_name: str = "comms") -> None:
    cli(prog_name=prog_name)
