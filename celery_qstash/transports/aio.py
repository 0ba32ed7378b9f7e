"""Publish from asyncio code through the official SDK's ``AsyncQStash``.

One SDK client per event loop (and token, URL): an ``httpx.AsyncClient`` belongs to
the loop it was first used on, and a loop that ends takes its clients with it. No
thread is used per call. Retries, the deadline and the errors are those of the
sync transports (:class:`~celery_qstash.transports.batch.Attempts` is shared).
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from collections.abc import Sequence
from typing import Any

import httpx
from qstash import AsyncQStash
from qstash.errors import QStashError

from ..clock import Clock, SystemClock
from ..config import Settings
from ..errors import PublishError, scrub
from ..options import PublishRequest
from .base import PublishResult
from .batch import (
    Attempts,
    BatchOutcome,
    batch_body,
    chunked,
    classify,
    parse_batch,
    whole_request_error,
)
from .qstash import READ_TIMEOUT, _deadline

__all__ = ["AsyncQStashTransport", "async_client_for"]


class _DeadlineAsyncClient(httpx.AsyncClient):
    """The async SDK's HTTP client, each request cut to what is left of the call's budget."""

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        current = _deadline.get()
        if current is not None:
            deadline, clock = current
            left = max(0.05, deadline - clock.now())
            request.extensions["timeout"] = httpx.Timeout(left, connect=min(left, 1.0)).as_dict()
        return await super().send(request, **kwargs)


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], AsyncQStash]]
_clients = weakref.WeakKeyDictionary()


def async_client_for(settings: Settings) -> AsyncQStash:
    """This event loop's SDK client for these settings (ConfigurationError without a token)."""
    token = settings.require_token()
    loop = asyncio.get_running_loop()
    per_loop = _clients.setdefault(loop, {})
    key = (hashlib.sha256(token.encode()).hexdigest(), settings.qstash_url)
    client = per_loop.get(key)
    if client is None:
        client = AsyncQStash(token, retry=False, base_url=settings.qstash_url)
        # As in the sync transport: the SDK's client has a 600 s read timeout and no
        # way to pass another; ``http._client`` is private but the only handle there is.
        client.http._client = _DeadlineAsyncClient(timeout=READ_TIMEOUT)
        per_loop[key] = client
    return client


async def _sleep(clock: Clock, seconds: float) -> None:
    if isinstance(clock, SystemClock):
        await asyncio.sleep(seconds)
    else:  # a FakeClock moves instead of waiting
        clock.sleep(seconds)


class AsyncQStashTransport:
    """``publish`` (one message) and ``publish_many`` (``/v2/batch``) for asyncio code."""

    def __init__(
        self,
        client: AsyncQStash,
        *,
        timeout: float = 2.0,
        clock: Clock | None = None,
        secrets: tuple[str | None, ...] = (),
    ) -> None:
        self.client = client
        self.timeout = timeout
        self.clock = clock or SystemClock()
        self._secrets = secrets

    async def publish(
        self,
        request: PublishRequest,
        *,
        retry: bool = True,
        retry_policy: dict[str, Any] | None = None,
    ) -> PublishResult:
        attempts = Attempts(self.clock, self.timeout, retry, retry_policy)
        token = _deadline.set((attempts.deadline, self.clock))
        try:
            while True:
                try:
                    return await self._publish_once(request)
                except (httpx.HTTPError, QStashError) as exc:
                    known = classify(exc)
                    if known is None:
                        raise
                    status, text, retryable = known
                wait = attempts.failed(retryable)
                if wait is None:
                    break
                await _sleep(self.clock, wait)
        finally:
            _deadline.reset(token)
        text = scrub(text, (*self._secrets, request.authorization))[:500]
        where = f"HTTP {status}" if status is not None else "network error"
        raise PublishError(
            f"QStash did not accept task {request.task_id} ({where} after {attempts.made} "
            f"attempt(s)): {text}",
            status=status,
            error=text,
        )

    async def _publish_once(self, request: PublishRequest) -> PublishResult:
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
            res: Any = await self.client.message.enqueue_json(queue=request.queue, **common)
        else:
            res = await self.client.message.publish_json(
                delay=request.delay,
                not_before=request.not_before,
                flow_control=request.flow_control.as_sdk() if request.flow_control else None,  # type: ignore[arg-type]
                **common,
            )
        return PublishResult(message_id=res.message_id, deduplicated=bool(res.deduplicated))

    async def publish_many(
        self,
        requests: Sequence[PublishRequest],
        *,
        retry: bool = True,
        retry_policy: dict[str, Any] | None = None,
    ) -> list[BatchOutcome]:
        """As :meth:`QStashBatchTransport.publish_many`, awaiting each ``/v2/batch`` call."""
        out: list[BatchOutcome] = []
        stopped: PublishError | None = None
        for chunk in chunked(requests):
            if stopped is not None:
                out.extend([stopped] * len(chunk))
                continue
            outcomes, stopped = await self._send(chunk, retry, retry_policy)
            out.extend(outcomes)
        return out

    async def _send(
        self, chunk: Sequence[PublishRequest], retry: bool, retry_policy: dict[str, Any] | None
    ) -> tuple[list[BatchOutcome], PublishError | None]:
        body = batch_body(chunk)
        attempts = Attempts(self.clock, self.timeout, retry, retry_policy)
        token = _deadline.set((attempts.deadline, self.clock))
        try:
            while True:
                try:
                    answer = await self.client.http.request(
                        path="/v2/batch",
                        body=body,
                        headers={"Content-Type": "application/json"},
                        method="POST",
                    )
                    return parse_batch(chunk, answer, self._secrets), None
                except (httpx.HTTPError, QStashError) as exc:
                    known = classify(exc)
                    if known is None:
                        raise
                    status, text, retryable = known
                wait = attempts.failed(retryable)
                if wait is None:
                    break
                await _sleep(self.clock, wait)
        finally:
            _deadline.reset(token)
        error = whole_request_error(chunk, status, text, attempts.made, self._secrets)
        return [error] * len(chunk), error


def get_async_transport(settings: Settings, *, clock: Clock | None = None) -> AsyncQStashTransport:
    """This loop's async transport for these settings (ConfigurationError without a token)."""
    return AsyncQStashTransport(
        async_client_for(settings),
        timeout=settings.publish_timeout,
        clock=clock,
        secrets=settings.secrets,
    )
