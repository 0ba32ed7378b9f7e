"""QStash's events of one task folded into a :class:`TaskRecord` with a Celery state.

A task is found by the ``Upstash-Label`` set to its task id at publish time; its
display name travels as the forwarded ``X-Celery-Task`` header. The state map
(:data:`STATE_MAP`) is the one mapping of QStash's log states to Celery's; a deferred
task's answer (:func:`celery_qstash.publish.message.task_answer`) refines it (RETRY,
IGNORED, REVOKED) and carries its result.

**A task's state is its own message's.** A ``link``/``link_error`` callback is a
message of its own (QStash's callbacks page: "Callbacks publish a new message"). Whether
QStash labels it like its source is documented nowhere, so nothing here depends on it:
a callback is recognised by its body (``sourceMessageId``) or by its URL, never changes
the task's state, and is reported apart (:attr:`TaskRecord.callbacks`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any
from urllib.parse import unquote

from celery import states

from ..publish.message import is_task_message, task_answer
from ..redaction import safe_url

#: QStash log state -> Celery state (documented in the README).
STATE_MAP: dict[str, str] = {
    "CREATED": states.PENDING,
    "ACTIVE": states.STARTED,
    "RETRY": states.RETRY,
    "ERROR": states.RETRY,
    "DELIVERED": states.SUCCESS,
    "FAILED": states.FAILURE,
    "CANCEL_REQUESTED": states.REVOKED,
    "CANCELED": states.REVOKED,
}
FINAL_QSTASH_STATES = frozenset({"DELIVERED", "FAILED", "CANCELED"})
#: The states a filter can name (``--state``, the tasks page, ``/api/tasks?state=``):
#: Celery's, as the map above gives them, and QStash's own.
CELERY_STATES = tuple(dict.fromkeys(STATE_MAP.values()))
QSTASH_STATES = tuple(STATE_MAP)
KNOWN_STATES = frozenset(CELERY_STATES + QSTASH_STATES + ("ALL",))

# QStash logs forwarded headers without their ``Upstash-Forward-`` prefix (that is
# what the destination receives); accept the prefixed spelling too.
_TASK_HEADERS = ("X-Celery-Task", "Upstash-Forward-X-Celery-Task")


def celery_state(qstash_state: str | None) -> str:
    """Unknown or missing states read as PENDING, as an unknown task id does in Celery."""
    return str(STATE_MAP.get(qstash_state or "", states.PENDING))


def _b64json(value: str | None) -> Any:
    if not value:
        return None
    try:
        raw = base64.b64decode(value)
    except ValueError:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _task_name(headers: Any) -> str | None:
    for name in _TASK_HEADERS:
        value = _header(headers, name)
        if value:
            return unquote(value)  # sent percent-encoded outside printable ASCII
    return None


def _labels(event: dict[str, Any]) -> list[str]:
    """An event's labels (``labels``, or the single ``label`` of older answers)."""
    labels = event.get("labels")
    if isinstance(labels, list) and labels:
        return [str(x) for x in labels]
    return [str(event["label"])] if event.get("label") else []


def _header(headers: Any, name: str) -> str | None:
    if not isinstance(headers, dict):
        return None
    for key, value in headers.items():
        if key.lower() == name.lower():
            if isinstance(value, list):
                return str(value[0]) if value else None
            return str(value)
    return None


@dataclass
class CallbackRecord:
    """A ``link`` (``kind="callback"``) or ``link_error`` (``"failure_callback"``)
    message QStash published after one of the task's attempts."""

    kind: str
    message_id: str
    url: str
    qstash_state: str
    response_status: int | None = None
    error: str | None = None
    updated: float | None = None
    source_message_id: str | None = None

    @property
    def state(self) -> str:
        return celery_state(self.qstash_state)


    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message_id": self.message_id, "url": safe_url(self.url),
                "state": self.state, "qstash_state": self.qstash_state,
                "response_status": self.response_status, "error": self.error,
                "updated": self.updated}


