"""Publish through the official ``qstash`` SDK.

One SDK client per (token, URL) per process, created on first use, so settings
that change between tests take effect and connections are reused otherwise.
The SDK's own retry is off: Celery's ``retry``/``retry_policy`` drive ours, which
retries only network errors and 5xx, and never holds the caller longer than
``qstash_publish_timeout`` (2 s by default) in all.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from typing import Any

import httpx
from qstash import QStash
from qstash.errors import QStashError, RateLimitExceededError

from ..clock import Clock, SystemClock
from ..config import Settings
from ..errors import PublishError, scrub
from ..options import PublishRequest
from .base import PublishResult

__all__ = ["DEFAULT_RETRY_POLICY", "QStashTransport", "client_for", "get_transport"]

#: Celery's own default ``task_publish_retry_policy`` (celery/app/defaults.py).
DEFAULT_RETRY_POLICY: dict[str, Any] = {
    "max_retries": 3,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 1,
}

_STATUS = re.compile(r"Request failed with status: (\d+), body: (.*)", re.S)


def _upstream_error(exc: QStashError) -> tuple[int | None, str]:
    """The HTTP status and QStash's ``{"error": ...}`` text out of an SDK exception."""
    if isinstance(exc, RateLimitExceededError) or type(exc).__name__.endswith("LimitExceededError"):
        return 429, str(exc)
    match = _STATUS.match(str(exc))
    if not match:
        return None, str(exc)
    status, body = int(match.group(1)), match.group(2)
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
            body = parsed["error"]
    except ValueError:
        pass
    return status, body[:500]


class QStashTransport:
    """Send each request as one QStash message (publish, or enqueue for a queue)."""

    def __init__(
        self,
        client: QStash,
        *,
        timeout: float = 2.0,
        clock: Clock | None = None,
        secrets: tuple[str | None, ...] = (),
    ) -> None:
        self.client = client
        self.timeout = timeout
        self.clock = clock or SystemClock()
        self._secrets = secrets

    def publish(
        self,
        request: PublishRequest,
        *,
        retry: bool = True,
        retry_policy: dict[str, Any] | None = None,
    ) -> PublishResult:
        policy = {**DEFAULT_RETRY_POLICY, **(retry_policy or {})}
        retries = int(policy["max_retries"] or 0) if retry else 0
        start = self.clock.now()
        attempt = 0
        while True:
            try:
                return self._publish_once(request)
            except (httpx.TransportError, QStashError) as exc:
                status, text = (
                    (None, type(exc).__name__)
                    if isinstance(exc, httpx.TransportError)
                    else _upstream_error(exc)
                )
                retryable = status is None or status >= 500
                interval = min(
                    float(policy["interval_start"]) + attempt * float(policy["interval_step"]),
                    float(policy["interval_max"]),
                )
                out_of_time = self.clock.now() - start + interval >= self.timeout
                if not retryable or attempt >= retries or out_of_time:
                    raise self._error(request, status, text, attempt + 1) from None
                attempt += 1
                self.clock.sleep(interval)

    def _error(
        self, request: PublishRequest, status: int | None, text: str, attempts: int
    ) -> PublishError:
        text = scrub(text, (*self._secrets, request.authorization))
        where = f"HTTP {status}" if status is not None else "network error"
        return PublishError(
            f"QStash did not accept task {request.task_id} ({where} after {attempts} "
            f"attempt(s)): {text}",
            status=status,
            error=text,
        )

    def _publish_once(self, request: PublishRequest) -> PublishResult:
        common: dict[str, Any] = {
            "url": request.url,
            "body": request.body,
            "headers": {**request.headers, "Authorization": request.authorization},
            "retries": request.retries,
            "retry_delay": request.retry_delay,
            "callback": request.callback,
            "failure_callback": request.failure_callback,
            "deduplication_id": request.deduplication_id,
            "timeout": request.timeout,
            "label": request.label,
        }
        if request.redact_headers:
            common["redact"] = {"header": list(request.redact_headers)}
        if request.queue:
            res: Any = self.client.message.enqueue_json(queue=request.queue, **common)
        else:
            res = self.client.message.publish_json(
                delay=request.delay,
                not_before=request.not_before,
                flow_control=request.flow_control.as_sdk() if request.flow_control else None,  # type: ignore[arg-type]
                **common,
            )
        return PublishResult(message_id=res.message_id, deduplicated=bool(res.deduplicated))


_clients: dict[tuple[str, str], QStash] = {}
_lock = threading.Lock()


def _client(token: str, url: str, timeout: float) -> QStash:
    # Keyed by a hash so the token itself is not kept in yet another place.
    key = (hashlib.sha256(token.encode()).hexdigest(), url)
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = QStash(token, retry=False, base_url=url)
            _clients[key] = client
        # The SDK's default is a 600 s read timeout; a web request must never wait that long.
        # ``http._client`` is the SDK's httpx.Client (private, but the only handle there is).
        client.http._client.timeout = httpx.Timeout(timeout, connect=min(timeout, 1.0))
        return client


def client_for(settings: Settings) -> QStash:
    """The process's SDK client for these settings (ConfigurationError without a token)."""
    return _client(settings.require_token(), settings.qstash_url, settings.publish_timeout)


def get_transport(settings: Settings, *, clock: Clock | None = None) -> QStashTransport:
    """The process's transport for these settings (raises ConfigurationError without a token)."""
    return QStashTransport(
        client_for(settings),
        timeout=settings.publish_timeout,
        clock=clock,
        secrets=settings.secrets,
    )
