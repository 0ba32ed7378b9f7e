"""``/metrics``: Flower's Prometheus series (and ours), counted from QStash's logs.

Flower counts the Celery events its workers send; the dashboard counts QStash's log
events the same way (what each one counts as: :mod:`celery_qstash.status.events`), so
Flower's Grafana dashboard and alert rules work unchanged. Series only QStash and
AutoSend have are under the ``celery_qstash_`` prefix. The README's status section has
the table of every series and what it means on QStash.

**Cost.** A scrape reads the log events that are new since the previous scrape: one paged
read (``fromDate`` = the newest event already counted, less :data:`SETTLE_MS`, then
QStash's cursor, 100 events a page), never the history again. Events inside that overlap
are recognised and not counted twice; the overlap is there because a log entry may become
readable a moment after a later one (the emulator writes outcomes in batches). Scrapes
are serialised, so two Prometheus servers scraping at once read each new event once.

**Restarts.** Counters start at zero when the dashboard first starts, as Flower's do; a
restart without a state file starts them again at zero, which Prometheus reads as a
counter reset (``rate()``/``increase()`` handle it; each counter's ``_created`` sample
says when it began). With a state file (``metrics_state=``, ``--metrics-state``) the
counts, histograms, what is waiting or running, and the read position are saved after
each scrape that changed them, and a restart goes on from there: nothing is counted
twice, the events QStash logged while the dashboard was down are counted at the next
scrape, and no counter ever goes backwards.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from qstash.errors import QStashError
from starlette.requests import Request
from starlette.responses import Response

from ...clock import Clock, SystemClock
from ...errors import ConfigurationError
from ...status import StatusClient
from ...status.events import FLOWER_EVENT_TYPES, LogEvent, flower_event_type, read_new_events

__all__ = ["CONTENT_TYPE", "SETTLE_MS", "Metrics", "metrics_endpoint"]

log = logging.getLogger("celery_qstash.local.dashboard")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: How far back each read starts before the newest event counted (ms): a log entry that
#: becomes readable later than this after a newer one is not counted. The emulator writes
#: an outcome at most a quarter of a second after it happens; QStash documents nothing.
SETTLE_MS = 5_000
#: Flower's runtime buckets (prometheus_client's default).
RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                   7.5, 10.0)
#: From a message's due time to its attempt: milliseconds to an hour.
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                    900.0, 3600.0)
#: An attempt without an outcome in the logs stops counting as running after its
#: ``Upstash-Timeout``, or after this long when it has none (QStash's longest plan limit).
RUNNING_CAP_MS = 2 * 3600 * 1000
#: How a delivery attempt ended.
OUTCOMES = ("delivered", "refused", "unanswered")
#: A gateway answering for a host that is down: that host reads offline.
_GATEWAY_DOWN = frozenset({502, 503, 504})
_STATE_VERSION = 1


@dataclass
class _Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if len(self.counts) != len(self.bounds) + 1:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        index = next((i for i, b in enumerate(self.bounds) if value <= b), len(self.bounds))
        self.counts[index] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == math.inf else repr(float(bound)), float(running)))
        return out


_Pair = tuple[str, str]  # (task, worker)


@dataclass
class _State:
    """Everything a scrape needs, as plain data (what the state file holds)."""

    created: float
    watermark_ms: int
    seen: dict[str, int] = field(default_factory=dict)
    events: dict[tuple[str, str, str], int] = field(default_factory=dict)
    runtime: dict[_Pair, _Histogram] = field(default_factory=dict)
    lateness: dict[_Pair, _Histogram] = field(default_factory=dict)
    prefetch_time: dict[_Pair, float] = field(default_factory=dict)
    attempts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    responses: dict[tuple[str, str, str], int] = field(default_factory=dict)
    dead_letters: dict[_Pair, int] = field(default_factory=dict)
    online: dict[str, int] = field(default_factory=dict)
    #: message id -> [task, worker, due ms, first attempt?]: messages waiting for an attempt.
    waiting: dict[str, list[Any]] = field(default_factory=dict)
    #: message id -> [task, worker, started ms, give up at ms]: attempts under way.
    running: dict[str, list[Any]] = field(default_factory=dict)

    # -- the state file ------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        def rows(table: dict[Any, Any]) -> list[Any]:
            return [[*k, v] if isinstance(k, tuple) else [k, v] for k, v in table.items()]

        def hists(table: dict[_Pair, _Histogram]) -> list[Any]:
            return [[*k, h.counts, h.total] for k, h in table.items()]

        return {
            "version": _STATE_VERSION, "created": self.created,
            "watermark_ms": self.watermark_ms, "seen": self.seen,
            "events": rows(self.events), "runtime": hists(self.runtime),
            "runtime_buckets": list(RUNTIME_BUCKETS), "lateness": hists(self.lateness),
            "lateness_buckets": list(LATENESS_BUCKETS),
            "prefetch_time": rows(self.prefetch_time), "attempts": rows(self.attempts),
            "responses": rows(self.responses), "dead_letters": rows(self.dead_letters),
            "online": rows(self.online), "waiting": self.waiting, "running": self.running,
        }

    @classmethod
    def load(cls, data: dict[str, Any]) -> _State:
        if data.get("version") != _STATE_VERSION:
            raise ValueError(f"unknown state file version {data.get('version')!r}")

        def table(name: str, width: int) -> dict[Any, Any]:
            return {(tuple(r[:width]) if width > 1 else r[0]): r[width] for r in data[name]}

        def hists(name: str, bounds: tuple[float, ...]) -> dict[_Pair, _Histogram]:
            if tuple(data[f"{name}_buckets"]) != bounds:  # other buckets: start afresh
                return {}
            return {(r[0], r[1]): _Histogram(bounds, list(r[2]), float(r[3]))
                    for r in data[name]}

        return cls(
            created=float(data["created"]), watermark_ms=int(data["watermark_ms"]),
            seen={str(k): int(v) for k, v in data["seen"].items()},
            events=table("events", 3), runtime=hists("runtime", RUNTIME_BUCKETS),
            lateness=hists("lateness", LATENESS_BUCKETS),
            prefetch_time=table("prefetch_time", 2), attempts=table("attempts", 3),
            responses=table("responses", 3), dead_letters=table("dead_letters", 2),
            online=table("online", 1), waiting=dict(data["waiting"]),
            running=dict(data["running"]),
        )


def _key(event: LogEvent) -> str:
    return "\x1f".join(map(str, event.key))


class Metrics:
    """The dashboard's counts, read forward from QStash's logs at each scrape."""

    def __init__(self, status: Any, *, clock: Clock | None = None,
                 state_file: str | os.PathLike[str] | None = None,
                 settle_ms: int = SETTLE_MS, max_pages: int = 1000) -> None:
        self.status = status
        self.clock: Clock = clock or SystemClock()
        self.state_file = Path(state_file) if state_file else None
        self.settle_ms = settle_ms
        self.max_pages = max_pages
        self.lock = threading.Lock()
        self.up = 0
        self.read_errors = 0
        self.reads = 0
        self.events_read = 0
        self.incomplete_reads = 0
        self.state = self._initial_state()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    def _initial_state(self) -> _State:
        now = self.clock.now()
        if self.state_file is not None and self.state_file.exists():
            try:
                return _State.load(json.loads(self.state_file.read_text()))
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                raise ConfigurationError(
                    "metrics_state", f"{self.state_file} is not a metrics state file ({exc}); "
                    "move it away to start the counters afresh") from None
        return _State(created=now, watermark_ms=int(now * 1000) - self.settle_ms)

    # -- one scrape ------------------------------------------------------------------

    def exposition(self) -> bytes:
        """Read what is new, then the whole exposition (Prometheus' text format)."""
        self.refresh()
        return generate_latest(self.registry)

    def refresh(self) -> None:
        with self.lock:
            try:
                status = self.status if isinstance(self.status, StatusClient) else self.status()
                events, complete = read_new_events(
                    status, self.state.watermark_ms - self.settle_ms, max_pages=self.max_pages)
            except (QStashError, httpx.HTTPError, ConfigurationError) as exc:
                self.up = 0
                self.read_errors += 1
                log.warning("metrics: QStash's logs could not be read: %s", type(exc).__name__)
                return
            self.up = 1
            self.reads += 1
            self.events_read += len(events)
            if not complete:
                self.incomplete_reads += 1
                log.warning("metrics: more than %d pages of new events; the oldest were "
                            "not counted", self.max_pages)
            changed = self._apply(events)
            changed = self._expire_running() or changed
            if changed and self.state_file is not None:
                self._save()

    def _apply(self, events: Iterable[LogEvent]) -> bool:
        state = self.state
        changed = False
        for event in events:
            key = _key(event)
            if key in state.seen:
                continue
            state.seen[key] = event.time_ms
            state.watermark_ms = max(state.watermark_ms, event.time_ms)
            changed = True
            if event.task is not None:  # not a celery-qstash task: nothing to count
                self._count(event, event.task)
        floor = state.watermark_ms - self.settle_ms
        state.seen = {k: t for k, t in state.seen.items() if t >= floor}
        return changed

    def _count(self, event: LogEvent, task: str) -> None:
        state, worker, mid = self.state, event.worker, event.message_id
        pair = (task, worker)
        for name in FLOWER_EVENT_TYPES:  # every series exists from the first event on
            state.events.setdefault((task, worker, name), 0)
        state.dead_letters.setdefault(pair, 0)
        state.prefetch_time.setdefault(pair, 0.0)
        for outcome in OUTCOMES:
            state.attempts.setdefault((task, worker, outcome), 0)
        for code in ("200", "429"):  # the codes dashboards and alerts ask for by name
            state.responses.setdefault((task, worker, code), 0)
        kind = flower_event_type(event)
        if kind is not None:
            state.events[(task, worker, kind)] += 1
        if event.state == "CREATED":
            state.waiting[mid] = [task, worker, event.due_ms or event.time_ms, True]
        elif event.state == "RETRY":
            state.waiting[mid] = [task, worker, event.next_delivery_ms or event.time_ms, False]
        elif event.state == "ACTIVE":
            waited = state.waiting.pop(mid, None)
            if waited is not None:
                late = max(0, event.time_ms - int(waited[2])) / 1000
                state.lateness.setdefault(pair, _Histogram(LATENESS_BUCKETS)).observe(late)
                if waited[3]:
                    state.prefetch_time[pair] = late
            limit = event.timeout_ms or RUNNING_CAP_MS
            state.running[mid] = [task, worker, event.time_ms, event.time_ms + limit]
        elif event.state in ("ERROR", "DELIVERED", "FAILED"):
            started = state.running.pop(mid, None)
            if started is not None:  # the end of an attempt (FAILED after ERROR is not)
                self._attempt_ended(event, pair, kind, int(started[2]))
            if event.state == "FAILED":
                state.waiting.pop(mid, None)
                state.dead_letters[pair] += 1
            if event.state != "ERROR":
                state.prefetch_time[pair] = 0.0  # as Flower, once the task is done
        elif event.state == "CANCELED":
            state.waiting.pop(mid, None)
            state.running.pop(mid, None)

    def _attempt_ended(self, event: LogEvent, pair: _Pair, kind: str | None,
                       started_ms: int) -> None:
        state, worker = self.state, event.worker
        code = event.response_status
        if event.state == "DELIVERED":
            outcome = "delivered"
        else:
            outcome = "refused" if code is not None else "unanswered"
        slot = (*pair, outcome)
        state.attempts[slot] = state.attempts.get(slot, 0) + 1
        if code is not None:
            slot = (*pair, str(code))
            state.responses[slot] = state.responses.get(slot, 0) + 1
        state.online[worker] = 0 if code is None or code in _GATEWAY_DOWN else 1
        if kind == "task-succeeded":
            seconds = max(0, event.time_ms - started_ms) / 1000
            state.runtime.setdefault(pair, _Histogram(RUNTIME_BUCKETS)).observe(seconds)

    def _expire_running(self) -> bool:
        now_ms = int(self.clock.now() * 1000)
        late = [mid for mid, run in self.state.running.items() if int(run[3]) < now_ms]
        for mid in late:
            del self.state.running[mid]
        return bool(late)

    def _save(self) -> None:
        assert self.state_file is not None
        folder = self.state_file.parent
        folder.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed over: a crash mid-write leaves the previous file whole.
        handle, temp = tempfile.mkstemp(dir=folder, prefix=".metrics-", suffix=".tmp")
        try:
            with os.fdopen(handle, "w") as out:
                json.dump(self.state.dump(), out, separators=(",", ":"))
            os.replace(temp, self.state_file)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    # -- what a scrape shows -----------------------------------------------------------

    def families(self) -> Iterator[Metric]:
        with self.lock:
            yield from self._families()

    def _families(self) -> Iterator[Metric]:
        state = self.state
        now_ms = int(self.clock.now() * 1000)
        created = state.created
        pairs = set(state.prefetch_time) | set(state.dead_letters)
        workers = {w for _, w in pairs} | set(state.online)

        events = CounterMetricFamily(
            "flower_events_total", "Number of times a celery task event was registered "
            "(QStash log events: see the README's table).", labels=["worker", "type", "task"])
        for (task, worker, kind), value in sorted(state.events.items()):
            events.add_metric([worker, kind, task], value, created=created)
        yield events

        yield _histogram("flower_task_runtime_seconds", "Task runtime: from a delivery "
                         "attempt's start to QStash's DELIVERED.", state.runtime)

        prefetch = GaugeMetricFamily(
            "flower_task_prefetch_time_seconds", "From the due time to the first delivery "
            "attempt, for the last task started (0 once it finished).",
            labels=["worker", "task"])
        legacy = GaugeMetricFamily(
            "flower_task_queuing_time_at_worker_seconds", "Flower before 1.0's name for "
            "flower_task_prefetch_time_seconds.", labels=["worker", "task"])
        for (task, worker), seconds in sorted(state.prefetch_time.items()):
            prefetch.add_metric([worker, task], seconds)
            legacy.add_metric([worker, task], seconds)
        yield prefetch
        yield legacy

        due: dict[_Pair, int] = dict.fromkeys(pairs, 0)
        scheduled: dict[_Pair, int] = dict.fromkeys(pairs, 0)
        for task, worker, due_ms, first in state.waiting.values():
            if first:
                table = due if int(due_ms) <= now_ms else scheduled
                table[(task, worker)] = table.get((task, worker), 0) + 1
        prefetched = GaugeMetricFamily(
            "flower_worker_prefetched_tasks", "Tasks due but not yet attempted by QStash.",
            labels=["worker", "task"])
        for (task, worker), value in sorted(due.items()):
            prefetched.add_metric([worker, task], value)
        yield prefetched
        waiting = GaugeMetricFamily(
            "celery_qstash_scheduled_messages", "Messages whose countdown or eta has not "
            "come yet (counted from the dashboard's first start).", labels=["worker", "task"])
        for (task, worker), value in sorted(scheduled.items()):
            waiting.add_metric([worker, task], value)
        yield waiting

        online = GaugeMetricFamily(
            "flower_worker_online", "1 when the last delivery attempt to this host got an "
            "answer (502, 503 and 504 excepted), 0 otherwise.", labels=["worker"])
        for worker, value in sorted(state.online.items()):
            online.add_metric([worker], value)
        yield online

        executing: dict[str, int] = dict.fromkeys(workers, 0)
        for _, worker, _, _ in state.running.values():
            executing[worker] = executing.get(worker, 0) + 1
        running = GaugeMetricFamily(
            "flower_worker_number_of_currently_executing_tasks", "Delivery attempts to this "
            "host under way (ACTIVE without an outcome yet).", labels=["worker"])
        for worker, value in sorted(executing.items()):
            running.add_metric([worker], value)
        yield running

        dead = CounterMetricFamily(
            "celery_qstash_dead_letters_total", "Messages whose retries ran out (QStash "
            "FAILED: moved to the dead letter queue).", labels=["worker", "task"])
        for (task, worker), value in sorted(state.dead_letters.items()):
            dead.add_metric([worker, task], value, created=created)
        yield dead

        attempts = CounterMetricFamily(
            "celery_qstash_delivery_attempts_total", "Delivery attempts by outcome: "
            "delivered, refused (an HTTP answer that is not a success), unanswered "
            "(no answer: connection error or timeout).", labels=["worker", "task", "outcome"])
        for (task, worker, outcome), value in sorted(state.attempts.items()):
            attempts.add_metric([worker, task, outcome], value, created=created)
        yield attempts

        answers = CounterMetricFamily(
            "celery_qstash_responses_total", "HTTP answers to delivery attempts by status "
            "code (AutoSend's are worker=\"api.autosend.com\"; 429s included).",
            labels=["worker", "task", "code"])
        for (task, worker, code), value in sorted(state.responses.items()):
            answers.add_metric([worker, task, code], value, created=created)
        yield answers

        yield _histogram("celery_qstash_lateness_seconds", "From a message's due time (its "
                         "not-before, or its retry's) to the delivery attempt.",
                         state.lateness)

        yield GaugeMetricFamily("celery_qstash_up", "1 when the last read of QStash's logs "
                                "succeeded.", value=self.up)
        yield CounterMetricFamily("celery_qstash_log_reads_total", "Reads of QStash's logs "
                                  "(one per scrape).", value=self.reads)
        yield CounterMetricFamily("celery_qstash_log_read_errors_total", "Reads of QStash's "
                                  "logs that failed.", value=self.read_errors)
        yield CounterMetricFamily("celery_qstash_log_events_read_total", "Log events read "
                                  "(the overlap included).", value=self.events_read)
        yield CounterMetricFamily("celery_qstash_log_reads_incomplete_total", "Reads that hit "
                                  "the page limit (older new events were not counted).",
                                  value=self.incomplete_reads)


def _histogram(name: str, documentation: str,
               table: dict[_Pair, _Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=["worker", "task"])
    for (task, worker), hist in sorted(table.items()):
        family.add_metric([worker, task], hist.cumulative(), sum_value=hist.total)
    return family


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return list(self.metrics.families())


def metrics_endpoint(request: Request) -> Response:
    """Prometheus' text format: Flower's series and ours (see the README's table).

    Each scrape reads QStash's log events that are new since the previous one. While
    QStash cannot be read, the last counts are served and ``celery_qstash_up`` is 0.
    """
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.exposition(), media_type=CONTENT_TYPE)
