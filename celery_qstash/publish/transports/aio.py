"""Publish from asyncio code through the official SDK's ``AsyncQStash``.

One SDK client per event loop (and token, URL): an ``httpx.AsyncClient`` belongs to
the loop it was first used on, and a loop that ends takes its clients with it. No
thread is used per call. Retries, the deadline and the errors are those of the
sync transports (:class:`~celery_qstash.publish.transports.qstash.Attempts` is shared).
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from collections.abc import Awaitable, Sequence
from typing import Any, cast

import httpx
from qstash import AsyncQStash
from qstash.errors import QStashError

from ...clock import Clock, SystemClock
from ...config import Settings
from ...errors import PublishError
from ..request import PublishRequest
from .base import PublishResult
from .batch import (
    Attempts,
    BatchOutcome,
    Failure,
    NotQStash,
    batch_body,
    chunked,
    classify,
    parse_batch,
    whole_request_error,
)
from .qstash import (
    _NOT_A_PUBLISH_ANSWER,
    READ_TIMEOUT,
    QStashTransport,
    _deadline,
    publish_result,
    sdk_arguments,
    shown_url,
)

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
    """``publish`` (one message) and ``publish_many`` (``/v2/batch``) for asyncio code.

    The deadline covers each call as in the sync transports: every request is cut to
    what is left of it (``asyncio.wait_for``, so a trickling server cannot hold it).
    """

    def __init__(
        self,
        client: AsyncQStash,
        *,
        timeout: float = 2.0,
        clock: Clock | None = None,
        secrets: tuple[str | None, ...] = (),
        url: str = "",
    ) -> None:
        self.client = client
        self.timeout = timeout
        self.clock = clock or SystemClock()
        self._secrets = secrets
        self.url = shown_url(url or str(getattr(client.http, "_base_url", "")))
        # The sync transport words the errors; one wording for both.
        self._words = QStashTransport(
            cast(Any, None), timeout=timeout, clock=self.clock, secrets=secrets, url=self.url
        )

    async def _within(self, deadline: float, work: Awaitable[Any]) -> Any:
        return await asyncio.wait_for(work, timeout=max(0.05, deadline - self.clock.now()))

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
                    sent: PublishResult = await self._within(
                        attempts.deadline, self._publish_once(request)
                    )
                    return sent
                except (httpx.HTTPError, QStashError, NotQStash, asyncio.TimeoutError) as exc:
                    failure = classify(exc)
                    if failure is None:
                        raise
                wait = attempts.failed(failure)
                if wait is None:
                    break
                await _sleep(self.clock, wait)
        finally:
            _deadline.reset(token)
        if failure.not_qstash:
            raise self._words._not_qstash(request, failure.status, failure.text)
        raise self._words._error(
            request, failure.status, failure.text, attempts.made,
            outcome_unknown=attempts.maybe_stored,
        )

    async def _publish_once(self, request: PublishRequest) -> PublishResult:
        common, extra = sdk_arguments(request)
        try:
            if request.queue:
                res: Any = await self.client.message.enqueue(queue=request.queue, **common)
            else:
                res = await self.client.message.publish(**extra, **common)
        # The SDK parses any 2xx as JSON: an answer that is not QStash's fails there.
        except (ValueError, KeyError, TypeError, AttributeError):
            raise NotQStash(None, _NOT_A_PUBLISH_ANSWER) from None
        return publish_result(res)

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
                    answer = await self._within(attempts.deadline, self.client.http.request(
                        path="/v2/batch",
                        body=body,
                        headers={"Content-Type": "application/json"},
                        method="POST",
                    ))
                    return parse_batch(chunk, answer, self._secrets), None
                except (httpx.HTTPError, QStashError, NotQStash, asyncio.TimeoutError,
                        ValueError) as exc:
                    failure = classify(exc) if not isinstance(exc, ValueError) else Failure(
                        None, "a success status but not JSON", False, not_qstash=True
                    )
                    if failure is None:
                        raise
                wait = attempts.failed(failure)
                if wait is None:
                    break
                await _sleep(self.clock, wait)
        finally:
            _deadline.reset(token)
        error = whole_request_error(
            chunk, failure, attempts.made, self._secrets, self.url, attempts.maybe_stored
        )
        return [error] * len(chunk), error


def get_async_transport(settings: Settings, *, clock: Clock | None = None) -> AsyncQStashTransport:
    """This loop's async transport for these settings (ConfigurationError without a token)."""
    return AsyncQStashTransport(
        async_client_for(settings),
        timeout=settings.publish_timeout,
        clock=clock,
        secrets=settings.secrets,
        url=settings.qstash_url,
    )
