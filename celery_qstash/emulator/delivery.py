"""The delivery loop: send due messages to their destinations, like QStash does.

``tick(now)`` is the whole algorithm in one deterministic step: fire due
schedules, claim what is due (the store enforces queues and flow control),
send every claimed message (in parallel on a small pool), and record each
outcome (DELIVERED, RETRY with its delay, FAILED + DLQ, callbacks) before
returning. Tests drive it with a ``FakeClock``; ``start_background()`` runs the
same steps on a thread that sleeps until the next due time or until the store
reports a change, never polling, and hands what it claims to ``workers`` long-lived
attempt threads.
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx

from celery_qstash.clock import Clock

from .publish import DEFAULT_MAX_TIMEOUT_MS, CallbackOptions, PublishOptions, Redaction, canonical
from .retry_delay import (
    RetryDelayError,
    compile_retry_delay,
    default_backoff_ms,
    retry_after_from_headers,
)
from .signing import sign
from .store import JSON, AttemptResult, CallbackSpec, Store
from .wire import shown_headers

__all__ = ["DEFAULT_CONCURRENCY", "DEFAULT_MAX_TIMEOUT_MS", "DeliveryLoop", "resolve_route"]

log = logging.getLogger("celery_qstash.emulator")

MAX_RESPONSE_BODY = 1024 * 1024
#: Attempts in flight at once (``delivery_concurrency``): enough that messages falling due
#: together are not queued behind a few slow destinations, few enough for a laptop.
DEFAULT_CONCURRENCY = 8
#: Longest the background thread sleeps without a reason to wake (clock jumps, safety).
MAX_IDLE_SECONDS = 60.0
#: Pause after a failed background step (a broken database, a bug): never spin.
ERROR_BACKOFF_SECONDS = 1.0
#: How long ``stop()`` lets in-flight attempts record their outcome; the rest are
#: left in flight and retried after a restart (at-least-once).
STOP_GRACE_SECONDS = 2.0


def resolve_route(url: str, routes: Mapping[str, str]) -> str:
    """Where ``url`` is really sent: the longest matching route prefix is replaced."""
    best = ""
    for prefix in routes:
        if url.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    if not best:
        return url
    return routes[best].rstrip("/") + url[len(best):]


def _default_client() -> httpx.Client:
    # No proxies from the environment: deliveries go exactly where the URL says.
    return httpx.Client(trust_env=False, follow_redirects=False)


class DeliveryLoop:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        http_client_factory: Callable[[], httpx.Client] | None = None,
        routes: Mapping[str, str] | None = None,
        *,
        signing_keys: Callable[[str], tuple[str, str]] | None = None,
        max_timeout_ms: int = DEFAULT_MAX_TIMEOUT_MS,
        workers: int = DEFAULT_CONCURRENCY,
        batch: int = 10_000,
    ) -> None:
        self.store = store
        self.clock = clock
        self.routes: dict[str, str] = dict(routes or {})
        self.max_timeout_ms = max_timeout_ms
        self.workers = max(1, workers)
        self.batch = batch
        self._signing_keys = signing_keys or store.signing_keys
        self._client = (http_client_factory or _default_client)()
        #: Seconds for the per-attempt deadline (real elapsed time; tests may replace it).
        self.monotonic: Callable[[], float] = time.monotonic
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Claimed messages for the attempt threads; None tells one thread to end.
        self._work: queue.SimpleQueue[tuple[JSON, int] | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._busy_changed = threading.Condition(self._busy_lock)

    # -- one step ---------------------------------------------------------------

    def tick(self, now: float | None = None) -> int:
        """Deliver everything due at ``now`` (default: the clock); returns attempts made.

        One round: messages that become due because of this round (a freed queue
        slot, a retry with zero delay) go in the next tick.
        """
        now_ms = int((self.clock.now() if now is None else now) * 1000)
        self.store.fire_due_schedules(now_ms)
        claimed = self.store.claim_due(now_ms, self.batch)
        if len(claimed) <= 1:
            for message in claimed:
                self._attempt(message, now_ms)
            return len(claimed)
        with ThreadPoolExecutor(max_workers=min(self.workers, len(claimed)),
                                thread_name_prefix="qstash-tick") as pool:
            for future in [pool.submit(self._attempt, m, now_ms) for m in claimed]:
                future.result()
        return len(claimed)

    def _attempt(self, message: JSON, now_ms: int) -> str:
        result = self.send(message, now_ms)
        try:
            if not result.ok:
                result.retry_delay_ms = int(self.retry_delay_ms(message, result, now_ms))
            finished = max(now_ms, int(self.clock.now() * 1000))
            state = self.store.finish_attempt(message, result, finished, self.callbacks)
        except Exception as exc:
            # Data the outcome cannot be recorded from (a damaged database): out of
            # flight and logged, not in flight forever with nothing said.
            self.store.set_aside(message["id"], exc)
            return "SET_ASIDE"
        log.info("%s %s -> %s (%s)", message["id"], _host(message["url"]), state,
                 result.status if result.status is not None else result.error)
        return state

    def send(self, message: JSON, now_ms: int) -> AttemptResult:
        """One HTTP attempt; never raises: any error is a failed attempt (RETRY, then DLQ),
        so one bad message can never wedge a delivery slot or the loop."""
        try:
            return self._send(message, now_ms)
        except Exception as exc:  # whatever it is, it is this attempt's failure
            host = _host(str(message.get("url", "")))
            log.warning("%s: cannot deliver to %s: %s", message.get("id"), host,
                        type(exc).__name__)
            return AttemptResult(None, error=f"cannot deliver to {host}: {type(exc).__name__}")

    def _send(self, message: JSON, now_ms: int) -> AttemptResult:
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
        timed_out = AttemptResult(None, error=f"timeout after {timeout_ms} ms calling {_host(url)}")
        # Upstash-Timeout bounds the whole attempt, not each read: a destination that
        # trickles its answer fails at about the configured time.
        deadline = self.monotonic() + timeout_ms / 1000
        try:
            with self._client.stream(
                options.method, resolve_route(url, self.routes), content=options.body,
                headers=headers, timeout=httpx.Timeout(timeout_ms / 1000),
            ) as response:
                chunks: list[bytes] = []
                size = 0
                # Streamed and cut at the cap: a huge answer never sits in memory whole.
                for chunk in response.iter_bytes():
                    if self.monotonic() > deadline:
                        return timed_out
                    chunks.append(chunk[:MAX_RESPONSE_BODY - size])
                    size += len(chunks[-1])
                    if size >= MAX_RESPONSE_BODY:
                        break
                if self.monotonic() > deadline:
                    return timed_out
                response_headers: dict[str, list[str]] = {}
                for name, value in response.headers.multi_items():
                    response_headers.setdefault(canonical(name), []).append(value)
                status = response.status_code
                non_retryable = status == 489 and (
                    response.headers.get("Upstash-NonRetryable-Error", "").lower() == "true"
                )
                success = response.is_success
        except httpx.TimeoutException:
            return timed_out
        except httpx.HTTPError as exc:
            # The exception text can echo the full URL; the host is enough to debug.
            return AttemptResult(None, error=f"cannot reach {_host(url)}: {type(exc).__name__}")
        return AttemptResult(
            status, response_headers, b"".join(chunks),
            error=None if success else f"status {status}",
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

    # -- callbacks --------------------------------------------------------------

    def callbacks(self, message: JSON, result: AttemptResult, state: str,
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
            specs.append(self._callback_spec(options, options.callback, payload, "callback"))
        if state == "FAILED" and options.failure_callback is not None:
            failure = dict(payload, dlqId=dlq_id)
            specs.append(self._callback_spec(options, options.failure_callback, failure,
                                             "failure_callback"))
        return specs

    @staticmethod
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

    # -- background -------------------------------------------------------------

    def wake(self) -> None:
        """Something changed (publish, resume, clock advance): re-check what is due."""
        # Called after every commit: setting an Event takes its lock and notifies even
        # when it is set already, which showed up in a busy loop's profile.
        if not self._wake.is_set():
            self._wake.set()

    def start_background(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        # ``workers`` long-lived attempt threads (daemons: one stuck on a slow destination
        # never holds up interpreter exit), fed through a queue: starting a thread per
        # attempt was a tenth of the delivery loop's CPU. Each start gets its own queue,
        # so threads abandoned by an earlier stop() never take new work.
        self._work = queue.SimpleQueue()
        self._workers = [
            threading.Thread(target=self._attempts, args=(self._work,),
                             name="qstash-attempt", daemon=True)
            for _ in range(self.workers)
        ]
        for worker in self._workers:
            worker.start()
        self._thread = threading.Thread(target=self._run, name="qstash-delivery", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop the background thread. In-flight attempts get ``grace`` seconds to record
        their outcome; slower ones are abandoned (their threads are daemons) and, still
        marked in flight in the store, are retried after a restart."""
        self._stop.set()
        self._wake.set()
        if self._thread is None:
            return  # not running (or already stopped: the grace was given then)
        self._thread.join(timeout)
        self._thread = None
        for _ in self._workers:
            self._work.put(None)
        self._workers = []
        with self._busy_changed:
            self._busy_changed.wait_for(lambda: self._busy == 0, grace)

    def close(self) -> None:
        self.stop()
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self._pump()
                idle = self._idle_seconds()
            except Exception:
                log.exception("delivery loop step failed; trying again in %.0f s",
                              ERROR_BACKOFF_SECONDS)
                # Only stop() cuts the pause short: new publishes must not make it spin.
                self._stop.wait(ERROR_BACKOFF_SECONDS)
                continue
            self._wake.wait(idle)

    def _idle_seconds(self) -> float:
        with self._busy_lock:
            if self._busy >= self.workers:
                return MAX_IDLE_SECONDS  # a finishing attempt wakes us
        due = self.store.next_due_ms()
        if due is None:
            return MAX_IDLE_SECONDS
        return min(MAX_IDLE_SECONDS, max(0.0, due / 1000 - self.clock.now()))

    def _pump(self) -> None:
        now_ms = int(self.clock.now() * 1000)
        self.store.fire_due_schedules(now_ms)
        with self._busy_lock:
            free = self.workers - self._busy
        if free <= 0:
            return
        for message in self.store.claim_due(now_ms, free):
            with self._busy_lock:
                self._busy += 1
            self._work.put((message, now_ms))

    def _attempts(self, work: queue.SimpleQueue[tuple[JSON, int] | None]) -> None:
        """One attempt thread: attempts from ``work`` until told to end."""
        while True:
            item = work.get()
            if item is None:
                return
            self._attempt_in_background(*item)

    def _attempt_in_background(self, message: JSON, now_ms: int) -> None:
        try:
            if not self._stop.is_set():
                self._attempt(message, max(now_ms, int(self.clock.now() * 1000)))
        except Exception as exc:
            if not self._stop.is_set():  # after stop() the store may be closed: expected
                log.error("delivery attempt crashed: %s", type(exc).__name__)
        finally:
            self._done()

    def _done(self) -> None:
        with self._busy_changed:
            self._busy -= 1
            self._busy_changed.notify_all()
        self.wake()


def _host(url: str) -> str:
    try:
        return urlsplit(url).netloc or "?"
    except ValueError:
        return "?"
