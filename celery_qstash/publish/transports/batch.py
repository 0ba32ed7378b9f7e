"""Many messages per request: QStash's ``POST /v2/batch``, 100 messages at a time.

The wire body is built by the official SDK (``prepare_batch_message_body``, what its
``batch``/``batch_json`` send) and posted through the SDK's HTTP client, so headers
are spelled exactly as a single publish spells them. Two SDK quirks are worked
around: ``batch_json`` drops ``retry_delay`` (so bodies are serialised here and
``batch`` is used), and the SDK's response parser expects every item to be a
success, where QStash answers ``{"error": ...}`` for an item it refuses while still
accepting the others. Such an item becomes a :class:`PublishError` in its slot.

A request that fails as a whole (network error, 5xx) is retried like a single
publish: Celery's ``retry``/``retry_policy``, within ``qstash_publish_timeout``
for each request. Every message carries its task id as deduplication id, so a
retry after a lost answer cannot publish anything twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import httpx
from qstash import QStash
from qstash.errors import QStashError
from qstash.message import prepare_batch_message_body

from ...clock import Clock, SystemClock
from ...errors import PublishError, scrub
from ..request import PublishRequest
from .base import PublishResult
from .qstash import (
    Attempts,
    Failure,
    NotQStash,
    _deadline,
    classify,
    is_loopback,
    refusal_hint,
    shown_url,
)

__all__ = [
    "MAX_BATCH",
    "Attempts",
    "BatchOutcome",
    "Failure",
    "NotQStash",
    "QStashBatchTransport",
    "batch_body",
    "chunked",
    "classify",
    "parse_batch",
    "whole_request_error",
]

#: Messages per ``/v2/batch`` request (QStash's documented maximum).
MAX_BATCH = 100

#: One slot per message: what QStash accepted, or why it did not.
BatchOutcome = PublishResult | PublishError


def chunked(items: Sequence[Any], size: int = MAX_BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def batch_message(request: PublishRequest) -> dict[str, Any]:
    """One SDK ``BatchRequest`` for this request (only the keys that are set)."""
    msg: dict[str, Any] = {
        "url": request.url,
        "body": request.body_text,  # serialised once: the size check did it already
        "content_type": "application/json",
        "headers": request.sent_headers,
        "deduplication_id": request.deduplication_id,
        "label": request.label,
    }
    optional: dict[str, Any] = {
        "retries": request.retries,
        "retry_delay": request.retry_delay,
        "callback": request.callback,
        "failure_callback": request.failure_callback,
        "timeout": request.timeout,
    }
    if request.queue:
        msg["queue"] = request.queue
    else:
        optional.update(
            delay=request.delay,
            not_before=request.not_before,
            flow_control=request.flow_control.as_sdk() if request.flow_control else None,
        )
    msg.update({k: v for k, v in optional.items() if v is not None})
    if request.redact_headers:
        msg["redact"] = {"header": list(request.redact_headers)}
    return msg


def batch_body(requests: Sequence[PublishRequest]) -> str:
    """The JSON array ``/v2/batch`` takes, built by the SDK."""
    return prepare_batch_message_body([batch_message(r) for r in requests])  # type: ignore[misc]


def _refused(request: PublishRequest, text: str, secrets: tuple[str | None, ...]) -> PublishError:
    text = scrub(text, (*secrets, request.authorization))[:500]
    return PublishError(
        f"QStash did not accept task {request.task_id} (refused inside a batch): {text}",
        status=None,
        error=text,
        task_id=request.task_id,
    )


def parse_batch(
    requests: Sequence[PublishRequest], answer: Any, secrets: tuple[str | None, ...] = ()
) -> list[BatchOutcome]:
    """QStash's answer, one slot per request, in order."""
    if not isinstance(answer, list) or len(answer) != len(requests):
        got = f"{len(answer)} items" if isinstance(answer, list) else type(answer).__name__
        raise NotQStash(None, f"a success status but {got} for {len(requests)} messages")
    out: list[BatchOutcome] = []
    for request, item in zip(requests, answer, strict=True):
        if isinstance(item, dict) and isinstance(item.get("messageId"), str):
            out.append(PublishResult(item["messageId"], bool(item.get("deduplicated"))))
        else:
            text = item.get("error") if isinstance(item, dict) else None
            out.append(_refused(request, str(text or "no message id in the answer"), secrets))
    return out