@dataclass
class TaskRecord:
    """One Celery task as QStash's events describe it (times are epoch seconds).

    Everything but :attr:`callbacks` comes from the task's own message (the email):
    a callback's outcome never changes the task's state.
    """

    task_id: str
    message_id: str
    name: str | None
    qstash_state: str
    url: str
    recipient: str | None = None
    subject: str | None = None
    created: float | None = None
    started: float | None = None
    updated: float | None = None
    next_delivery: float | None = None
    retries: int = 0
    response_status: int | None = None
    response: Any = None
    error: str | None = None
    queue: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    callbacks: list[CallbackRecord] = field(default_factory=list)
    #: A deferred task's arguments, from its message (None for an email task).
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None

    @property
    def answer(self) -> dict[str, Any] | None:
        """The receiver's answer, for a deferred task (its body ran at delivery)."""
        return task_answer(self.response)

    @property
    def state(self) -> str:
        answer = self.answer
        # A delivered task message whose body retried (self.retry published the next
        # attempt), was ignored or had expired: the answer says which.
        if answer and self.qstash_state == "DELIVERED" and answer.get("status") in (
            states.RETRY, states.IGNORED, states.REVOKED,
        ):
            return str(answer["status"])
        return celery_state(self.qstash_state)

    @property
    def ready(self) -> bool:
        return self.state in states.READY_STATES

    @property
    def result(self) -> Any:
        """AutoSend's response ``data`` on success (a deferred task's return value); its
        error text otherwise."""
        answer = self.answer
        if answer is not None and self.state == states.SUCCESS:
            return answer.get("result")
        if isinstance(self.response, dict):
            if self.state == states.SUCCESS and isinstance(self.response.get("data"), dict):
                return self.response["data"]
            return self.response
        return self.response

    @property
    def error_message(self) -> str | None:
        """AutoSend's error message (either documented shape), else QStash's error."""
        return error_text(self.response) or self.error


def _email_summary(body: Any) -> tuple[str | None, str | None]:
    """(recipient, subject) of an AutoSend request body (single or bulk send)."""
    recipient = subject = None
    if isinstance(body, dict):
        subject = body.get("subject") if isinstance(body.get("subject"), str) else None
        to = body.get("to")
        if isinstance(to, dict):
            recipient = to.get("email")
        elif isinstance(body.get("recipients"), list):
            people = body["recipients"]
            if len(people) == 1 and isinstance(people[0], dict):
                recipient = people[0].get("email")
            else:
                recipient = f"{len(people)} recipients"
    return recipient, subject


