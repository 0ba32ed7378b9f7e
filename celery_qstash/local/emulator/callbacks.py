"""QStash's callbacks: the callback after each attempt and the failure callback once a
message has failed for good, as new messages carrying QStash's callback body."""

from __future__ import annotations

import base64
import json

from .publish import CallbackOptions, PublishOptions, Redaction
from .store import JSON, AttemptResult, CallbackSpec
from .wire import shown_headers

__all__ = ["callback_specs"]


def callback_specs(message: JSON, result: AttemptResult, state: str,
                   dlq_id: str | None) -> list[CallbackSpec]:
    """QStash's callback (after each attempt) and failure callback (once, on FAILED)."""
    specs: list[CallbackSpec] = []
    opts = message["opts"]
    failing = state == "FAILED" and opts.get("failure_callback") is not None
    if state == "CANCELED" or (opts.get("callback") is None and not failing):
        return specs  # the usual message has none: build no payload for it
    options = PublishOptions.from_dict(opts)
    payload: JSON = {
        "status": result.status if result.status is not None else 0,
        "header": result.headers,
        "body": base64.b64encode(result.body).decode("ascii"),
        "retried": message["retried"],
        "maxRetries": options.retries,
        "sourceMessageId": message["id"],
        "url": message["url"],
        "method": options.method,
        # Headers marked for redaction (e.g. an API key) stay redacted here too.
        "sourceHeader": shown_headers(options.headers, options.redact),
        "sourceBody": base64.b64encode(options.body).decode("ascii"),
        "notBefore": str(message["not_before_ms"]),
        "createdAt": str(message["created_ms"]),
        "callerIP": message.get("caller_ip") or "127.0.0.1",
    }
    for key, field in (("topic", "topicName"), ("endpoint", "endpointName"),
                       ("schedule_id", "scheduleId"), ("queue", "queueName")):
        if message.get(key):
            payload[field] = message[key]
    if result.error and result.status is None:
        payload["error"] = result.error
    if options.callback is not None:
        specs.append(_callback_spec(options, options.callback, payload, "callback"))
    if state == "FAILED" and options.failure_callback is not None:
        failure = dict(payload, dlqId=dlq_id)
        specs.append(_callback_spec(options, options.failure_callback, failure,
                                    "failure_callback"))
    return specs


def _callback_spec(source: PublishOptions, cb: CallbackOptions, payload: JSON,
                   kind: str) -> CallbackSpec:
    headers = {"Content-Type": ["application/json"], **cb.headers}
    options = PublishOptions(
        body=json.dumps(payload).encode(),
        method=cb.method or "POST",
        headers=headers,
        retries=cb.retries if cb.retries is not None else source.retries,
        retry_delay=cb.retry_delay or source.retry_delay,
        timeout_ms=cb.timeout_ms if cb.timeout_ms is not None else source.timeout_ms,
        delay_ms=cb.delay_ms or 0,
        labels=list(source.labels),
        # The callback inherits the source's redaction: its forwarded headers (an
        # Authorization for the callback URL) and the source body it carries are
        # shown redacted in messages, logs and the DLQ, and delivered in clear.
        redact=Redaction(
            all_headers=source.redact.all_headers, headers=list(source.redact.headers),
            body_fields=["sourceBody"] if source.redact.body else [],
        ),
    )
    return CallbackSpec(cb.url, options, kind)
