"""Verify, classify, deduplicate and dispatch one QStash request (framework-free)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ..clock import Clock, SystemClock
from ..config import load_settings
from ..errors import ConfigurationError
from ..publish.message import TASK_RUN, is_task_message
from ..tasks.deferred import DeferredTask
from ..tasks.task import QStashTask
from .callbacks import _email_callback, _email_failure
from .execute import TaskObserver, run_task
from .ledger import DEFAULT_LEASE_SECONDS, DeliveryLedger, ledger_from_settings
from .request import (
    EMAIL_CALLBACK,
    EMAIL_FAILURE,
    MAX_BODY_BYTES,
    Delivery,
    ReceivedRequest,
    ReceiverResponse,
    refused_early,
)
from .signature import verify

log = logging.getLogger("celery_qstash.receiver")



#: Seconds a duplicate delivery is asked to wait while another one runs the same message.
BUSY_RETRY_AFTER = 5


def delivery_key(kind: str, body: Any, message_id: str = "") -> str | None:
    """The ledger key of a delivery, from its signed body.

    A task message carries a nonce of its own publish (each ``self.retry`` publishes
    anew, so a Celery retry, which keeps its task id, is a new key); a callback is one
    per attempt of its source message.
    """
    if kind == TASK_RUN:
        nonce = body.get("delivery")
        if not isinstance(nonce, str) or not nonce:
            return None
        # A schedule sends the same body every firing: each firing is its own delivery.
        return f"task:{nonce}:{message_id}" if body.get("schedule") else f"task:{nonce}"
    source = body.get("sourceMessageId")
    if not isinstance(source, str) or not source:
        return None
    return f"{kind}:{source}:{body.get('retried')}:{body.get('dlqId') or ''}"


def classify(request: ReceivedRequest, body: Any) -> str | None:
    """The kind of a verified request, or None if it is nothing this receiver handles."""
    if is_task_message(body):
        return TASK_RUN
    if not isinstance(body, dict) or "sourceMessageId" not in body or "status" not in body:
        return None
    # The failure callback is the only one that carries the DLQ id.
    return EMAIL_FAILURE if "dlqId" in body else EMAIL_CALLBACK


Handler = Callable[["CallbackReceiver", Delivery], ReceiverResponse]


class CallbackReceiver:
    """Verify, classify, deduplicate and dispatch one QStash request (framework-free).

    ``url``: the public URL QStash calls and signs for (default ``qstash_callback_url``,
    else the URL the request reached, whose host is whatever the client says: set one
    of the two in production). Signing
    keys default to ``qstash_current_signing_key`` / ``qstash_next_signing_key``.
    ``metrics``: a :class:`~.execute.TaskObserver` around each deferred task body, such
    as :class:`celery_qstash.contrib.prometheus.ReceiverMetrics` (none by default).
    """

    def __init__(
        self,
        celery_app: Any,
        *,
        url: str | None = None,
        current_signing_key: str | None = None,
        next_signing_key: str | None = None,
        ledger: DeliveryLedger | None = None,
        clock: Clock | None = None,
        clock_tolerance: int = 0,
        max_body: int = MAX_BODY_BYTES,
        metrics: TaskObserver | None = None,
    ) -> None:
        self.app = celery_app
        #: Watches each deferred task body (runtime, in flight): see TaskObserver.
        self.metrics = metrics
        self.url = url
        self._keys = (current_signing_key, next_signing_key)
        self._ledger = ledger
        self.clock: Clock = clock or SystemClock()
        self.clock_tolerance = clock_tolerance
        self.max_body = max_body
        self.handlers: dict[str, Handler] = {
            EMAIL_CALLBACK: _email_callback,
            EMAIL_FAILURE: _email_failure,
            TASK_RUN: run_task,
        }

    # -- the four steps -----------------------------------------------------------

    def handle(self, request: ReceivedRequest) -> ReceiverResponse:
        early = refused_early(request, self.max_body, "QStash deliveries")
        if early is not None:
            return early
        try:
            keys, url = self._config(request)
        except ConfigurationError as exc:
            log.error("QStash delivery refused: %s", exc)
            return ReceiverResponse(503, {"error": "receiver is not configured"})
        if not self._verified(request, keys, url):
            return ReceiverResponse(401, {"error": "invalid or missing Upstash-Signature"})
        try:
            body = json.loads(request.body)
        except (ValueError, RecursionError):
            return ReceiverResponse(400, {"error": "body is not JSON"})
        kind = classify(request, body)
        if kind is None or kind not in self.handlers:
            return ReceiverResponse(400, {"error": "not a QStash delivery this receiver knows"})
        message_id = request.header("Upstash-Message-Id")
        if not message_id:  # QStash sends it with every delivery
            return ReceiverResponse(400, {"error": "missing Upstash-Message-Id"})
        key = delivery_key(kind, body, message_id)
        if key is None:
            return ReceiverResponse(400, {"error": "malformed delivery body"})
        # The key comes from the signed body: a captured request replayed under a fresh
        # Upstash-Message-Id (which is not signed) is still the same delivery.
        now = self.clock.now()
        try:
            claim = self.ledger.begin(key, now, self.lease_for(kind, body))
        except Exception as exc:
            # A ledger that cannot be built or reached (qstash_ledger_url, Redis down):
            # nothing ran, and QStash retries a 503 later.
            log.error("QStash delivery deferred: the delivery ledger failed (%s)",
                      type(exc).__name__)
            return ReceiverResponse(503, {"error": "delivery ledger unavailable"},
                                    headers={"Retry-After": str(BUSY_RETRY_AFTER)})
        if claim == "done":
            return ReceiverResponse(200, {"outcome": "duplicate", "messageId": message_id})
        if claim == "busy":
            # Not a 2xx: if the delivery that holds the lease fails, QStash must still
            # have this message to retry.
            return ReceiverResponse(409, {"outcome": "busy", "messageId": message_id},
                                    headers={"Retry-After": str(BUSY_RETRY_AFTER)})
        try:
            response = self.handlers[kind](self, Delivery(kind, message_id, body, request))
        except BaseException:
            self.ledger.release(key)
            raise
        try:
            if response.status < 300:
                self.ledger.finish(key, self.clock.now())
            else:
                self.ledger.release(key)
        except Exception as exc:
            # The body ran; its done marker is lost. QStash has the 2xx, so it will not
            # redeliver; a duplicate delivery in the lease's lifetime still waits.
            log.error("QStash delivery %s: the ledger could not record it (%s)",
                      message_id, type(exc).__name__)
        return response

    @property
    def ledger(self) -> DeliveryLedger:
        """The delivery ledger: the one given, else ``qstash_ledger_url``'s (read on first
        use, as settings are: a broken setting is a 503, not a failed import)."""
        if self._ledger is None:
            self._ledger = ledger_from_settings(self.app)
        return self._ledger

    def lease_for(self, kind: str, body: Any) -> float:
        """How long a delivery holds its key: the task's time limit (a running body must
        keep its lease), else the default."""
        if kind == TASK_RUN:
            name = body.get("task") if isinstance(body, dict) else None
            task = self.app.tasks.get(name) if isinstance(name, str) else None
            limit = getattr(task, "time_limit", None) or getattr(task, "soft_time_limit", None)
            if isinstance(limit, (int, float)) and limit > 0:
                return float(limit) + BUSY_RETRY_AFTER
        return DEFAULT_LEASE_SECONDS

    def _config(self, request: ReceivedRequest) -> tuple[tuple[str, str], str]:
        """Signing keys and the URL signatures must name (settings are read per request)."""
        current, nxt = self._keys
        url = self.url
        if current is None or nxt is None or url is None:
            settings = load_settings(self.app.conf)
            current = current or settings.current_signing_key
            nxt = nxt or settings.next_signing_key or current
            # The Host header is the client's to choose: a configured URL is authoritative,
            # the URL the request reached is only trusted when nothing is configured.
            # Deferred tasks may go to their own URL (qstash_receiver_url): the one whose
            # path is the request's is the one QStash signed for.
            configured = [u for u in (settings.receiver_url, settings.callback_url) if u]
            path = urlsplit(request.url).path.rstrip("/")
            url = url or next(
                (u for u in configured if urlsplit(u).path.rstrip("/") == path),
                configured[0] if configured else request.url,
            )
        if not current or not nxt:
            raise ConfigurationError(
                "qstash_current_signing_key",
                "no signing keys: set qstash_current_signing_key and qstash_next_signing_key "
                "(QSTASH_CURRENT_SIGNING_KEY / QSTASH_NEXT_SIGNING_KEY)",
            )
        return (current, nxt), url

    def _verified(self, request: ReceivedRequest, keys: tuple[str, str], url: str) -> bool:
        """Does ``Upstash-Signature`` verify for this body and URL, on our clock?"""
        signature = request.header("Upstash-Signature")
        if not signature:
            return False
        return verify(signature, request.body, url, keys, now=self.clock.now(),
                      tolerance=self.clock_tolerance)

    # -- shared by the email handlers ----------------------------------------------

    def find_task(self, name: str | None) -> Any:
        """The app's task of that name, if it is one this library publishes (a signed
        callback never runs the hooks of an ordinary task of the app)."""
        if not name:
            return None
        task = self.app.tasks.get(name)
        return task if isinstance(task, (QStashTask, DeferredTask)) else None
