"""`comms worker` processes for the crash test, forked from a server that has already imported
the service.

The test kills and restarts a worker at least 50 times per run; a fresh interpreter spends about
a second importing SQLAlchemy, discord.py and python-telegram-bot before it sends anything, so
each restart here forks a process that has them imported. Everything after the imports is what
`comms worker` does on a fresh start (settings from the environment, migrations, recovery,
claiming), and the process dies by a real SIGKILL.
"""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess

PRELOAD = ["comms.cli", "comms.migrate", "comms.outbox.worker", "bots.publishers"]


def _worker_main(env: dict[str, str]) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.environ.clear()
    os.environ.update(env)
    from comms.cli import cli

    cli(args=["worker"], prog_name="comms")


def _context() -> ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    assert isinstance(context, ForkServerContext)
    context.set_forkserver_preload(PRELOAD)
    return context


def spawn(env: dict[str, str]) -> BaseProcess:
    """Start `comms worker` with exactly ``env`` as its environment."""
    process = _context().Process(target=_worker_main, args=(env,), daemon=True)
    process.start()
    return process
