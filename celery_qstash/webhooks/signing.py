"""AutoSend's webhook signature: ``X-Webhook-Signature`` = hex HMAC-SHA256 of the raw body.

The timestamp is not part of what is signed (AutoSend's design), so replay protection
comes from the timestamp's tolerance and deduplication on ``X-Webhook-Delivery-Id``
and on the body itself (see :mod:`.core`). :func:`signed_request` builds a correctly
signed request, for tests and for the sandbox that sends them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "DELIVERY_HEADER", "EVENT_HEADER", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "USER_AGENT",
    "signature", "signed_request", "verify_signature",
]

SIGNATURE_HEADER = "X-Webhook-Signature"
EVENT_HEADER = "X-Webhook-Event"
DELIVERY_HEADER = "X-Webhook-Delivery-Id"
TIMESTAMP_HEADER = "X-Webhook-Timestamp"
USER_AGENT = "AutoSend-Webhooks/1.0"


def signature(body: bytes, secret: str) -> str:
    """The hex HMAC-SHA256 of ``body`` with ``secret``, as AutoSend computes it."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, given: str | None, secrets: Iterable[str]) -> bool:
    """Does ``given`` sign ``body`` with one of ``secrets``? Constant time per secret, and
    every secret is tried, so the time taken says nothing about which one is close."""
    if not given:
        return False
    candidate = given.strip().lower().encode("ascii", "replace")
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(signature(body, secret).encode("ascii"), candidate)
    return matched


def signed_request(
    event: str,
    data: Mapping[str, Any],
    secret: str,
    *,
    created_at: datetime | None = None,
    delivery_id: str | None = None,
    timestamp_ms: int | None = None,
) -> tuple[bytes, dict[str, str]]:
    """``(body, headers)`` of a webhook as AutoSend sends it (the current envelope,
    ``X-Webhook-Timestamp`` in milliseconds)."""
    when = created_at or datetime.now(timezone.utc)
    payload = {"type": event, "createdAt": when.isoformat(timespec="milliseconds")
               .replace("+00:00", "Z"), "data": dict(data)}
    body = json.dumps(payload, separators=(",", ":")).encode()
    stamp = timestamp_ms if timestamp_ms is not None else int(when.timestamp() * 1000)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: signature(body, secret),
        EVENT_HEADER: event,
        DELIVERY_HEADER: delivery_id or str(uuid.uuid4()),
        TIMESTAMP_HEADER: str(stamp),
    }
    return body, headers
