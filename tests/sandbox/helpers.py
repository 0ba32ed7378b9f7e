"""Request bodies and constants shared by the sandbox tests."""

from __future__ import annotations

import warnings
from typing import Any

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 for its TestClient; plain httpx works the same here.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

__all__ = ["API_KEY", "AUTH", "START", "TestClient", "bulk", "email"]

API_KEY = "AS_test_key_0123456789abcdef"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
START = 1_800_000_000.0


def email(**overrides: Any) -> dict[str, Any]:
    """A valid ``POST /v1/mails/send`` body; ``overrides`` replace or (with None) drop keys."""
    body: dict[str, Any] = {
        "to": {"email": "jane@example.com", "name": "Jane Smith"},
        "from": {"email": "hello@company.com", "name": "Company"},
        "subject": "Welcome!",
        "html": "<h1>Welcome</h1>",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def bulk(**overrides: Any) -> dict[str, Any]:
    """A valid ``POST /v1/mails/bulk`` body."""
    body: dict[str, Any] = {
        "recipients": [
            {"email": "a@example.com", "name": "A"},
            {"email": "b@example.com"},
        ],
        "from": {"email": "hello@company.com"},
        "subject": "News",
        "text": "Hello",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}
