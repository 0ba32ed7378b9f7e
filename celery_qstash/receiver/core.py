"""Verify, classify, deduplicate and dispatch one QStash request (framework-free)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import jwt
from qstash import Receiver
from qstash.errors import SignatureError

from ..clock import Clock, SystemClock
from ..config import load_settings
from ..errors import ConfigurationError
from .callbacks import _email_callback, _email_failure
from .ledger import CallbackLedger, MemoryLedger
from .request import (
    EMAIL_CALLBACK,
    EMAIL_FAILURE,
    MAX_BODY_BYTES,
    Delivery,
    ReceivedRequest,
    ReceiverResponse,
)

log = logging.getLogger("celery_qstash.receiver")



def classify(request: ReceivedRequest, body: Any) -> str | None:
    """The kind of a verified request, or None if it is nothing this receiver handles."""
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
    """

    def __init__(
        self,
        celery_app: Any,
        *,
        url: str | None = None,
        current_signing_key: str | None = None,
        next_signing_key: str | None = None,
        ledger: CallbackLedger | None = None,
        clock: Clock | None = None,
        clock_tolerance: int = 0,
        max_body: int = MAX_BODY_BYTES,
    ) -> None:
        self.app = celery_app
        self.url = url
        self._keys = (current_signing_key, next_signing_key)
        self.ledger: CallbackLedger = ledger or MemoryLedger()
        self.clock: Clock = clock or SystemClock()
        self.clock_tolerance = clock_tolerance
        self.max_body = max_body
        self.handlers: dict[str, Handler] = {
            EMAIL_CALLBACK: _email_callback,
            EMAIL_FAILURE: _email_failure,
        }

    # -- the four steps -----------------------------------------------------------

    def handle(self, request: ReceivedRequest) -> ReceiverResponse:
        if request.method.upper() != "POST":
            return ReceiverResponse(405, {"error": "QStash callbacks are POST requests"})
        if len(request.body) > self.max_body:
            return ReceiverResponse(413, {"error": f"body over {self.max_body} bytes"})
        try:
            keys, url = self._config(request)
        except ConfigurationError as exc:
            log.error("QStash callback refused: %s", exc)
            return ReceiverResponse(503, {"error": "receiver is not configured"})
        token_id = self._verified(request, keys, url)
        if token_id is None:
            return ReceiverResponse(401, {"error": "invalid or missing Upstash-Signature"})
        try:
            body = json.loads(request.body)
        except ValueError:
            return ReceiverResponse(400, {"error": "body is not JSON"})
        kind = classify(request, body)
        if kind is None or kind not in self.handlers:
            return ReceiverResponse(400, {"error": "not a QStash callback this receiver knows"})
        message_id = request.header("Upstash-Message-Id")
        if not message_id:
            return ReceiverResponse(400, {"error": "missing Upstash-Message-Id"})
        # Upstash-Message-Id is not signed: a captured request replayed under a fresh id
        # is caught by its token's own id (each delivery attempt is signed anew).
        now = self.clock.now()
        if not self.ledger.claim(token_id, now) or not self.ledger.claim(message_id, now):
            return ReceiverResponse(200, {"outcome": "duplicate", "messageId": message_id})
        return self.handlers[kind](self, Delivery(kind, message_id, body, request))

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
            url = url or settings.callback_url or request.url
        if not current or not nxt:
            raise ConfigurationError(
                "qstash_current_signing_key",
                "no signing keys: set qstash_current_signing_key and qstash_next_signing_key "
                "(QSTASH_CURRENT_SIGNING_KEY / QSTASH_NEXT_SIGNING_KEY)",
            )
        return (current, nxt), url

    def _verified(
        self, request: ReceivedRequest, keys: tuple[str, str], url: str
    ) -> str | None:
        """The verified token's ledger key (its ``jti``), or None if it does not verify."""
        signature = request.header("Upstash-Signature")
        if not signature:
            return None
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError:
            return None
        try:
            Receiver(*keys).verify(
                signature=signature, body=text, url=url, clock_tolerance=self.clock_tolerance
            )
        except SignatureError as exc:
            # The SDK's reason names URLs and hashes, never a key: fine for an info log.
            log.info("QStash callback refused: %s", exc)
            return None
        # Verified just above, so reading its claims without the key is safe.
        claims = jwt.decode(signature, options={"verify_signature": False})
        return "jwt:" + str(claims.get("jti") or claims.get("body"))

    # -- shared by the email handlers ----------------------------------------------

    def find_task(self, name: str | None) -> Any:
        if not name:
            return None
        return self.app.tasks.get(name)
