"""The sandbox's webhooks: AutoSend's events for every accepted email, signed and retried.

What AutoSend documents (reference notes §1.7), done here:

- every accepted email gets ``email.sent`` :data:`SENT_DELAY` seconds after it was
  accepted (by then QStash has reported AutoSend's answer to the app, as it would in
  production, where handing the email to a mail server takes longer), then its fate a
  second later (:data:`OUTCOME_DELAY`): ``email.delivered``, or what a simulator address
  or a bounce rule asks;
- the current envelope ``{"type", "createdAt", "data": {emailId, from, to: {email, name},
  subject, test, batchId?, templateId?}}``, signed as ``X-Webhook-Signature`` = hex
  HMAC-SHA256 of the raw body, with ``X-Webhook-Event``, ``X-Webhook-Delivery-Id`` (the
  same on every retry), ``X-Webhook-Timestamp`` (milliseconds, the attempt's time) and
  ``User-Agent: AutoSend-Webhooks/1.0``;
- a non-2xx answer, or none within 10 s, is retried on :data:`RETRY_SCHEDULE` (4 attempts
  in all; the sandbox's clock decides when, so a test moves a ``FakeClock`` instead of
  waiting).

**Simulator addresses**, named like the AWS SES mailbox simulator's, by the local part
(``+label`` ignored, any domain): ``bounce@`` a Permanent bounce, ``suppressionlist@`` a
Permanent bounce (on the suppression list), ``complaint@`` delivered then
``email.spam_reported``, ``ooto@`` and ``success@`` delivered. A **bounce rule**
(``POST /api/v1/chaos {"bounce": "jane@example.com"}``, ``"*"`` for anyone) turns the
next emails to that recipient into bounces.

AutoSend does not document its bounce payload's fields beyond the two types; the sandbox
sends ``bounceType``, ``bounceSubType`` and ``reason`` (SES's names), which
:mod:`celery_qstash.webhooks.events` reads along with the other spellings.

Every event is kept in the sandbox's database (the inbox shows each email's), sent or
not: without a webhook URL they are only recorded.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import httpx

from ...clock import Clock, SystemClock
from ...webhooks.signing import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    USER_AGENT,
    signature,
)
from .store import Message, SandboxStore

__all__ = ["OUTCOME_DELAY", "RETRY_SCHEDULE", "SENT_DELAY", "BounceRule", "WebhookEmitter",
           "simulated"]

logger = logging.getLogger("celery_qstash.local.sandbox")

#: Seconds between a failed attempt and the next (AutoSend's current docs: about 5 s,
#: 10 s, 20 s; 4 attempts in all). The older docs' 1, 5 and 15 minutes: pass them.
RETRY_SCHEDULE: tuple[float, ...] = (5.0, 10.0, 20.0)
#: Seconds from acceptance to ``email.sent``, and to the email's fate (delivered, bounced).
SENT_DELAY = 1.0
OUTCOME_DELAY = 2.0
#: AutoSend waits this long for a 2xx.
TIMEOUT = 10.0

_BOUNCE_REASON = "550 5.1.1 The email account does not exist (sandbox: {why})"


@dataclass
class BounceRule:
    """Bounce the next ``remaining`` emails to ``to`` (``"*"``: anyone)."""

    to: str
    bounce_type: str = "Permanent"
    remaining: int = 1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def simulated(address: str) -> str | None:
    """What a simulator address asks for: ``bounce``, ``suppressionlist``, ``complaint``,
    ``ooto``, ``success`` (the local part before any ``+label``), else ``None``."""
    local = address.rpartition("@")[0].lower().partition("+")[0]
    return local if local in ("bounce", "suppressionlist", "complaint", "ooto",
                              "success") else None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


class WebhookEmitter:
    """Plans, keeps, signs and sends the sandbox's webhook events.

    ``url``/``secret``: where and with what (``configure`` can set them later). With the
    system clock a thread sends what is due; with a fake clock nothing is sent until
    :meth:`deliver_due` is called (``DevServers.advance`` does).
    """

    def __init__(self, store: SandboxStore, clock: Clock, *, url: str | None = None,
                 secret: str | None = None,
                 schedule: Sequence[float] = RETRY_SCHEDULE) -> None:
        self.store = store
        self.clock = clock
        self.schedule = tuple(schedule)
        self.url: str | None = None
        self.secret: str | None = None
        self._rules: list[BounceRule] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._http = httpx.Client(timeout=TIMEOUT)
        if url:
            self.configure(url, secret)

    # -- configuration ---------------------------------------------------------

    def configure(self, url: str, secret: str | None) -> None:
        """Send to ``url``, signed with ``secret``; starts the sender with a real clock."""
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the webhook URL must be http(s), got {url!r}")
        if not secret:
            raise ValueError("a webhook URL needs a secret to sign with")
        self.url, self.secret = url, secret
        if isinstance(self.clock, SystemClock) and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sandbox-webhooks",
                                            daemon=True)
            self._thread.start()

    def add_bounce_rule(self, rule: BounceRule) -> None:
        with self._lock:
            self._rules.append(rule)

    def bounce_rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.as_dict() for r in self._rules]

    def clear_rules(self) -> None:
        with self._lock:
            self._rules.clear()

    def _bounce_for(self, address: str) -> BounceRule | None:
        with self._lock:
            for rule in self._rules:
                if rule.to == "*" or rule.to.lower() == address.lower():
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._rules.remove(rule)
                    return rule
        return None

    # -- planning ----------------------------------------------------------------

    def _plan(self, msg: Message) -> list[tuple[str, float, dict[str, Any]]]:
        """``(event, seconds after acceptance, extra data)`` for one accepted email."""
        to = str(msg["to"]["email"])
        plan: list[tuple[str, float, dict[str, Any]]] = [("email.sent", SENT_DELAY, {})]
        rule = self._bounce_for(to)
        kind = simulated(to)
        if rule is not None or kind in ("bounce", "suppressionlist"):
            sub = "OnAccountSuppressionList" if kind == "suppressionlist" else "General"
            why = "a bounce rule" if rule is not None else f"the {kind}@ simulator address"
            plan.append(("email.bounced", OUTCOME_DELAY, {
                "bounceType": rule.bounce_type if rule is not None else "Permanent",
                "bounceSubType": sub, "reason": _BOUNCE_REASON.format(why=why)}))
            return plan
        plan.append(("email.delivered", OUTCOME_DELAY, {}))
        if kind == "complaint":
            plan.append(("email.spam_reported", OUTCOME_DELAY + 1,
                         {"reason": "abuse (sandbox: the complaint@ simulator address)"}))
        return plan

    def accepted(self, messages: Sequence[Message]) -> None:
        """Plan and keep the events of emails the sandbox just accepted."""
        now = self.clock.now()
        rows = []
        for msg in messages:
            common = {"emailId": msg["emailId"], "from": msg["from"]["email"],
                      "to": msg["to"], "subject": msg.get("renderedSubject"),
                      "test": bool(msg.get("test"))}
            if msg.get("batchId"):
                common["batchId"] = msg["batchId"]
            if msg.get("templateId"):
                common["templateId"] = msg["templateId"]
            for event, after, extra in self._plan(msg):
                body = json.dumps({"type": event, "createdAt": _iso(now + after),
                                   "data": {**common, **extra}}, separators=(",", ":"))
                rows.append((str(uuid.uuid4()), msg["emailId"], event, body, now + after,
                             "pending" if self.url else "recorded", now))
        with self.store.transaction() as db:
            db.executemany(
                "INSERT INTO webhooks (delivery_id, email_id, event, body, due_at, state,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        self._wake.set()

    def events(self, email_id: str) -> list[dict[str, Any]]:
        """One email's events, in the order planned, with how their delivery went."""
        with self.store.transaction() as db:
            rows = db.execute(
                "SELECT event, body, state, attempts, last_status, last_error, due_at,"
                " delivery_id FROM webhooks WHERE email_id = ? ORDER BY seq",
                (email_id,)).fetchall()
        return [{"event": r[0], "createdAt": json.loads(r[1]).get("createdAt"), "state": r[2],
                 "attempts": r[3], "lastStatus": r[4], "lastError": r[5], "dueAt": r[6],
                 "deliveryId": r[7], "body": r[1]} for r in rows]

    # -- sending -----------------------------------------------------------------

    def deliver_due(self) -> int:
        """Send every event due by the clock's now; returns the attempts made."""
        if not self.url or not self.secret:
            return 0
        attempts = 0
        while True:
            with self.store.transaction() as db:
                due = db.execute(
                    "SELECT seq, delivery_id, event, body, attempts FROM webhooks"
                    " WHERE state = 'pending' AND due_at <= ? ORDER BY due_at, seq LIMIT 50",
                    (self.clock.now(),)).fetchall()
            if not due:
                return attempts
            for seq, delivery_id, event, body, tried in due:
                attempts += 1
                self._attempt(seq, delivery_id, event, body.encode(), tried + 1)

    def _attempt(self, seq: int, delivery_id: str, event: str, body: bytes,
                 attempt: int) -> None:
        assert self.url is not None and self.secret is not None
        now = self.clock.now()
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   SIGNATURE_HEADER: signature(body, self.secret), EVENT_HEADER: event,
                   DELIVERY_HEADER: delivery_id, TIMESTAMP_HEADER: str(int(now * 1000))}
        status: int | None = None
        error: str | None = None
        try:
            status = self._http.post(self.url, content=body, headers=headers).status_code
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        ok = status is not None and 200 <= status < 300
        if ok:
            state, due = "delivered", now
        elif attempt <= len(self.schedule):
            state, due = "pending", now + self.schedule[attempt - 1]
        else:
            state, due = "failed", now
        logger.info("webhook %s %s attempt %d: %s", event, delivery_id, attempt,
                    status if status is not None else error)
        with self.store.transaction() as db:
            db.execute("UPDATE webhooks SET state = ?, attempts = ?, last_status = ?,"
                       " last_error = ?, due_at = ?, updated_at = ? WHERE seq = ?",
                       (state, attempt, status, error, due, now, seq))

    def _next_due(self) -> float | None:
        with self.store.transaction() as db:
            row = db.execute("SELECT MIN(due_at) FROM webhooks WHERE state = 'pending'"
                             ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.deliver_due()
                due = self._next_due()
            except Exception:  # a closed database at shutdown, a bug: never a dead thread
                logger.exception("sandbox webhook sender")
                due = None
            wait = 1.0 if due is None else min(1.0, max(0.0, due - self.clock.now()))
            self._wake.wait(wait)
            self._wake.clear()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
        self._http.close()
