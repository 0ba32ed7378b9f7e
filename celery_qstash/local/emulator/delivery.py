"""The delivery loop: send due messages to their destinations, like QStash does.

``tick(now)`` is the whole algorithm in one deterministic step: fire due
schedules, claim what is due (the store enforces queues and flow control),
send every claimed message (in parallel on a small pool), and record every
outcome (DELIVERED, RETRY with its delay, FAILED + DLQ, callbacks) in one
transaction before returning. Tests drive it with a ``FakeClock``.

``start_background()`` runs the same steps on threads, never polling:

- a dispatcher sleeps until the next due time or until the store reports a change,
  fires schedules, and claims in batches (one transaction for up to
  :data:`CLAIM_BATCH` messages). A message due within :data:`PREPARE_AHEAD_MS`
  that only time holds back (no queue, no flow control) is claimed *ahead*, and its
  request built and signed then; the dispatcher releases it the moment it falls due,
  never before. Messages that fall due together are so not queued behind their own
  claim, signing and request building;
- ``workers`` (``delivery_concurrency``) long-lived attempt threads send them;
- a recorder writes the outcomes, many per transaction (group commit), holding them
  back while a burst is still being sent so that recording does not slow it down.

Delivery stays at-least-once: a claimed message is marked in flight in the store, and
one whose outcome was not committed when the process died is sent again after a
restart. ``stop()`` gives claimed but unsent messages back to the store.
"""

from __future__ import annotations

import base64
import dataclasses
import heapq
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
from .sender import (
    ClientExchange,
    CoreExchange,
    Exchange,
    ExchangeError,
    ExchangeTimeout,
    Request,
)
from .signing import sign
from .store import JSON, AttemptResult, CallbackSpec, Store
from .wire import shown_headers

__all__ = ["DEFAULT_CONCURRENCY", "DEFAULT_MAX_TIMEOUT_MS", "DeliveryLoop", "resolve_route"]

log = logging.getLogger("celery_qstash.local.emulator")

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
#: How far ahead of its due time the background loop claims and prepares a message.
PREPARE_AHEAD_MS = 500
#: Messages claimed in one transaction (it holds the store's lock: publishes wait).
CLAIM_BATCH = 256
#: Claimed messages the background loop holds at once (prepared, queued, in flight,
#: waiting to be recorded): what a crash would send again.
MAX_HELD = 2048
#: Outcomes recorded in one transaction at most.
MAX_GROUP = 512
#: How long the recorder holds outcomes back while attempts are still being sent.
GROUP_LINGER_SECONDS = 0.25


def resolve_route(url: str, routes: Mapping[str, str]) -> str:
    """Where ``url`` is really sent: the longest matching route prefix is replaced."""
    best = ""
    for prefix in routes:
        if url.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    if not best:
        return url
    return routes[best].rstrip("/") + url[len(best):]


@dataclass(order=True)
class _Job:
    """A claimed message on its way: due time, and its request once built."""

    due_ms: int
    order: int
    message: JSON = dataclasses.field(compare=False)
    request: Request | None = dataclasses.field(default=None, compare=False)


