"""JSON shapes of QStash objects (Message, LogEntry, DLQ message, Schedule).

Field names follow the official SDK's parsers (qstash-py 3.4.0) and the OpenAPI
spec; where the two spell a field differently, both spellings are emitted.
Redaction happens here: what the API shows is ``REDACTED:<sha256 hex>``, while
the stored message keeps the real values for delivery.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from celery_qstash.local.serving import JSONBodyError, parse_json

from .publish import CallbackOptions, PublishOptions, Redaction

__all__ = ["log_entry", "message_json", "redacted", "shown_body", "shown_headers"]

JSON = dict[str, Any]


def redacted(value: bytes | str) -> str:
    raw = value.encode() if isinstance(value, str) else value
    return "REDACTED:" + hashlib.sha256(raw).hexdigest()


def _shown(value: str) -> str:
    # A stored secret is already its redacted form (see store/secrets.py): shown as is.
    return value if value.startswith("REDACTED:") else redacted(value)


def shown_headers(headers: dict[str, list[str]], redaction: Redaction) -> dict[str, list[str]]:
    return {
        name: [_shown(v) for v in values] if redaction.hides_header(name) else list(values)
        for name, values in headers.items()
    }


def shown_body(body: bytes, redaction: Redaction) -> bytes:
    if redaction.body:
        return redacted(body).encode()
    if redaction.body_fields:
        return _redact_json_fields(body, redaction.body_fields)
    return body


def _redact_json_fields(body: bytes, fields: list[str]) -> bytes:
    """A JSON body with its base64 ``fields`` shown as ``REDACTED:<sha256 of the bytes>``."""
    try:
        data = parse_json(body)
    except JSONBodyError:
        return redacted(body).encode()  # not the JSON we wrote: hide it all
    if not isinstance(data, dict):
        return redacted(body).encode()
    for name in fields:
        value = data.get(name)
        if isinstance(value, str):
            try:
                raw = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raw = value.encode()
            data[name] = redacted(raw)
    return json.dumps(data).encode()


def _body_fields(body: bytes, prefix: str = "body") -> JSON:
    try:
        return {prefix: body.decode("utf-8")}
    except UnicodeDecodeError:
        return {prefix + "Base64": base64.b64encode(body).decode("ascii")}


def _callback_fields(options: PublishOptions, header_suffix: str) -> JSON:
    out: JSON = {}
    pairs: list[tuple[str, CallbackOptions | None]] = [
        ("callback", options.callback), ("failureCallback", options.failure_callback)
    ]
    for name, cb in pairs:
        if cb is not None:
            out[name] = cb.url
            if cb.headers:
                out[name + header_suffix] = shown_headers(cb.headers, options.redact)
    return out


def _common(message: JSON, options: PublishOptions) -> JSON:
    out: JSON = {}
    for key, field in (("topic", "topicName"), ("endpoint", "endpointName"),
                       ("queue", "queueName"), ("schedule_id", "scheduleId")):
        if message.get(key):
            out[field] = message[key]
    if options.labels:
        out["label"] = options.labels[0]
        out["labels"] = list(options.labels)
    fc = options.flow_control
    if fc is not None:
        out["flowControlKey"] = fc.key
        if fc.parallelism is not None:
            out["parallelism"] = fc.parallelism
        if fc.rate is not None:
            out["rate"] = fc.rate
        # Always, as QStash does: qstash-py tests/test_message.py test_batch_with_flow_control
        # reads ``period == 1`` back for a key with parallelism only.
        out["period"] = fc.period_s
    return out


def message_json(message: JSON) -> JSON:
    """A stored message as ``GET /v2/messages/{id}`` returns it."""
    options = PublishOptions.from_dict(message["opts"])
    out: JSON = {
        "messageId": message["id"],
        "url": message["url"],
        "method": options.method,
        "header": shown_headers(options.headers, options.redact),
        "maxRetries": options.retries,
        "notBefore": message["not_before_ms"],
        "createdAt": message["created_ms"],
        "callerIP": message.get("caller_ip") or "127.0.0.1",
    }
    out.update(_body_fields(shown_body(options.body, options.redact)))
    out.update(_common(message, options))
    out.update(_callback_fields(options, "Header"))
    if options.retry_delay:
        out["retryDelayExpression"] = options.retry_delay
    if options.timeout_ms is not None:
        out["timeout"] = options.timeout_ms
    return out


def log_entry(message: JSON, state: str, time_ms: int, extra: JSON | None = None,
              options: PublishOptions | None = None) -> JSON:
    """A LogEntry (``GET /v2/events`` / ``/v2/logs``); bodies are base64 there.

    ``options``: ``message["opts"]`` already parsed (a publish has them at hand), so
    they are not read back from the dict."""
    if options is None:
        options = PublishOptions.from_dict(message["opts"])
    out: JSON = {
        "time": time_ms,
        "messageId": message["id"],
        "state": state,
        "url": message["url"],
        "method": options.method,
        "header": shown_headers(options.headers, options.redact),
        "body": base64.b64encode(shown_body(options.body, options.redact)).decode("ascii"),
        "maxRetries": options.retries,
        "createdAt": message["created_ms"],
        "notBefore": message["not_before_ms"],
    }
    out.update(_common(message, options))
    out.update(_callback_fields(options, "Headers"))
    if options.retry_delay:
        out["retryDelayExpr"] = options.retry_delay
        out["retryDelayExpression"] = options.retry_delay
    if options.timeout_ms is not None:
        out["timeout"] = options.timeout_ms
    if extra:
        out.update(extra)
    return out


def response_fields(status: int | None, headers: dict[str, list[str]], body: bytes,
                    error: str | None) -> JSON:
    """The destination's answer, as ERROR log entries and DLQ messages carry it."""
    out: JSON = {}
    if status is not None:
        out["responseStatus"] = status
        out["responseHeader"] = headers
        out["responseHeaders"] = headers
        out["responseBody"] = base64.b64encode(body).decode("ascii")
    if error:
        out["error"] = error
    return out


def dlq_json(entry: JSON) -> JSON:
    """A DLQ message: the Message object plus dlqId and the last response."""
    out = message_json(entry["message"])
    out["dlqId"] = entry["dlq_id"]
    out["responseStatus"] = entry.get("response_status") or 0
    out["responseHeader"] = entry.get("response_headers") or {}
    body = base64.b64decode(entry.get("response_body") or "")
    out.update(_body_fields(body, "responseBody"))
    if entry.get("error"):
        out["error"] = entry["error"]
    return out
