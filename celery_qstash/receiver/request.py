"""The plain request and response the receiver speaks, whatever framework carries them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: A callback carries AutoSend's answer and the source body (QStash caps messages at 1 MB,
#: base64 grows that by a third); anything larger is not a QStash callback.
MAX_BODY_BYTES = 4 * 1024 * 1024

EMAIL_CALLBACK = "email.callback"
EMAIL_FAILURE = "email.failure"


@dataclass(frozen=True)
class ReceivedRequest:
    """What an adapter hands the core: header names are matched case-insensitively."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None


@dataclass(frozen=True)
class ReceiverResponse:
    status: int
    payload: dict[str, Any]
    #: Extra response headers (``Retry-After``, ``Upstash-NonRetryable-Error``).
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def content(self) -> bytes:
        return json.dumps(self.payload).encode()

    @property
    def reason(self) -> str:
        return _REASONS.get(self.status, "OK")


def refused_early(request: ReceivedRequest, max_body: int, what: str) -> ReceiverResponse | None:
    """405 for anything but ``POST``, 413 for a body over ``max_body``: the checks every
    handler makes before it reads the body (``what`` names the deliveries it takes)."""
    if request.method.upper() != "POST":
        return ReceiverResponse(405, {"error": f"{what} are POST requests"})
    if len(request.body) > max_body:
        return ReceiverResponse(413, {"error": f"body over {max_body} bytes"})
    return None


_REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 405: "Method Not Allowed",
    409: "Conflict", 413: "Content Too Large", 489: "Non-Retryable Error",
    500: "Internal Server Error", 503: "Service Unavailable",
}


@dataclass(frozen=True)
class Delivery:
    """A verified, decoded request of one kind."""

    kind: str
    message_id: str
    body: dict[str, Any]
    request: ReceivedRequest = field(repr=False)
