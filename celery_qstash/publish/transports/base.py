"""The one seam between building a message and sending it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..request import PublishRequest

__all__ = ["PublishResult", "Transport"]


@dataclass(frozen=True)
class PublishResult:
    message_id: str
    deduplicated: bool = False
    #: What the destination answered, when the transport knows it (eager mode only).
    response: dict[str, Any] | None = field(default=None)


class Transport(Protocol):
    def publish(
        self,
        request: PublishRequest,
        *,
        retry: bool = True,
        retry_policy: dict[str, Any] | None = None,
    ) -> PublishResult:
        """Hand ``request`` over; raise :class:`~celery_qstash.errors.PublishError` on failure."""
