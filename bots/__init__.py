"""Discord and Telegram adapters, and the platform sandbox."""
