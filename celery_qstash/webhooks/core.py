"""Verify, deduplicate, normalise and dispatch one AutoSend webhook (framework-free).

Each request, in order (the first failure answers and fires nothing):

1. ``POST`` (405), a body within ``max_body`` (413), a secret configured (503: a broken
   deploy AutoSend should retry once it is fixed);
2. ``X-Webhook-Signature`` is the hex HMAC-SHA256 of the raw body with one of the
   secrets, compared in constant time (401);
3. ``X-Webhook-Timestamp`` (milliseconds, or seconds as the older docs say) is within
   ``tolerance`` of now, and ``X-Webhook-Delivery-Id`` is present (400): the timestamp
   is not signed, so this only narrows what a captured request can be replayed for;
4. the body is one of AutoSend's envelopes (400);
5. once: a delivery id already handled, or a body already handled under another
   delivery id (a replay), is answered 200 and fires nothing; a delivery being handled
   right now by another process is a 409, which AutoSend retries;
6. the event's task is found (:mod:`.resolve`), the event is kept in the event store
   (a store that cannot be reached is a 503, so AutoSend retries and nothing is lost),
   and :data:`celery_qstash.signals.email_event` is sent. A handler that raises is
   logged and the answer is still 200: AutoSend would otherwise send the event again,
   to the handlers that did not raise too.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any

from ..clock import Clock, SystemClock
from ..config import load_settings
from ..errors import ConfigurationError
from ..receiver.ledger import DeliveryLedger, ledger_from_settings
from ..receiver.request import ReceivedRequest, ReceiverResponse, refused_early
from ..signals import email_event
from .events import EmailEvent, WebhookPayloadError, parse_event, parse_time
from .resolve import find_task, sender_for
from .signing import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify_signature,
)
from .store import EventStore, event_store_for

__all__ = ["DEFAULT_TOLERANCE", "MAX_WEBHOOK_BODY", "WebhookReceiver"]

log = logging.getLogger("celery_qstash.webhooks")

#: How far ``X-Webhook-Timestamp`` may be from now, either way (Stripe's and Svix's 5 min).
DEFAULT_TOLERANCE = 300.0
#: An event is a small JSON object; anything this large is not one.
MAX_WEBHOOK_BODY = 256 * 1024
#: How long one delivery holds its key while it is handled (AutoSend waits 10 s).
LEASE_SECONDS = 30.0
BUSY_RETRY_AFTER = 5


class WebhookReceiver:
    """AutoSend's webhooks for ``celery_app``: :meth:`handle` one plain request.

    ``secret``: one secret or several (rotation); default ``autosend_webhook_secret``,
    read per request. ``ledger``: the delivery ledger (default ``qstash_ledger_url``'s,
    the receiver's). ``store``: the event store (default ``autosend_event_store_url``'s,
    else this app's in-process one). ``lookup_logs=False`` never asks QStash's logs
    which task sent an email (only the store's links are used).
    """

    def __init__(
        self,
        celery_app: Any,
        *,
        secret: str | Sequence[str] | None = None,
        tolerance: float = DEFAULT_TOLERANCE,
        ledger: DeliveryLedger | None = None,
        store: EventStore | None = None,
        clock: Clock | None = None,
        max_body: int = MAX_WEBHOOK_BODY,
        lookup_logs: bool = True,
    ) -> None:
        if not tolerance > 0:
            raise ValueError(f"tolerance must be a positive number of seconds, got {tolerance!r}")
        self.app = celery_app
        self._secrets = (secret,) if isinstance(secret, str) else (
            tuple(secret) if secret is not None else None)
        self.tolerance = float(tolerance)
        self._ledger = ledger
        self._store = store
        self.clock: Clock = clock or SystemClock()
        self.max_body = max_body
        self.lookup_logs = lookup_logs

    @property
    def ledger(self) -> DeliveryLedger:
        if self._ledger is None:
            self._ledger = ledger_from_settings(self.app)
        return self._ledger

    @property
    def store(self) -> EventStore:
        if self._store is None:
            self._store = event_store_for(self.app)
        return self._store

    def _secrets_now(self) -> tuple[str, ...]:
        secrets = self._secrets or load_settings(self.app.conf).webhook_secrets
        if not secrets:
            raise ConfigurationError(
                "autosend_webhook_secret",
                "no webhook secret: set autosend_webhook_secret (AUTOSEND_WEBHOOK_SECRET) "
                "to the secret AutoSend showed when the webhook was created",
            )
        return secrets

    def handle(self, request: ReceivedRequest) -> ReceiverResponse:
        early = refused_early(request, self.max_body, "AutoSend's webhooks")
        if early is not None:
            return early
        try:
            secrets = self._secrets_now()
        except ConfigurationError as exc:
            log.error("AutoSend webhook refused: %s", exc)
            return ReceiverResponse(503, {"error": "webhook endpoint is not configured"})
        if not verify_signature(request.body, request.header(SIGNATURE_HEADER), secrets):
            return ReceiverResponse(401, {"error": f"invalid or missing {SIGNATURE_HEADER}"})
        refused = self._check_headers(request)
        if refused is not None:
            return refused
        try:
            event = parse_event(
                json.loads(request.body), delivery_id=request.header(DELIVERY_HEADER),
                header_event=request.header(EVENT_HEADER),
            )
        except (ValueError, RecursionError) as exc:
            why = str(exc) if isinstance(exc, WebhookPayloadError) else "the body is not JSON"
            return ReceiverResponse(400, {"error": why})
        return self._once(request, event)

    def _check_headers(self, request: ReceivedRequest) -> ReceiverResponse | None:
        stamp = parse_time(request.header(TIMESTAMP_HEADER))
        if stamp is None:
            return ReceiverResponse(400, {"error": f"missing or malformed {TIMESTAMP_HEADER}"})
        if abs(self.clock.now() - stamp.timestamp()) > self.tolerance:
            return ReceiverResponse(
                400, {"error": f"{TIMESTAMP_HEADER} is more than {self.tolerance:g} s from now"}
            )
        delivery = request.header(DELIVERY_HEADER)
        if not delivery or len(delivery) > 200:
            return ReceiverResponse(400, {"error": f"missing or malformed {DELIVERY_HEADER}"})
        return None

    def _once(self, request: ReceivedRequest, event: EmailEvent) -> ReceiverResponse:
        """Run :meth:`_dispatch` once per delivery id and once per signed body."""
        ledger, now = self.ledger, self.clock.now()
        keys = (f"autosend:delivery:{event.delivery_id}",
                f"autosend:body:{hashlib.sha256(request.body).hexdigest()}")
        taken: list[str] = []
        for key in keys:
            claim = ledger.begin(key, now, LEASE_SECONDS)
            if claim == "run":
                taken.append(key)
                continue
            for held in taken:  # a replay's new delivery id is done too: it fires nothing
                if claim == "done":
                    ledger.finish(held, now)
                else:
                    ledger.release(held)
            if claim == "done":
                return ReceiverResponse(200, {"outcome": "duplicate",
                                              "deliveryId": event.delivery_id})
            return ReceiverResponse(409, {"outcome": "busy", "deliveryId": event.delivery_id},
                                    headers={"Retry-After": str(BUSY_RETRY_AFTER)})
        try:
            response = self._dispatch(event)
        except BaseException:
            for key in keys:
                ledger.release(key)
            raise
        for key in keys:
            if response.status < 300:
                ledger.finish(key, self.clock.now())
            else:
                ledger.release(key)
        return response

    def _dispatch(self, event: EmailEvent) -> ReceiverResponse:
        found = find_task(self.app, self.store, event, lookup_logs=self.lookup_logs)
        if found is not None:
            event = event.with_task(*found)
        try:
            self.store.add(event)
        except Exception as exc:
            # Not a handler's fault: AutoSend must try again once the store is back.
            log.error("AutoSend webhook %s not kept (event store: %s); answering 503 so "
                      "AutoSend retries", event.delivery_id, type(exc).__name__)
            return ReceiverResponse(503, {"error": "event store unavailable"})
        # Celery's Signal.send logs a handler that raises and goes on to the next one.
        email_event.send(sender=sender_for(self.app, event), **event.signal_kwargs())
        return ReceiverResponse(200, {"outcome": "accepted", "event": event.event,
                                      "taskId": event.task_id})
