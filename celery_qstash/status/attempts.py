"""A task's QStash events as delivery attempts: numbers, deltas, durations, AutoSend's words.

QStash logs one event per state change (``CREATED``, ``ACTIVE``, ``ERROR``,
``RETRY``, ``DELIVERED``...). People reading a timeline want to know which
attempt an event belongs to, how long that attempt took, how long after the
previous event it happened, and what AutoSend said. The CLI's ``inspect`` and
the dashboard's task page both show these :class:`Step` rows, so they are
computed once, here (presentation only: no I/O, no state).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .records import TaskRecord, _b64json, celery_state, error_text

__all__ = ["Step", "human_duration", "relative", "steps"]

#: The events that end an attempt (its duration runs from the attempt's ``ACTIVE``).
_ENDS_ATTEMPT = frozenset({"ERROR", "DELIVERED", "FAILED"})


@dataclass(frozen=True)
class Step:
    """One event of a task, with what it means for the attempt it belongs to.

    ``attempt`` is 1 for the first delivery attempt (``None`` before any);
    ``delta`` is the time since the previous event, ``duration`` the time since
    this attempt started (set on the event that ends an attempt). ``message`` is
    AutoSend's error message on a failed attempt; ``response`` its decoded answer.
    """

    time: float | None
    state: str
    attempt: int | None
    delta: float | None
    duration: float | None
    message_id: str | None
    response_status: int | None
    response: Any
    message: str | None
    error: str | None
    next_delivery: float | None

    @property
    def celery_state(self) -> str:
        return celery_state(self.state)

    @property
    def failed(self) -> bool:
        return self.state in ("ERROR", "FAILED")


def _seconds(value: Any) -> float | None:
    try:
        return int(value) / 1000 if value else None
    except (TypeError, ValueError):
        return None


def steps(record: TaskRecord) -> list[Step]:
    """The record's events, oldest first, as :class:`Step` rows."""
    out: list[Step] = []
    attempt = 0
    started: float | None = None
    previous: float | None = None
    for event in record.events:
        state = str(event.get("state", ""))
        when = _seconds(event.get("time"))
        if state == "ACTIVE":
            attempt += 1
            started = when
        duration = None
        if state in _ENDS_ATTEMPT and started is not None and when is not None:
            duration = round(max(0.0, when - started), 3)
            started = None  # FAILED right after the last ERROR ends nothing new
        status = event.get("responseStatus")
        response = _b64json(event.get("responseBody")) if event.get("responseBody") else None
        failed = state in ("ERROR", "FAILED")
        out.append(Step(
            time=when,
            state=state,
            attempt=attempt or None,
            delta=None if previous is None or when is None else round(max(0.0, when - previous), 3),
            duration=duration,
            message_id=str(event["messageId"]) if event.get("messageId") else None,
            response_status=int(status) if status is not None else None,
            response=response,
            message=(error_text(response) or (str(event["error"]) if event.get("error") else None))
            if failed else None,
            error=str(event["error"]) if event.get("error") else None,
            next_delivery=_seconds(event.get("nextDeliveryTime")),
        ))
        if when is not None:
            previous = when
    return out


def human_duration(seconds: float | None) -> str:
    """``0.21 s``, ``4.0 s``, ``3 min 5 s``, ``2 h 3 min``: short, for tables."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f} s" if seconds < 1 else f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} d {hours % 24} h" if hours % 24 else f"{hours // 24} d"


def relative(ts: float | None, now: float) -> str:
    """``12s ago``, ``5m ago``, ``3h ago``, ``2d ago``; ``in 5m`` for the future."""
    if ts is None:
        return "-"
    diff = now - ts
    future = diff < 0
    diff = abs(diff)
    if diff < 60:
        text = f"{int(diff)}s"
    elif diff < 3600:
        text = f"{int(diff // 60)}m"
    elif diff < 86400:
        text = f"{int(diff // 3600)}h"
    else:
        text = f"{int(diff // 86400)}d"
    return f"in {text}" if future else f"{text} ago"
