"""Local emulators of the Discord and Telegram APIs, with a control API and a viewer.

``async with Sandbox() as sb:`` in tests and the demo; ``run()`` for ``comms sandbox``.
See docs/SANDBOX.md.
"""

from .limits import SandboxLimits
from .server import Sandbox, run

__all__ = ["Sandbox", "SandboxLimits", "run"]
