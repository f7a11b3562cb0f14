"""FastAPI approval panel and JSON API."""
