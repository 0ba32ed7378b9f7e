"""One delivery attempt, and the bookkeeping around it: the signed request, its HTTP
exchange (cut at the attempt's timeout and at :data:`MAX_RESPONSE_BODY`), the retry
delay after a failure, and the recording of outcomes many to a transaction.

:class:`Attempts` is what the delivery loop (``delivery.py``) and its background threads
(``background.py``) share; it never raises for one bad message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from celery_qstash.clock import Clock

from .callbacks import callback_specs
from .publish import PublishOptions, canonical
from .retry_delay import (
    RetryDelayError,
    compile_retry_delay,
    default_backoff_ms,
    retry_after_from_headers,
)
from .sender import Exchange, ExchangeError, ExchangeTimeout, Request
from .signing import sign
from .store import JSON, AttemptResult, CallbackSpec, Store

__all__ = ["MAX_RESPONSE_BODY", "Attempts", "Outcome", "resolve_route"]

log = logging.getLogger("celery_qstash.local.emulator")

#: The most of a destination's answer that is read and kept.
MAX_RESPONSE_BODY = 1024 * 1024

#: (message, result, attempt start ms, attempt end ms)
Outcome = tuple[JSON, AttemptResult, int, int]


def resolve_route(url: str, routes: Mapping[str, str]) -> str:
    """Where ``url`` is really sent: the longest matching route prefix is replaced."""
    best = ""
    for prefix in routes:
        if url.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    if not best:
        return url
    return routes[best].rstrip("/") + url[len(best):]


class Attempts:
    """Prepare, send and record delivery attempts."""

    def __init__(self, store: Store, clock: Clock, exchange: Exchange,
                 routes: Mapping[str, str] | None, *,
                 signing_keys: Callable[[str], tuple[str, str]] | None,
                 max_timeout_ms: int) -> None:
        self.store = store
        self.clock = clock
        self.routes: dict[str, str] = dict(routes or {})
        self.max_timeout_ms = max_timeout_ms
        self._signing_keys = signing_keys or store.signing_keys
        self._exchange = exchange
        #: Seconds for the per-attempt deadline (real elapsed time; tests may replace it).
        self.monotonic: Callable[[], float] = time.monotonic

    def _try(self, message: JSON, now_ms: int, request: Request | None) -> Outcome:
        result = self.send(message, now_ms, request)
        return message, result, now_ms, max(now_ms, int(self.clock.now() * 1000))

    def _record(self, outcomes: list[Outcome]) -> list[str]:
        """Record outcomes in one transaction; one that cannot be recorded (a damaged
        database) is set aside alone: out of flight and logged, not in flight forever."""
        items: list[tuple[JSON, AttemptResult, int]] = []
        for message, result, started, finished in outcomes:
            try:
                if not result.ok:
                    result.retry_delay_ms = int(self.retry_delay_ms(message, result, started))
            except Exception as exc:
                self.store.set_aside(message["id"], exc)
                continue
            items.append((message, result, finished))
        states = self.store.finish_many(items, self.callbacks) if items else []
        if log.isEnabledFor(logging.INFO):
            for (message, result, _), state in zip(items, states, strict=True):
                log.info("%s%s -> %s %s (%s)", _who(message), message["id"],
                         _host(message["url"]), state,
                         result.status if result.status is not None else result.error)
        return states

    def callbacks(self, message: JSON, result: AttemptResult, state: str,
                  dlq_id: str | None) -> list[CallbackSpec]:
        """QStash's callback (after each attempt) and failure callback (once, on FAILED)."""
        return callback_specs(message, result, state, dlq_id)

    # -- one attempt ------------------------------------------------------------

    def prepare(self, message: JSON, now_ms: int) -> Request:
        """The request of one attempt, signed at ``now_ms``."""
        options = PublishOptions.from_dict(message["opts"])
        url = message["url"]
        current_key, _ = self._signing_keys(message["user"])
        headers: list[tuple[str, str]] = [
            (name, value) for name, values in options.headers.items() for value in values
        ]
        headers += [
            ("User-Agent", "Upstash-QStash"),
            ("Upstash-Signature", sign(current_key, url, options.body, now_ms / 1000)),
            ("Upstash-Message-Id", message["id"]),
            ("Upstash-Retried", str(message["retried"])),
            ("Upstash-Caller-Ip", message.get("caller_ip") or "127.0.0.1"),
        ]
        # The documented delivery headers only (qstash docs "receiving": no endpoint or
        # queue name travels to the destination).
        if message.get("topic"):
            headers.append(("Upstash-Topic-Name", message["topic"]))
        if message.get("schedule_id"):
            headers.append(("Upstash-Schedule-Id", message["schedule_id"]))
        timeout_ms = min(options.timeout_ms or self.max_timeout_ms, self.max_timeout_ms)
        return Request(options.method, resolve_route(url, self.routes), headers, options.body,
                       timeout_ms / 1000)

    def send(self, message: JSON, now_ms: int, request: Request | None = None) -> AttemptResult:
        """One HTTP attempt; never raises: any error is a failed attempt (RETRY, then DLQ),
        so one bad message can never wedge a delivery slot or the loop."""
        try:
            return self._send(message, request or self.prepare(message, now_ms))
        except Exception as exc:  # whatever it is, it is this attempt's failure
            host = _host(str(message.get("url", "")))
            log.warning("%s: cannot deliver to %s: %s", message.get("id"), host,
                        type(exc).__name__)
            return AttemptResult(None, error=f"cannot deliver to {host}: {type(exc).__name__}")

    def _send(self, message: JSON, request: Request) -> AttemptResult:
        url = message["url"]
        timeout_ms = round(request.timeout_s * 1000)
        timed_out = AttemptResult(None, error=f"timeout after {timeout_ms} ms calling {_host(url)}")
        # Upstash-Timeout bounds the whole attempt, not each read: a destination that
        # trickles its answer fails at about the configured time.
        deadline = self.monotonic() + request.timeout_s
        try:
            with self._exchange.open(request) as reply:
                chunks: list[bytes] = []
                size = 0
                # Streamed and cut at the cap: a huge answer never sits in memory whole.
                for chunk in reply.chunks:
                    if self.monotonic() > deadline:
                        return timed_out
                    chunks.append(chunk[:MAX_RESPONSE_BODY - size])
                    size += len(chunks[-1])
                    if size >= MAX_RESPONSE_BODY:
                        break
                if self.monotonic() > deadline:
                    return timed_out
                response_headers: dict[str, list[str]] = {}
                for name, value in reply.headers:
                    response_headers.setdefault(canonical(name), []).append(value)
                status = reply.status
                non_retryable = status == 489 and (
                    _header(reply.headers, "upstash-nonretryable-error").lower() == "true"
                )
        except ExchangeTimeout:
            return timed_out
        except ExchangeError as exc:
            # The exception text can echo the full URL; the host is enough to debug.
            return AttemptResult(None, error=f"cannot reach {_host(url)}: {exc}")
        return AttemptResult(
            status, response_headers, b"".join(chunks),
            error=None if 200 <= status < 300 else f"status {status}",
            non_retryable=non_retryable,
        )

    def retry_delay_ms(self, message: JSON, result: AttemptResult, now_ms: int) -> float:
        """Retry-After-style headers win, then the message's expression, then the backoff."""
        if result.status is not None:
            flat = {name: values[0] for name, values in result.headers.items() if values}
            seconds = retry_after_from_headers(flat, now_ms / 1000)
            if seconds is not None:
                return seconds * 1000
        expression = message["opts"].get("retry_delay")
        if expression:
            try:
                return compile_retry_delay(expression)(message["retried"])
            except RetryDelayError:
                pass
        return default_backoff_ms(message["retried"] + 1)


def _header(headers: list[tuple[str, str]], name: str) -> str:
    """One header's values as httpx's ``headers.get`` gives them ("" when absent)."""
    return ", ".join(value for key, value in headers if key.lower() == name)


def _who(message: JSON) -> str:
    """``task <label> <name>, message `` for the dev log: the task id a user greps for
    (the shim labels each message with it) and the task's name, before QStash's id."""
    opts = message.get("opts") or {}
    labels = [label for label in opts.get("labels") or [] if label]
    headers = opts.get("headers") or {}
    names = headers.get("X-Celery-Task") or headers.get("Upstash-Forward-X-Celery-Task") or []
    if not labels and not names:
        return ""
    parts = ["task", *labels[:1], *names[:1]]
    return " ".join(str(p) for p in parts) + ", message "


def _host(url: str) -> str:
    try:
        return urlsplit(url).netloc or "?"
    except ValueError:
        return "?"
