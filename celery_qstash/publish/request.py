"""What a call becomes and a transport sends: one QStash message, as pure data.

:class:`PublishRequest` is the one interface between the call path and the
transports (the official SDK, ``/v2/batch``, asyncio, the eager outbox); the
transports know nothing else of Celery or of the option table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_TASK_ID", "TASK_NAME_HEADER", "FlowControl", "PublishRequest", "TaskAttrs"]

#: Forwarded with every message that has a callback: the registered task name.
TASK_NAME_HEADER = "X-Celery-Task-Name"


#: Longest task id: QStash's label and deduplication id limit.
MAX_TASK_ID = 256


@dataclass(frozen=True)
class FlowControl:
    key: str
    rate: int | None = None
    period: str | None = None
    parallelism: int | None = None

    def as_sdk(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key}
        if self.rate is not None:
            out["rate"] = self.rate
            out["period"] = self.period or "1s"
        if self.parallelism is not None:
            out["parallelism"] = self.parallelism
        return out


@dataclass(frozen=True)
class PublishRequest:
    """Everything the transport needs for one QStash message. Pure data.

    ``authorization`` (``Bearer <AutoSend key>``) is excluded from ``repr``.
    """

    task_id: str
    task_name: str
    url: str
    body: dict[str, Any]
    #: ``Bearer <AutoSend key>`` for an email; None for a deferred task (the receiver
    #: checks QStash's signature instead).
    authorization: str | None = field(repr=False)
    headers: dict[str, str] = field(default_factory=dict)  # forwarded to the destination
    queue: str | None = None
    delay: int | None = None  # seconds
    not_before: int | None = None  # unix seconds
    retries: int | None = None
    retry_delay: str | None = None  # QStash expression, milliseconds over `retried`
    timeout: int | None = None  # seconds
    flow_control: FlowControl | None = None
    callback: str | None = None
    failure_callback: str | None = None
    deduplication_id: str | None = None
    label: str | None = None
    redact_headers: tuple[str, ...] = ()

    @property
    def sent_headers(self) -> dict[str, str]:
        """The headers QStash forwards to the destination, Authorization included."""
        if self.authorization is None:
            return self.headers
        return {**self.headers, "Authorization": self.authorization}

    @property
    def path(self) -> str:
        return self.url.split("://", 1)[-1].partition("/")[2]

    @property
    def body_text(self) -> str:
        """The body as the SDK sends it (``json.dumps``), serialised once per request."""
        text: str | None = self.__dict__.get("_body_text")
        if text is None:
            text = json.dumps(self.body)
            object.__setattr__(self, "_body_text", text)  # a cache, not a field
        return text


@dataclass(frozen=True)
class TaskAttrs:
    """The task attributes that shape a message; ``declared`` lists those the task set itself."""

    name: str
    max_retries: int | None = 3
    default_retry_delay: float = 180
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600
    retry_jitter: bool = True
    rate_limit: str | float | None = None
    retry_kwargs: Mapping[str, Any] = field(default_factory=dict)
    autoretry_for: tuple[type[BaseException], ...] = ()
    acks_late: bool = False
    declared: frozenset[str] = frozenset()
    #: The body runs at delivery (a deferred task), not at call time.
    deferred: bool = False
