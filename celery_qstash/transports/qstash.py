"""Publish through the official ``qstash`` SDK.

One SDK client per (token, URL) per process, created on first use, so settings
that change between tests take effect and connections are reused otherwise.
The SDK's own retry is off: Celery's ``retry``/``retry_policy`` drive ours, which
retries only network errors and 5xx. One deadline (``qstash_publish_timeout``, 2 s
by default) covers the whole call: each HTTP request's timeouts are cut to what
is left of it, and no attempt starts without time to finish. (httpx's timeouts are
per network operation, so a server that trickles its answer byte by byte could
still hold a request longer; QStash does not.)
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from contextvars import ContextVar
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
    return status, body


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
        # Celery's max_retries=None means "forever": here, until the time budget is spent.
        limit = policy["max_retries"]
        retries = (None if limit is None else int(limit)) if retry else 0
        deadline = self.clock.now() + self.timeout
        token = _deadline.set((deadline, self.clock))
        try:
            attempt = 0
            while True:
                try:
                    return self._publish_once(request)
                except httpx.LocalProtocolError as exc:  # our request is malformed: no retry
                    status, text, retryable = None, type(exc).__name__, False
                except httpx.TransportError as exc:
                    status, text, retryable = None, type(exc).__name__, True
                except QStashError as exc:
                    status, text = _upstream_error(exc)
                    retryable = status is not None and status >= 500
                interval = min(
                    float(policy["interval_start"]) + attempt * float(policy["interval_step"]),
                    float(policy["interval_max"]),
                )
                # Only start another attempt if it still has time to finish.
                room = deadline - self.clock.now() - interval
                if not retryable or (retries is not None and attempt >= retries) or room < 0.1:
                    break
                attempt += 1
                self.clock.sleep(interval)
        finally:
            _deadline.reset(token)
        # Raised outside the except blocks, so the SDK's exception (whose text may
        # hold what QStash echoed back) is not kept as __context__.
        raise self._error(request, status, text, attempt + 1)

    def _error(
        self, request: PublishRequest, status: int | None, text: str, attempts: int
    ) -> PublishError:
        # Scrub the whole text before shortening it: a cut could split a secret.
        text = scrub(text, (*self._secrets, request.authorization))[:500]
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


#: (deadline, clock) of the publish call running in this thread or task, if any.
_deadline: ContextVar[tuple[float, Clock] | None] = ContextVar(
    "celery_qstash_deadline", default=None
)

#: Reads (status, DLQ) are not on a web request's path; they get a roomier timeout.
READ_TIMEOUT = httpx.Timeout(10.0, connect=2.0)


class _DeadlineClient(httpx.Client):
    """The SDK's HTTP client, with each request's timeout cut to what is left of the
    current publish call's budget, so retries included it stays within ``timeout``."""

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        current = _deadline.get()
        if current is not None:
            deadline, clock = current
            left = max(0.05, deadline - clock.now())
            request.extensions["timeout"] = httpx.Timeout(left, connect=min(left, 1.0)).as_dict()
        return super().send(request, **kwargs)


_clients: dict[tuple[str, str], QStash] = {}
_lock = threading.Lock()


def _client(token: str, url: str) -> QStash:
    # Keyed by a hash so the token itself is not kept in yet another place.
    key = (hashlib.sha256(token.encode()).hexdigest(), url)
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = QStash(token, retry=False, base_url=url)
            # The SDK builds an httpx.Client with a 600 s read timeout and no way to
            # pass another; ``http._client`` is private but the only handle there is.
            client.http._client.close()
            client.http._client = _DeadlineClient(timeout=READ_TIMEOUT)
            _clients[key] = client
        return client


def client_for(settings: Settings) -> QStash:
    """The process's SDK client for these settings (ConfigurationError without a token)."""
    return _client(settings.require_token(), settings.qstash_url)


def get_transport(settings: Settings, *, clock: Clock | None = None) -> QStashTransport:
    """The process's transport for these settings (raises ConfigurationError without a token)."""
    return QStashTransport(
        client_for(settings),
        timeout=settings.publish_timeout,
        clock=clock,
        secrets=settings.secrets,
    )
