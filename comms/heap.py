"""Long-running processes take what they built at start out of the garbage collector's way."""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Exempt every object alive now from future collections.

    Measured on the panel: each full (generation 2) collection walked the ~250,000 objects that
    importing and starting had made (SQLAlchemy's mappers, FastAPI's routes, pydantic's models,
    the templates), about 150 ms with every request waiting, every few hundred requests: that
    was the panel's p99 latency. Those objects live as long as the process; frozen, a full
    collection walks only what was made since (about 0.5 ms). Garbage is collected first so
    none of it is kept for ever.
    """
    gc.collect()
    gc.freeze()
