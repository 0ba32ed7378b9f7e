"""AutoSend's webhook payloads, normalised into one :class:`EmailEvent`.

AutoSend has documented two envelopes (``../shared/reference`` §1.7): the current
``{"type", "createdAt", "data"}`` and the older ``{"event", "timestamp", "data"}``; both
are read. The fields inside ``data`` that name a bounce's type and reason are not
documented beyond "Permanent and Transient", so the names AutoSend's peers and SES use
are all read (``bounceType``, ``bounce.type``/``bounce.bounceType``; ``reason``,
``bounceReason``, ``bounce.reason``/``bounce.diagnosticCode``/``bounce.message``); what
was given is always in ``raw``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

__all__ = ["EVENT_TYPES", "EmailEvent", "WebhookPayloadError", "parse_event", "parse_time"]

#: AutoSend's event types and what each means (its "Event Types" page; older docs list
#: only nine of them). Other types are passed on as they come: a new one is not an error.
EVENT_TYPES: dict[str, str] = {
    "email.sent": "AutoSend handed the email to the recipient's mail server",
    "email.delivered": "the recipient's mail server accepted it",
    "email.deferred": "the recipient's server asked to try later; AutoSend keeps trying",
    "email.bounced": "refused by the recipient's server: `bounce_type` Permanent (the "
                     "address does not exist) or Transient (full mailbox, ...)",
    "email.opened": "the recipient opened it (open tracking)",
    "email.clicked": "the recipient clicked a link in it (click tracking)",
    "email.spam_reported": "the recipient marked it as spam (a complaint)",
    "email.unsubscribed": "the recipient unsubscribed from all emails",
    "email.group_unsubscribed": "the recipient left an unsubscribe group",
    "email.group_resubscribed": "the recipient rejoined an unsubscribe group",
    "contact.created": "a contact was added (no email: `email_id` is None)",
    "contact.updated": "a contact was changed",
    "contact.deleted": "a contact was deleted",
}

#: ``email.delivered`` -> ``delivered``: the word status shows.
_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_MAX_TEXT = 2000


class WebhookPayloadError(ValueError):
    """A signed body that is not an AutoSend event (answered 400, nothing fires)."""


@dataclass(frozen=True)
class EmailEvent:
    """One AutoSend event, with the fields of django-anymail's ``AnymailTrackingEvent``
    that AutoSend fills, and our task's id."""

    event: str
    timestamp: datetime
    email_id: str | None = None
    task_id: str | None = None
    recipient: str | None = None
    bounce_type: str | None = None
    reason: str | None = None
    test: bool = False
    batch_id: str | None = None
    delivery_id: str | None = None
    task_name: str | None = field(default=None, compare=False)
    raw: Any = field(default=None, compare=False, repr=False)

    @property
    def fate(self) -> str:
        """What happened, in one word: ``delivered``, ``bounced``, ``spam_reported``…"""
        return self.event.partition(".")[2] or self.event

    def with_task(self, task_id: str | None, task_name: str | None) -> EmailEvent:
        return replace(self, task_id=task_id, task_name=task_name)

    def signal_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :data:`celery_qstash.signals.email_event`."""
        return {
            "event": self.event, "email_id": self.email_id, "task_id": self.task_id,
            "recipient": self.recipient, "timestamp": self.timestamp,
            "bounce_type": self.bounce_type, "reason": self.reason, "test": self.test,
            "batch_id": self.batch_id, "delivery_id": self.delivery_id, "raw": self.raw,
            "email_event": self,
        }

    def record(self) -> dict[str, Any]:
        """What the event store keeps (JSON; no payload, so no subject or sender)."""
        data = asdict(self)
        data.pop("raw")
        data["timestamp"] = self.timestamp.isoformat()
        return data

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> EmailEvent:
        known: dict[str, Any] = {k: data.get(k) for k in cls.__dataclass_fields__ if k != "raw"}
        known["timestamp"] = parse_time(data.get("timestamp")) or _EPOCH
        known["test"] = bool(known.get("test"))
        known["event"] = str(known.get("event") or "")
        return cls(**known)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 string, or epoch seconds or milliseconds (number or digits), as an
    aware UTC datetime; ``None`` if it is none of these."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?", value.strip()):
        value = float(value)
    if isinstance(value, (int, float)):
        seconds = float(value)
        if not math.isfinite(seconds) or seconds < 0:
            return None
        if seconds > 1e11:  # milliseconds: 1e11 s is the year 5138
            seconds /= 1000
        try:
            return datetime.fromtimestamp(seconds, timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value.strip():
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else (
            moment.astimezone(timezone.utc))
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        text = str(value).strip()
        return text[:_MAX_TEXT] or None
    return None


def _first(*values: Any) -> str | None:
    for value in values:
        text = _text(value)
        if text is not None:
            return text
    return None


def _recipient(data: Mapping[str, Any]) -> str | None:
    to = data.get("to")
    if isinstance(to, list) and to:
        to = to[0]
    if isinstance(to, Mapping):
        to = to.get("email")
    return _first(to, data.get("email"), data.get("recipient"))


def _sub(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name)
    return value if isinstance(value, Mapping) else {}


def parse_event(payload: Any, *, delivery_id: str | None = None,
                header_event: str | None = None) -> EmailEvent:
    """The event a verified body describes; :class:`WebhookPayloadError` if it is none.

    ``header_event`` is ``X-Webhook-Event``: unsigned, so it must agree with the body.
    """
    if not isinstance(payload, Mapping):
        raise WebhookPayloadError("the body is not a JSON object")
    kind = payload.get("type", payload.get("event"))
    if not isinstance(kind, str) or not _TYPE.match(kind) or len(kind) > 100:
        raise WebhookPayloadError("no event type (`type`, or `event` in the older envelope)")
    if header_event and header_event.strip() != kind:
        raise WebhookPayloadError("X-Webhook-Event does not match the signed body's type")
    data = payload.get("data")
    if not isinstance(data, Mapping):
        raise WebhookPayloadError("`data` is not an object")
    when = parse_time(payload.get("createdAt", payload.get("timestamp")))
    if when is None:
        raise WebhookPayloadError(
            "no event time (`createdAt`, or `timestamp` in the older envelope)"
        )
    bounce = _sub(data, "bounce")
    return EmailEvent(
        event=kind,
        timestamp=when,
        email_id=_text(data.get("emailId")),
        recipient=_recipient(data),
        bounce_type=_first(data.get("bounceType"), bounce.get("type"),
                           bounce.get("bounceType")),
        reason=_first(data.get("reason"), data.get("bounceReason"), bounce.get("reason"),
                      bounce.get("diagnosticCode"), bounce.get("message"),
                      _sub(data, "complaint").get("feedbackType")),
        test=data.get("test") is True,
        batch_id=_text(data.get("batchId")),
        delivery_id=delivery_id,
        raw=payload,
    )
