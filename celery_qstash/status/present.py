"""Records for people and tools: filters, ``--since``, sorting, redaction, Flower's JSON."""

from __future__ import annotations

import math
import re
import shlex
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from celery import states

from ..errors import DeliveryFailed
from .records import TaskRecord

# -- filtering, sorting, time ---------------------------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: The earliest time a ``datetime`` can hold (an ISO ``--since`` cannot go further back).
_EARLIEST = datetime(1, 1, 1, tzinfo=timezone.utc).timestamp()
_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.I)


def parse_since(text: str, *, now: float | None = None) -> float:
    """``10m``, ``2h``, ``1d``, ``30s``, ``1w`` ago, or an ISO date/time, as epoch seconds.

    A naive ISO time is UTC. Raises ``ValueError`` for anything else, a duration
    too large to count back from now included.
    """
    match = _AGO.match(text)
    if match:
        current = time.time() if now is None else now
        then = current - float(match.group(1)) * _UNITS[match.group(2).lower()]
        if not math.isfinite(then) or then < _EARLIEST:
            raise ValueError(f"{text.strip()[:20]!r}... is too large a duration")
        return then
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration like 10m, 2h, 1d nor an ISO date/time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _states(value: str | None) -> frozenset[str]:
    """Flower's ``state`` filter: ``All``/empty is none; a comma list matches any of them."""
    if not value:
        return frozenset()
    wanted = {part.strip().upper() for part in value.split(",") if part.strip()}
    return frozenset() if "ALL" in wanted else frozenset(wanted)


@dataclass(frozen=True)
class TaskFilter:
    """What the CLI's flags, the tasks page's form and ``GET /api/tasks`` filter on.

    ``state`` accepts Celery states (``SUCCESS``) and QStash states (``DELIVERED``),
    comma-separated for several; ``name`` is an exact task name; ``since``/``until``
    bound the time QStash accepted the task (epoch seconds); ``search`` is Flower's
    search box: whitespace-separated terms that must all match, either
    ``name:``/``state:``/``recipient:``/``subject:``/``id:`` qualifiers or free text
    found (case-insensitively) in the id, name, recipient, subject or state.
    """

    state: str | None = None
    name: str | None = None
    since: float | None = None
    until: float | None = None
    search: str | None = None

    def matches(self, record: TaskRecord) -> bool:
        wanted = _states(self.state)
        if wanted and record.state not in wanted and record.qstash_state not in wanted:
            return False
        if self.name and record.name != self.name:
            return False
        created = record.created if record.created is not None else 0.0
        if self.since is not None and created < self.since:
            return False
        if self.until is not None and created > self.until:
            return False
        return not self.search or _search_matches(self.search, record)


_QUALIFIERS: dict[str, Callable[[TaskRecord], Sequence[str | None]]] = {
    "name": lambda r: [r.name],
    "state": lambda r: [r.state, r.qstash_state],
    "recipient": lambda r: [r.recipient],
    "subject": lambda r: [r.subject],
    "id": lambda r: [r.task_id, r.message_id],
}


def _search_matches(query: str, record: TaskRecord) -> bool:
    try:
        terms = shlex.split(query)
    except ValueError:  # an unbalanced quote: search for the words as typed
        terms = query.split()
    for term in terms:
        key, sep, value = term.partition(":")
        if sep and key.lower() in _QUALIFIERS:
            fields, needle = _QUALIFIERS[key.lower()](record), value.lower()
            if key.lower() == "state":  # exact, as Flower's state: qualifier
                if needle.upper() not in {f for f in fields if f}:
                    return False
                continue
        else:
            fields = [record.task_id, record.message_id, record.name, record.recipient,
                      record.subject, record.state]
            needle = term.lower()
        if not any(needle in f.lower() for f in fields if f):
            return False
    return True


#: Flower's ``sort_by`` keys (a ``-`` prefix sorts descending).
SORT_KEYS: dict[str, Callable[[TaskRecord], Any]] = {
    "name": lambda r: r.name or "",
    "state": lambda r: r.state,
    "received": lambda r: r.created or 0.0,
    "started": lambda r: r.started or 0.0,
}