def _chronological(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Oldest first. QStash lists events newest first, and within one millisecond its
    order is the only truth (a zero-delay retry's RETRY and next ACTIVE share a ms):
    input already ordered by time keeps its order; anything else is sorted by
    time, then by where a state falls in one attempt."""
    times = [int(e.get("time", 0)) for e in events]
    pairs = list(pairwise(times))
    if all(a >= b for a, b in pairs):
        return events[::-1]
    if all(a <= b for a, b in pairs):
        return events
    return sorted(events, key=lambda e: (int(e.get("time", 0)), _RANK.get(e.get("state", ""), 0)))


#: QStash's callback body names its source ``sourceMessageId``; the callbacks page's
#: example spells it ``sourceMessasgeId``: both are read.
_SOURCE_KEYS = ("sourceMessageId", "sourceMessasgeId")


def _source_id(body: Any) -> str | None:
    """The source message id in a callback body, or ``None`` for any other body."""
    if isinstance(body, dict):
        for key in _SOURCE_KEYS:
            if isinstance(body.get(key), str) and body[key]:
                return str(body[key])
    return None


def _callback_kind(body: Any) -> str | None:
    """``"callback"``/``"failure_callback"`` for QStash's callback body, else ``None``."""
    if _source_id(body) is not None:
        return "failure_callback" if "dlqId" in body else "callback"
    return None


_Events = list[dict[str, Any]]


def _split(events: _Events) -> tuple[_Events, dict[str, tuple[str, _Events]]]:
    """The task's own events, and its callbacks' events by message id (with their kind).

    A message is a callback when its body is QStash's callback body, or when its URL
    is a ``callback``/``failureCallback`` one of the other messages declares.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for ev in events:
        groups.setdefault(str(ev.get("messageId")), []).append(ev)
    declared: dict[str, str] = {}
    for ev in events:
        for name, what in (("callback", "callback"), ("failureCallback", "failure_callback")):
            if isinstance(ev.get(name), str) and ev[name]:
                declared.setdefault(ev[name], what)
    own: list[dict[str, Any]] = []
    callbacks: dict[str, tuple[str, list[dict[str, Any]]]] = {}
    for message_id, group in groups.items():
        kind: str | None = next(
            (k for k in (_callback_kind(_b64json(ev.get("body"))) for ev in group
                         if ev.get("body")) if k), None)
        if kind is None:
            url = next((str(ev["url"]) for ev in group if ev.get("url")), "")
            # Only another message's declaration counts (a task is never its own callback).
            own_declared = {ev.get("callback") for ev in group} | {
                ev.get("failureCallback") for ev in group}
            if url in declared and url not in own_declared:
                kind = declared[url]
        if kind is None:
            own.extend(group)
        else:
            callbacks[message_id] = (kind, group)
    return own, callbacks


def _callback_record(message_id: str, kind: str, events: list[dict[str, Any]]) -> CallbackRecord:
    ordered = _chronological(events)
    last = ordered[-1]
    body = next((_b64json(e.get("body")) for e in ordered if e.get("body")), None)
    record = CallbackRecord(
        kind=kind,
        message_id=message_id,
        url=str(last.get("url", "")),
        qstash_state=str(last.get("state")),
        updated=int(last["time"]) / 1000 if last.get("time") else None,
        source_message_id=_source_id(body),
    )
    for event in ordered:
        if event.get("responseStatus") is not None:
            record.response_status = int(event["responseStatus"])
        if event.get("error"):
            record.error = str(event["error"])
    return record


def build_record(events: Iterable[dict[str, Any]]) -> TaskRecord | None:
    """Fold one task's raw events (any order) into a record; ``None`` if there are none.

    Callback messages among them are set apart (:attr:`TaskRecord.callbacks`): the
    record's state, response and retries are the task's own message's.
    """
    own, callbacks = _split(list(events))
    record = _fold_messages(own)
    if record is not None:
        record.callbacks = sorted(
            (_callback_record(mid, kind, group) for mid, (kind, group) in callbacks.items()),
            key=lambda c: c.updated or 0.0,
        )
    return record


def _fold_messages(events: list[dict[str, Any]]) -> TaskRecord | None:
    """A task's record from its own messages' events: one message, or several when a
    deferred task's ``self.retry()`` published the next attempts under the same task id
    (the latest message is the task's state; each earlier one was an attempt)."""
    by_message: dict[Any, list[dict[str, Any]]] = {}
    for event in events:
        by_message.setdefault(event.get("messageId"), []).append(event)
    if len(by_message) < 2:
        return _fold(events)
    records = [r for r in map(_fold, by_message.values()) if r is not None]
    records.sort(key=lambda r: (r.created or 0.0, r.updated or 0.0))
    record = records[-1]
    record.retries += sum(r.retries + 1 for r in records[:-1])
    record.created = records[0].created
    record.started = next((r.started for r in records if r.started), record.started)
    record.events = _chronological(list(events))
    if record.qstash_state in ("CREATED", "ACTIVE"):
        record.qstash_state = "RETRY"  # the next attempt is waiting, as Celery says
    return record


def _fold(events: list[dict[str, Any]]) -> TaskRecord | None:
    ordered = _chronological(list(events))
    if not ordered:
        return None
    first, last = ordered[0], ordered[-1]
    header = next((e.get("header") for e in ordered if e.get("header")), None)
    body = next((_b64json(e.get("body")) for e in ordered if e.get("body")), None)
    recipient, subject = _email_summary(body)
    labels = last.get("labels") or ([last["label"]] if last.get("label") else [])
    task_args = body if is_task_message(body) else None
    record = TaskRecord(
        task_id=str(labels[0]) if labels else str(last.get("messageId")),
        message_id=str(last.get("messageId")),
        name=_task_name(header),
        qstash_state=str(last.get("state")),
        url=str(last.get("url", "")),
        recipient=recipient,
        subject=subject,
        created=int(first["time"]) / 1000 if first.get("time") else None,
        updated=int(last["time"]) / 1000 if last.get("time") else None,
        queue=last.get("queueName") or None,
        events=ordered,
        args=task_args.get("args") if task_args else None,
        kwargs=task_args.get("kwargs") if task_args else None,
    )
    for event in ordered:
        state = event.get("state")
        if state == "ACTIVE" and record.started is None:
            record.started = int(event["time"]) / 1000
        if state == "ERROR":
            record.retries += 1
        if event.get("responseStatus") is not None:
            record.response_status = int(event["responseStatus"])
            record.response = _b64json(event.get("responseBody"))
        if event.get("error"):
            record.error = str(event["error"])
    if record.qstash_state == "FAILED" and record.retries:
        record.retries -= 1  # the last failed attempt is not a retry
    # A delayed (countdown/eta) message that has not been tried yet is due at notBefore.
    nxt = last.get("nextDeliveryTime") or (
        last.get("notBefore") if record.qstash_state == "CREATED" else None
    )
    if nxt and record.qstash_state not in FINAL_QSTASH_STATES:
        record.next_delivery = int(nxt) / 1000
    return record


# Same-millisecond events still sort in the order they happen.
_RANK = {
    "CREATED": 0, "ACTIVE": 1, "ERROR": 2, "RETRY": 3, "CANCEL_REQUESTED": 4,
    "DELIVERED": 5, "FAILED": 5, "CANCELED": 5,
}


def record_from_events(task_id: str, events: Iterable[dict[str, Any]]) -> TaskRecord | None:
    """The task's record from a logs answer filtered by its label (``None`` if it has none).

    Events are kept only if they carry the label, in case a server ignores the filter.
    """
    if not task_id:
        return None
    return build_record(e for e in events if task_id in _labels(e))



def error_text(body: Any) -> str | None:
    """AutoSend's error message from a response body (either documented shape)."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str) and err:
            return err
        if body.get("message"):
            return str(body["message"])
    if isinstance(body, str) and body:
        return body
    return None


def _plain_json(text: Any) -> Any:
    if not isinstance(text, str) or not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text
