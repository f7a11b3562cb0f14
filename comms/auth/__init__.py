"""Panel and API authentication: sessions, API tokens, TOTP, login throttling.

No web code lives here (``approvals`` is the web layer); these are the models and services the
panel, the API and the CLI share, so a rule (e.g. "disabling a user ends their sessions") holds
whichever door is used.
"""
