"""What a delivery attempt reports back to the store (shared by attempts and the DLQ)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..publish import PublishOptions
from .db import JSON

__all__ = ["AttemptResult", "CallbackFactory", "CallbackSpec"]


@dataclass
class AttemptResult:
    """What one delivery attempt got back (``status`` None = no HTTP response)."""

    status: int | None
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None
    non_retryable: bool = False
    #: Delay before the next attempt if one is due, computed by the delivery loop.
    retry_delay_ms: int = 0

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class CallbackSpec:
    url: str
    options: PublishOptions
    kind: str


#: (message, final state, dlq id) -> callback messages to publish atomically.
CallbackFactory = Callable[[JSON, AttemptResult, str, "str | None"], list[CallbackSpec]]