#: (message, result, attempt start ms, attempt end ms)
_Outcome = tuple[JSON, AttemptResult, int, int]


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
        # A caller's client (tests: httpx.MockTransport) is used as it is; otherwise
        # httpcore's pool directly (sender.py says why).
        self._exchange: Exchange = (
            ClientExchange(http_client_factory()) if http_client_factory is not None
            else CoreExchange(self.workers)
        )
        #: Seconds for the per-attempt deadline (real elapsed time; tests may replace it).
        self.monotonic: Callable[[], float] = time.monotonic
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Claimed messages for the attempt threads; None tells one thread to end.
        self._work: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        #: Outcomes for the recorder; None tells it to end.
        self._outcomes: queue.SimpleQueue[_Outcome | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._recorder: threading.Thread | None = None
        #: Claimed ahead, not yet due (the dispatcher's own: no lock).
        self._prepared: list[_Job] = []
        self._order = 0
        #: The latest time the dispatcher has claimed up to.
        self._horizon_ms = -1
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        #: Claimed and not yet recorded / handed to the attempt threads and not yet sent.
        self._held = 0
        self._sending = 0
        #: Taken by an attempt thread after stop(): given back to the store.
        self._unsent: list[str] = []

    # -- one step ---------------------------------------------------------------

    def tick(self, now: float | None = None) -> int:
        """Deliver everything due at ``now`` (default: the clock); returns attempts made.

        One round: messages that become due because of this round (a freed queue
        slot, a retry with zero delay) go in the next tick. Outcomes are recorded
        together, in the order the messages were claimed.
        """
        now_ms = int((self.clock.now() if now is None else now) * 1000)
        self.store.fire_due_schedules(now_ms)
        claimed = self.store.claim_due(now_ms, self.batch)
        if not claimed:
            return 0
        if len(claimed) == 1:
            outcomes = [self._try(claimed[0], now_ms, None)]
        else:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(claimed)),
                                    thread_name_prefix="qstash-tick") as pool:
                outcomes = list(pool.map(lambda m: self._try(m, now_ms, None), claimed))
        self._record(outcomes)
        return len(claimed)

    def _try(self, message: JSON, now_ms: int, request: Request | None) -> _Outcome:
        result = self.send(message, now_ms, request)
        return message, result, now_ms, max(now_ms, int(self.clock.now() * 1000))

    def _record(self, outcomes: list[_Outcome]) -> list[str]:
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
        # attempt was a tenth of the delivery loop's CPU. Each start gets its own queues,
        # so threads abandoned by an earlier stop() never take new work.
        self._work = queue.SimpleQueue()
        self._outcomes = queue.SimpleQueue()
        self._prepared = []
        self._horizon_ms = -1
        self._unsent = []
        self._workers = [
            threading.Thread(target=self._attempts, args=(self._work, self._outcomes),
                             name="qstash-attempt", daemon=True)
            for _ in range(self.workers)
        ]
        for worker in self._workers:
            worker.start()
        self._recorder = threading.Thread(target=self._records, args=(self._outcomes,),
                                          name="qstash-record", daemon=True)
        self._recorder.start()
        self._thread = threading.Thread(target=self._run, name="qstash-delivery", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop the background threads. Claimed messages not yet sent go back to the
        store; in-flight attempts get ``grace`` seconds to record their outcome; slower
        ones are abandoned (their threads are daemons) and, still marked in flight in the
        store, are retried after a restart."""
        self._stop.set()
        self._wake.set()
        if self._thread is None:
            return  # not running (or already stopped: the grace was given then)
        self._thread.join(timeout)
        self._thread = None
        unsent = [job.message["id"] for job in self._prepared]
        self._prepared = []
        while True:
            try:
                job = self._work.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                unsent.append(job.message["id"])
                self._sent(1)
        for _ in self._workers:
            self._work.put(None)
        self._workers = []
        with self._changed:
            self._changed.wait_for(lambda: self._sending == 0, grace)
            unsent += self._unsent
            self._unsent = []
        # Recorded before the recorder ends: outcomes it has not written yet are kept.
        self._outcomes.put(None)
        if self._recorder is not None:
            self._recorder.join(grace)
            self._recorder = None
        try:
            self.store.unclaim(unsent)
        except Exception as exc:  # a closed or broken store: a restart recovers them
            log.error("could not give back %d claimed messages: %s", len(unsent),
                      type(exc).__name__)
        with self._lock:
            self._held = 0

    def close(self) -> None:
        self.stop()
        self._exchange.close()

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
        now_ms = self.clock.now() * 1000
        times: list[float] = []
        if self._prepared:
            times.append(self._prepared[0].due_ms)
        with self._lock:
            full = self._held >= MAX_HELD
        if not full:  # when full, a recorded outcome wakes us
            due = self.store.next_due_ms()
            if due is not None:
                # Claim ahead once; a message seen then and held back by more than time
                # (a queue, flow control, the claim's limit) is looked at again when due.
                times.append(due - PREPARE_AHEAD_MS if due - PREPARE_AHEAD_MS > self._horizon_ms
                             else due)
        if not times:
            return MAX_IDLE_SECONDS
        return min(MAX_IDLE_SECONDS, max(0.0, (min(times) - now_ms) / 1000))

    def _pump(self) -> None:
        now_ms = int(self.clock.now() * 1000)
        self.store.fire_due_schedules(now_ms)
        self._release(now_ms)
        while not self._stop.is_set():
            with self._lock:
                room = MAX_HELD - self._held
            if room <= 0:
                return
            until = now_ms + PREPARE_AHEAD_MS
            limit = min(room, CLAIM_BATCH)
            claimed = self.store.claim(now_ms, limit, until)
            self._horizon_ms = until
            with self._lock:
                self._held += len(claimed)
            due_now: list[_Job] = []
            for due_ms, message in claimed:
                self._order += 1
                job = _Job(due_ms, self._order, message)
                if due_ms <= now_ms:
                    due_now.append(job)  # built and signed by its attempt thread
                    continue
                try:
                    job.request = self.prepare(message, due_ms)
                    self._exchange.build(job.request)
                except Exception:
                    job.request = None  # its attempt builds it again, and fails it
                heapq.heappush(self._prepared, job)
            self._hand_out(due_now)
            if len(claimed) < limit:
                return
            now_ms = int(self.clock.now() * 1000)
            self._release(now_ms)

    def _release(self, now_ms: int) -> None:
        """Hand out the messages claimed ahead that are due now (never earlier)."""
        due: list[_Job] = []
        while self._prepared and self._prepared[0].due_ms <= now_ms:
            due.append(heapq.heappop(self._prepared))
        if not due:
            return
        keep = {id(m) for m in self.store.release([job.message for job in due], now_ms)}
        if len(keep) < len(due):
            with self._lock:
                self._held -= len(due) - len(keep)
            due = [job for job in due if id(job.message) in keep]
        self._hand_out(due)

    def _hand_out(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        with self._lock:
            self._sending += len(jobs)
        for job in jobs:
            self._work.put(job)

    def _sent(self, count: int) -> None:
        with self._changed:
            self._sending -= count
            self._changed.notify_all()

    def _attempts(self, work: queue.SimpleQueue[_Job | None],
                  outcomes: queue.SimpleQueue[_Outcome | None]) -> None:
        """One attempt thread: attempts from ``work`` until told to end."""
        with self._exchange.own_pool():
            self._attempts_on(work, outcomes)

    def _attempts_on(self, work: queue.SimpleQueue[_Job | None],
                     outcomes: queue.SimpleQueue[_Outcome | None]) -> None:
        while True:
            job = work.get()
            if job is None:
                return
            try:
                if self._stop.is_set():
                    with self._lock:
                        self._unsent.append(job.message["id"])
                    continue
                now_ms = max(job.due_ms, int(self.clock.now() * 1000))
                outcomes.put(self._try(job.message, now_ms, job.request))
            except Exception as exc:
                if not self._stop.is_set():
                    log.error("delivery attempt crashed: %s", type(exc).__name__)
            finally:
                # After the outcome is queued: the recorder sees "nothing being sent" only
                # once every outcome is in its queue.
                self._sent(1)

    def _records(self, outcomes: queue.SimpleQueue[_Outcome | None]) -> None:
        """The recorder: outcomes in groups, one transaction each, until told to end."""
        while True:
            first = outcomes.get()
            if first is None:
                return
            group = [first]
            began = time.monotonic()
            ending = False
            while len(group) < MAX_GROUP:
                try:
                    item = outcomes.get_nowait()
                except queue.Empty:
                    # While attempts are still being sent (a burst), wait for them a little:
                    # one commit for many, and the burst's sends go first.
                    with self._lock:
                        sending = self._sending
                    left = GROUP_LINGER_SECONDS - (time.monotonic() - began)
                    if sending == 0 or left <= 0:
                        break
                    try:
                        item = outcomes.get(timeout=left)
                    except queue.Empty:
                        break
                if item is None:
                    ending = True
                    break
                group.append(item)
            try:
                self._record(group)
            except Exception as exc:
                if not self._stop.is_set():  # after stop() the store may be closed
                    log.error("recording %d delivery outcomes failed: %s", len(group),
                              type(exc).__name__)
            finally:
                with self._changed:
                    self._held -= len(group)
                    self._changed.notify_all()
                self.wake()
            if ending:
                return


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