def whole_request_error(
    requests: Sequence[PublishRequest],
    failure: Failure,
    attempts: int,
    secrets: tuple[str | None, ...],
    url: str,
    maybe_stored: bool,
) -> PublishError:
    """The error every message of a request that failed as a whole gets."""
    text = scrub(failure.text, (*secrets, *(r.authorization for r in requests)))[:500]
    first, last = requests[0].task_id, requests[-1].task_id
    which = f"the batch of {len(requests)} task(s) {first}..{last}"
    status = failure.status
    if failure.not_qstash:
        shown = repr(text[:120]) if text else "an empty body"
        answer = text if status is None else f"HTTP {status} with {shown}"
        message = (
            f"QStash did not accept {which}: the server at {url} does not look like QStash "
            f"(it answered {answer}); check qstash_url / QSTASH_URL"
        )
        maybe_stored = False
    else:
        where = f"HTTP {status}" if status is not None else f"network error talking to {url}"
        detail = f"{where} after {attempts} attempt(s): {text}"
        if maybe_stored:
            message = (
                f"QStash may or may not have stored {which} ({detail}). Publishing them "
                "again with the same task ids is safe: QStash deduplicates on them and "
                "AutoSend on their Idempotency-Key, so nothing is sent twice"
            )
        else:
            message = f"QStash did not accept {which} ({detail}){refusal_hint(status)}"
            if status is None and is_loopback(url):
                message += f". Nothing answers at {url}: is `celery-qstash dev` running?"
    return PublishError(message, status=status, error=text, outcome_unknown=maybe_stored)


class QStashBatchTransport:
    """Send many requests, :data:`MAX_BATCH` per ``/v2/batch`` call."""

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
        self.url = shown_url(str(getattr(client.http, "_base_url", "")))

    def publish_many(
        self,
        requests: Sequence[PublishRequest],
        *,
        retry: bool = True,
        retry_policy: dict[str, Any] | None = None,
    ) -> list[BatchOutcome]:
        """One outcome per request, in order. After a request fails as a whole (its
        retries spent), the rest are not attempted: each gets that error."""
        out: list[BatchOutcome] = []
        stopped: PublishError | None = None
        for chunk in chunked(requests):
            if stopped is not None:
                out.extend([stopped] * len(chunk))
                continue
            outcomes, stopped = self._send(chunk, retry, retry_policy)
            out.extend(outcomes)
        return out

    def _send(
        self, chunk: Sequence[PublishRequest], retry: bool, retry_policy: dict[str, Any] | None
    ) -> tuple[list[BatchOutcome], PublishError | None]:
        body = batch_body(chunk)
        attempts = Attempts(self.clock, self.timeout, retry, retry_policy)
        token = _deadline.set((attempts.deadline, self.clock))
        try:
            while True:
                try:
                    answer = self.client.http.request(
                        path="/v2/batch",
                        body=body,
                        headers={"Content-Type": "application/json"},
                        method="POST",
                    )
                    # A retry after a lost answer finds each stored message a duplicate:
                    # QStash answers it like a success, so the outcome is known again.
                    return parse_batch(chunk, answer, self._secrets), None
                except (httpx.HTTPError, QStashError, NotQStash, ValueError) as exc:
                    failure = classify(exc) if not isinstance(exc, ValueError) else Failure(
                        None, "a success status but not JSON", False, not_qstash=True
                    )
                    if failure is None:
                        raise
                wait = attempts.failed(failure)
                if wait is None:
                    break
                self.clock.sleep(wait)
        finally:
            _deadline.reset(token)
        # Built outside any except block: the SDK's exception (whose text may hold what
        # QStash echoed back) is not kept as __context__.
        error = whole_request_error(
            chunk, failure, attempts.made, self._secrets, self.url, attempts.maybe_stored
        )
        return [error] * len(chunk), error
