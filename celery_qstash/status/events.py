"""One QStash log event as a monitor counts it: Flower's event types, workers and times.

:mod:`.records` folds a task's events into one record; a monitor (the dashboard's
``/metrics``) instead counts events one by one, as Flower counts Celery's. This module
says what each QStash event is in Celery's vocabulary, and reads new events a page at a
time without re-reading what was already counted (:func:`read_new_events`).

=========================  ===============================  ================================
QStash event               Flower event type                notes
=========================  ===============================  ================================
``CREATED``                ``task-received``                QStash stored the message
``ACTIVE``                 ``task-started``                 a delivery attempt began
``RETRY``                  ``task-retried``                 QStash will try again
``DELIVERED``              ``task-succeeded``               a deferred task's answer may
                                                            say ``task-retried``
                                                            (``self.retry()``),
                                                            ``task-revoked`` (expired) or
                                                            nothing (``Ignore``)
``FAILED``                 ``task-failed``                  retries exhausted: a dead letter
``CANCELED``               ``task-revoked``                 ``CANCEL_REQUESTED`` is not
                                                            counted (its ``CANCELED`` is)
``ERROR``                  (none)                           a failed attempt; ``RETRY`` or
                                                            ``FAILED`` follows
=========================  ===============================  ================================

The *worker* of an event is the host its message is delivered to (``api.autosend.com``
for an email task, the receiver's host for a deferred task): what runs the task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from celery import states

from ..publish.message import task_answer
from .query import PAGE_SIZE, StatusClient
from .records import _b64json, _task_name

__all__ = ["FLOWER_EVENT_TYPES", "LogEvent", "flower_event_type", "read_new_events"]

#: Every Flower event type a QStash event can count as (series are created for each).
FLOWER_EVENT_TYPES = (
    "task-received", "task-started", "task-succeeded", "task-failed", "task-retried",
    "task-revoked",
)
_TYPES = {
    "CREATED": "task-received",
    "ACTIVE": "task-started",
    "RETRY": "task-retried",
    "DELIVERED": "task-succeeded",
    "FAILED": "task-failed",
    "CANCELED": "task-revoked",
}
#: A deferred task's answer (status) inside a DELIVERED event -> what Celery's worker sends.
_ANSWERED = {
    states.RETRY: "task-retried",
    states.REVOKED: "task-revoked",
    states.IGNORED: None,
}


def _ms(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def worker_of(url: str) -> str:
    """The host (and port, when not the scheme's default) a message is delivered to."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "unknown"
    if not host:
        return "unknown"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}" if port and port != {"http": 80, "https": 443}.get(parts.scheme) \
        else host


@dataclass(frozen=True)
class LogEvent:
    """What a monitor needs of one ``GET /v2/events`` entry (times in epoch ms)."""

    message_id: str
    state: str
    time_ms: int
    task: str | None
    worker: str
    created_ms: int | None
    not_before_ms: int | None
    next_delivery_ms: int | None
    response_status: int | None
    answer_status: str | None
    dlq_id: str | None
    timeout_ms: int | None

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> LogEvent | None:
        """The event, or ``None`` for an entry without a message id, state or time."""
        message_id, state, time_ms = raw.get("messageId"), raw.get("state"), _ms(raw.get("time"))
        if not isinstance(message_id, str) or not isinstance(state, str) or time_ms is None:
            return None
        answer = None
        if state == "DELIVERED" and raw.get("responseBody"):
            answer = task_answer(_b64json(raw.get("responseBody")))
        status = raw.get("responseStatus")
        return cls(
            message_id=message_id,
            state=state,
            time_ms=time_ms,
            task=_task_name(raw.get("header")),
            worker=worker_of(str(raw.get("url") or "")),
            created_ms=_ms(raw.get("createdAt")),
            not_before_ms=_ms(raw.get("notBefore")),
            next_delivery_ms=_ms(raw.get("nextDeliveryTime")),
            response_status=status if isinstance(status, int) and status > 0 else None,
            answer_status=str(answer["status"]) if answer and answer.get("status") else None,
            dlq_id=str(raw["dlqId"]) if raw.get("dlqId") else None,
            timeout_ms=_ms(raw.get("timeout")),
        )

    @property
    def key(self) -> tuple[str, str, int]:
        """Tells one event from another (QStash gives events no id of their own)."""
        return (self.message_id, self.state, self.time_ms)

    @property
    def due_ms(self) -> int | None:
        """When the message was first due: its not-before, else its creation."""
        if self.not_before_ms and self.created_ms:
            return max(self.not_before_ms, self.created_ms)
        return self.not_before_ms or self.created_ms


def flower_event_type(event: LogEvent) -> str | None:
    """The Flower event type ``event`` counts as, or ``None`` (see the module's table)."""
    if event.state == "DELIVERED" and event.answer_status in _ANSWERED:
        return _ANSWERED[event.answer_status]
    return _TYPES.get(event.state)


def read_new_events(
    status: StatusClient, since_ms: int, *, page_size: int = PAGE_SIZE, max_pages: int = 1000
) -> tuple[list[LogEvent], bool]:
    """Every event at or after ``since_ms``, oldest first, and whether all were read.

    One paged read (``fromDate``, then QStash's cursor, :data:`PAGE_SIZE` events a page) of
    what is new: its cost is the number of new events, never the size of the history.
    ``max_pages`` bounds one read; when it is reached the oldest new events are left unread
    and the flag is False.
    """
    found: list[LogEvent] = []
    cursor: str | None = None
    for _ in range(max_pages):
        raws, cursor = status.events(count=page_size, cursor=cursor,
                                     fromDate=str(max(0, since_ms)))
        found += [e for e in (LogEvent.parse(r) for r in raws if isinstance(r, dict)) if e]
        if not cursor:
            break
    complete = cursor is None
    # QStash lists newest first; within one millisecond its order is the only truth (a
    # zero-delay retry's ERROR, RETRY and next ACTIVE share one): reversed, then a stable
    # sort by time in case a server's order is not strictly by time.
    found.reverse()
    found.sort(key=lambda e: e.time_ms)
    return found, complete