def sort_records(records: Iterable[TaskRecord], sort_by: str | None) -> list[TaskRecord]:
    """Sort as Flower's ``sort_by`` does; ``None``/empty keeps newest-first order."""
    if not sort_by:
        return list(records)
    reverse = sort_by.startswith("-")
    key = SORT_KEYS.get(sort_by.lstrip("-"))
    if key is None:
        raise ValueError(f"sort_by must be one of {', '.join(SORT_KEYS)} (optionally with '-')")
    return sorted(records, key=key, reverse=reverse)


# -- times for Flower's JSON -----------------------------------------------------

def _first_time(record: TaskRecord, *wanted: str) -> float | None:
    for event in record.events:
        if event.get("state") in wanted and event.get("time"):
            return int(event["time"]) / 1000
    return None


def _last_time(record: TaskRecord, *wanted: str) -> float | None:
    found = None
    for event in record.events:
        if event.get("state") in wanted and event.get("time"):
            found = int(event["time"]) / 1000
    return found


def _eta(record: TaskRecord) -> float | None:
    """When a delayed (countdown/eta) task is due: ``notBefore`` later than creation."""
    for event in record.events:
        not_before, created = event.get("notBefore"), event.get("createdAt") or event.get("time")
        if not_before and created and int(not_before) > int(created):
            return int(not_before) / 1000
    return None


def flower_task(record: TaskRecord) -> dict[str, Any]:
    """A task in the shape of Flower's ``/api/tasks`` values (``celery.events.state.Task``).

    Times are epoch floats as in Flower. QStash has no worker, exchange, client
    or Lamport clock: those are ``None``. ``args``/``kwargs`` are ``None`` as
    well: the task's arguments are consumed when the task body renders the
    email at call time and never reach QStash, so "unknown" is the honest
    value (Flower's ``"[]"`` would claim there were none). ``result`` and
    ``exception`` are repr strings, as Flower's are; ``routing_key`` is the
    QStash queue, if any.
    """
    state = record.state
    result: str | None = None
    exception: str | None = None
    traceback: str | None = None
    if state == states.SUCCESS:
        result = repr(record.result)
    elif state in (states.FAILURE, states.RETRY):
        exc = _delivery_failed(record)
        exception = repr(exc)
        result = exception
        if state == states.FAILURE:
            traceback = f"celery_qstash.errors.DeliveryFailed: {exc}"
    succeeded = _last_time(record, "DELIVERED")
    last_attempt = _last_time(record, "ACTIVE")
    # Flower's runtime is the successful run's duration: here, the delivering attempt's.
    runtime = (
        round(succeeded - last_attempt, 3)
        if succeeded is not None and last_attempt is not None
        else None
    )
    return {
        "uuid": record.task_id,
        "name": record.name,
        "state": state,
        "received": record.created,
        "sent": record.created,
        "started": record.started,
        "succeeded": succeeded,
        "failed": _last_time(record, "FAILED"),
        "retried": _last_time(record, "RETRY"),
        "revoked": _first_time(record, "CANCEL_REQUESTED", "CANCELED"),
        "rejected": None,
        "retries": record.retries,
        "result": result,
        "exception": exception,
        "traceback": traceback,
        "timestamp": record.updated,
        "runtime": runtime,
        "eta": _eta(record),
        "expires": None,
        # Flower shows the repr of what the worker received; a deferred task's message
        # carries them (an email task's arguments never leave the caller).
        "args": repr(tuple(record.args)) if record.args is not None else None,
        "kwargs": repr(record.kwargs) if record.kwargs is not None else None,
        "worker": None,
        "routing_key": record.queue,
        "exchange": None,
        "client": None,
        "clock": None,
        "root_id": record.task_id,
        "parent_id": None,
        # Not in Flower: what only QStash knows, for scripts that want it.
        "qstash_state": record.qstash_state,
        "message_id": record.message_id,
        "recipient": record.recipient,
        "subject": record.subject,
        "next_delivery": record.next_delivery,
        "response_status": record.response_status,
        # link/link_error calls, apart: they never change the task's state.
        "callbacks": [c.as_dict() for c in record.callbacks],
    }


def _delivery_failed(record: TaskRecord) -> DeliveryFailed:
    return DeliveryFailed(record.response_status, record.error_message or record.qstash_state)
