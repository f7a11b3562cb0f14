"""Incident community-comms service: approved announcements to Discord and Telegram.

This module must stay importable with the standard library alone: ``python3 -m comms``
bootstraps the virtual environment before anything else is imported.
"""

__version__ = "0.1.0"
