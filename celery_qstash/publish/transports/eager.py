"""Eager mode's transport: an in-process outbox, nothing on the network.

Like Django's ``mail.outbox``: each entry is a copy of the validated request, and
the response is shaped like AutoSend's, so code that reads ``emailId`` works in tests.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, overload

from ...email import AnyEmail, coerce_email
from ..request import PublishRequest
from .base import PublishResult

__all__ = [
    "EagerTransport",
    "Outbox",
    "SentEmail",
    "autosend_success",
    "eager_forced",
    "force_eager",
    "outbox",
]


def autosend_success(body: dict[str, Any], *, now: datetime | None = None) -> dict[str, Any]:
    """AutoSend's 200 response ``data`` for this request body."""
    queued_at = (now or datetime.now(timezone.utc)).isoformat().replace("+00:00", "Z")
    if "recipients" in body:
        count = len(body["recipients"])
        return {
            "batchId": str(uuid.uuid4()),
            "totalRecipients": count,
            "successCount": count,
            "failedCount": 0,
        }
    total = 1 + len(body.get("cc") or ()) + len(body.get("bcc") or ())
    return {
        # 24 random hex digits, as AutoSend's ids look (os.urandom: a uuid4 costs more).
        "emailId": os.urandom(12).hex(),
        "message": "Email queued successfully.",
        "status": "queued",
        "queuedAt": queued_at,
        "totalRecipients": total,
    }


@dataclass(frozen=True)
class SentEmail:
    """One email eager mode 'sent': the exact request, and the response it got."""

    request: PublishRequest
    message_id: str
    response: dict[str, Any]

    @property
    def email(self) -> AnyEmail:
        return coerce_email(self.request.body)

    @property
    def task_id(self) -> str:
        return self.request.task_id

    @property
    def to(self) -> list[str]:
        body = self.request.body
        if "recipients" in body:
            return [r["email"] for r in body["recipients"]]
        return [body["to"]["email"]]

    @property
    def subject(self) -> str | None:
        value = self.request.body.get("subject")
        return value if isinstance(value, str) else None


class Outbox:
    """A list-like record of eagerly sent emails (thread-safe), with ``clear()``."""

    def __init__(self) -> None:
        self._items: list[SentEmail] = []
        self._lock = threading.Lock()

    def append(self, item: SentEmail) -> None:
        with self._lock:
            self._items.append(item)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[SentEmail]:
        return iter(list(self._items))

    @overload
    def __getitem__(self, index: int) -> SentEmail: ...
    @overload
    def __getitem__(self, index: slice) -> list[SentEmail]: ...
    def __getitem__(self, index: int | slice) -> SentEmail | list[SentEmail]:
        return self._items[index]

    def __bool__(self) -> bool:
        return bool(self._items)

    def __repr__(self) -> str:
        return f"<Outbox {len(self)} email(s)>"

    @property
    def last(self) -> SentEmail:
        if not self._items:
            raise IndexError("the outbox is empty")
        return self._items[-1]

    def filter(self, *, to: str | None = None, subject: str | None = None) -> list[SentEmail]:
        return [
            item
            for item in self
            if (to is None or to in item.to) and (subject is None or item.subject == subject)
        ]


#: The process-wide outbox eager mode appends to.
outbox = Outbox()


_forced = 0
_forced_lock = threading.Lock()


def force_eager(on: bool) -> None:
    """Turn eager mode on for every app (``on=True``) or undo one such call (``on=False``).

    The pytest plugin's ``autosend_outbox`` uses this, so a test needs no
    ``task_always_eager`` on an app it may not even hold. Process-wide (not a
    context variable) because a web framework's threadpool sends from other threads.
    """
    global _forced
    with _forced_lock:
        _forced = _forced + 1 if on else max(0, _forced - 1)


def eager_forced() -> bool:
    return _forced > 0


class EagerTransport:
    """Record the request in an :class:`Outbox` and answer like AutoSend would."""

    def __init__(self, box: Outbox | None = None) -> None:
        self.outbox = box if box is not None else outbox

    def publish(
        self,
        request: PublishRequest,
        *,
        retry: bool = True,
        retry_policy: dict[str, Any] | None = None,
    ) -> PublishResult:
        response = autosend_success(request.body)
        message_id = f"msg_eager_{os.urandom(16).hex()}"
        self.outbox.append(SentEmail(request=request, message_id=message_id, response=response))
        return PublishResult(message_id=message_id, response=response)
