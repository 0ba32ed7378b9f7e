"""Every throughput figure of issue 10, each against its anchor measured in the same run.

    scripts/bench            # or: python benchmarks/bench.py [--runs 2] [--quick]
    scripts/bench --only deferred,redis      # some groups of rows only (--only help lists them)

Prints one Markdown table: figure, ours, anchor, ratio, target, met. Each figure is
measured ``--runs`` times (default 2) and shown as the range over the runs; within a
run, ours and the anchor alternate (five rounds each; the ratio is the median of the
per-round ratios, so that both sides of a ratio see nearly the same machine). Servers
run in child processes on 127.0.0.1 (a bare QStash stand-in, the emulator, Debian's
``redis-server``), all started and stopped here.
Nothing here is a test: the suite asserts behaviour, never a time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from celery import Celery
from qstash import QStash

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import cpu_seconds, emulator_process, paired, rate, redis_server, standin
from deferred import deferred_vs_worker

from celery_qstash import Email, QStashTask
from celery_qstash.status import StatusClient
from celery_qstash.testing import outbox

KEY = "AS_bench_key"
SEND_URL = "https://api.autosend.com/v1/mails/send"


@dataclass
class Figure:
    name: str
    unit: str
    ours: float
    anchor: float | None
    ratio: float | None
    target: str
    met: bool


# --- the task under test and its bare-SDK twin -------------------------------------------


def make_app(url: str, token: str, name: str = "bench") -> tuple[Celery, Any]:
    app = Celery(name, set_as_current=True)
    app.conf.update(qstash_url=url, qstash_token=token, autosend_api_key=KEY,
                    qstash_publish_timeout=30)

    @app.task(base=QStashTask, name="bench.welcome", shared=False)
    def welcome(i: int) -> Email:
        return Email(to=f"user{i}@example.com", from_="hi@acme.example",
                     subject="Welcome", html="<p>Hi {{name}}</p>", dynamic_data={"name": "x"})

    return app, welcome


def sdk_publisher(url: str, token: str) -> Callable[[int], object]:
    """The request ``welcome.apply_async((i,), countdown=60)`` makes, through the bare SDK."""
    sdk = QStash(token, retry=False, base_url=url)

    def publish(i: int) -> object:
        body = {"from": {"email": "hi@acme.example"}, "subject": "Welcome",
                "html": "<p>Hi {{name}}</p>", "dynamicData": {"name": "x"},
                "to": {"email": f"user{i}@example.com"}}
        task_id = f"raw-{time.monotonic_ns()}-{i}"
        return sdk.message.publish_json(
            url=SEND_URL, body=body,
            headers={"Authorization": f"Bearer {KEY}", "Idempotency-Key": task_id,
                     "X-Celery-Task": "bench.welcome"},
            retries=3, delay=60, deduplication_id=task_id, label=task_id,
            flow_control={"key": "autosend.0123456789abcdef", "rate": 2, "period": "1s"},
            redact={"header": ["Authorization"]},
        )

    return publish


# --- client-side figures (a bare stand-in server) ----------------------------------------


def per_call_publish(n: int) -> tuple[float, float, float]:
    with standin() as url:
        _, welcome = make_app(url, "tok")
        raw = sdk_publisher(url, "tok")
        rate(lambda i: welcome.apply_async((i,), countdown=60), 50)
        rate(raw, 50)
        return paired(lambda: rate(lambda i: welcome.apply_async((i,), countdown=60), n),
                      lambda: rate(raw, n))


def eager_delay(n: int) -> tuple[float, float, float]:
    app, welcome = make_app("http://127.0.0.1:9", "tok", "bench-eager")
    app.conf.task_always_eager = True

    @app.task(name="bench.plain", shared=False)
    def plain(i: int) -> dict[str, Any]:
        return {"to": f"user{i}@example.com"}

    def ours() -> float:
        try:
            return rate(lambda i: welcome.delay(i), n)
        finally:
            outbox.clear()

    rate(lambda i: welcome.delay(i), 50)
    rate(lambda i: plain.delay(i), 50)
    outbox.clear()
    return paired(ours, lambda: rate(lambda i: plain.delay(i), n))


def batch_vs_sequential(n: int) -> tuple[float, float, float]:
    with standin() as url:
        _, welcome = make_app(url, "tok")
        welcome.delay_many([(i,) for i in range(50)])

        def many() -> float:
            began = time.perf_counter()
            welcome.delay_many([(i,) for i in range(n)])
            return n / (time.perf_counter() - began)

        return paired(many, lambda: rate(lambda i: welcome.delay(i), n), rounds=3)


def emulator_vs_redis(n: int) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(ours through the emulator, Celery+Redis, ratio) and the ceiling: (a bare SDK
    ``publish_json`` to the do-nothing stand-in, Celery+Redis, ratio), all alternating."""
    with emulator_process() as (url, token), redis_server() as broker, standin() as bare:
        if broker is None:
            raise SystemExit("redis-server is missing: scripts/bench installs it")
        _, welcome = make_app(url, token)
        raw = sdk_publisher(bare, "tok")
        celery_app = Celery("bench-redis", broker=broker, set_as_current=False)

        @celery_app.task(name="bench.plain_redis", shared=False)
        def plain(i: int) -> int:
            return i

        def ours() -> float:
            return rate(lambda i: welcome.apply_async((i,), countdown=60), n)

        def redis() -> float:
            return rate(lambda i: plain.apply_async((i,), countdown=60), n)

        rate(lambda i: welcome.apply_async((i,), countdown=60), 50)
        rate(lambda i: plain.apply_async((i,), countdown=60), 50)
        rate(raw, 50)
        try:
            ours_side = paired(ours, redis)
            ceiling = paired(lambda: rate(raw, n), redis)
            return ours_side, ceiling
        finally:
            celery_app.close()


# --- the emulator --------------------------------------------------------------------------


class ServerCpu:
    """The emulator's own CPU time per message over the measured rounds: its capacity on
    one core is 1 / that, whatever the client in front of it costs."""

    def __init__(self, url: str) -> None:
        self.url, self.seconds, self.messages = url, 0.0, 0

    def measure(self, run: Callable[[], float], messages: int) -> float:
        began = cpu_seconds(self.url)
        result = run()
        self.seconds += cpu_seconds(self.url) - began
        self.messages += messages
        return result

    @property
    def per_message_ms(self) -> float:
        return 1000 * self.seconds / max(1, self.messages)


def emulator_single(n: int) -> tuple[float, float, float, float]:
    """(ours/s, stand-in/s, ratio, emulator CPU ms per publish)."""
    with emulator_process() as (url, token), standin() as bare:
        ours, anchor = sdk_publisher(url, token), sdk_publisher(bare, "tok")
        rate(ours, 50)
        rate(anchor, 50)
        cpu = ServerCpu(url)
        result = paired(lambda: cpu.measure(lambda: rate(ours, n), n), lambda: rate(anchor, n))
        return (*result, cpu.per_message_ms)


def _batch_rate(url: str, token: str, requests: int) -> float:
    sdk = QStash(token, retry=False, base_url=url)
    began = time.perf_counter()
    for r in range(requests):
        sdk.message.batch([
            {"url": f"{SEND_URL}?n={r}-{i}", "body": json.dumps({"n": i}),
             "content_type": "application/json", "delay": 3600}
            for i in range(100)
        ])
    return requests * 100 / (time.perf_counter() - began)


def emulator_batch(requests: int) -> tuple[float, float, float, float]:
    """(ours msg/s, stand-in msg/s, ratio, emulator CPU ms per message)."""
    with emulator_process() as (url, token), standin() as bare:
        _batch_rate(url, token, 2)
        cpu = ServerCpu(url)
        result = paired(lambda: cpu.measure(lambda: _batch_rate(url, token, requests),
                                            requests * 100),
                        lambda: _batch_rate(bare, "tok", requests))
        return (*result, cpu.per_message_ms)


def due_together(url: str, token: str, sink: str, count: int, lead: float = 2.0,
                 timeout: float = 60.0) -> tuple[float, list[float]]:
    """Publish ``count`` messages due at one whole second; (delivery rate, lateness list)."""
    httpx.post(f"{sink}/reset")
    sdk = QStash(token, retry=False, base_url=url)
    due = int(time.time() + lead) + 1
    for start in range(0, count, 100):
        sdk.message.batch([
            {"url": f"https://sink.bench/sink/{start + i}", "body": "{}",
             "content_type": "application/json", "not_before": due, "retries": 0}
            for i in range(min(100, count - start))
        ])
    deadline = time.time() + lead + timeout
    arrivals: list[float] = []
    while time.time() < deadline:
        arrivals = httpx.get(f"{sink}/stats").json()["arrivals"]
        if len(arrivals) >= count:
            break
        time.sleep(0.2)
    if len(arrivals) < count:
        return 0.0, [float("inf")]
    lateness = sorted(a - due for a in arrivals)
    return count / max(1e-6, max(arrivals) - due), lateness


def emulator_delivery(count: int) -> tuple[float, float, float]:
    """(deliveries/s, p50 lateness ms, p99 lateness ms) for messages due together."""
    with standin() as sink, emulator_process(
        deliver=True, routes={"https://sink.bench": sink}
    ) as (url, token):
        speed, _ = due_together(url, token, sink, count)
        _, lateness = due_together(url, token, sink, 300)
        p50 = statistics.median(lateness) * 1000
        p99 = lateness[min(len(lateness) - 1, int(len(lateness) * 0.99))] * 1000
        return speed, p50, p99


def emulator_flat(
    pending_small: int, pending_large: int, n: int, due: int
) -> tuple[float, float, float, float, float, float]:
    """Ingest (single publishes/s) and delivery (/s) with few vs many pending delayed
    messages: both emulators run side by side and are measured alternately."""
    with standin() as sink_small, standin() as sink_large, emulator_process(
        deliver=True, routes={"https://sink.bench": sink_small}, pending=pending_small
    ) as (url_small, token), emulator_process(
        deliver=True, routes={"https://sink.bench": sink_large}, pending=pending_large
    ) as (url_large, _):
        small, large = sdk_publisher(url_small, token), sdk_publisher(url_large, token)
        rate(small, 50)
        rate(large, 50)
        ingest_large, ingest_small, ratio_in = paired(
            lambda: rate(large, n), lambda: rate(small, n)
        )
        out_large, out_small, ratio_out = paired(
            lambda: due_together(url_large, token, sink_large, due)[0],
            lambda: due_together(url_small, token, sink_small, due)[0],
            rounds=3,
        )
    return ingest_small, ingest_large, ratio_in, out_small, out_large, ratio_out


def emulator_flat_cpu(pending_small: int, pending_large: int, n: int,
                      requests: int) -> tuple[float, float, float, float, float, float]:
    """The ingest half of ``emulator_flat`` read from the emulators' own CPU time, which
    the machine's load moves far less than rates: (CPU ms per single publish with few and
    with many pending, capacity ratio many/few, then the same for a ``/v2/batch`` message in
    us). Both emulators run side by side; the sides alternate five rounds."""
    with emulator_process(pending=pending_small) as (url_small, token), emulator_process(
        pending=pending_large
    ) as (url_large, _):
        small, large = sdk_publisher(url_small, token), sdk_publisher(url_large, token)
        rate(small, 50)
        rate(large, 50)
        _batch_rate(url_small, token, 2)
        _batch_rate(url_large, token, 2)
        cpu = {url: ServerCpu(url) for url in (url_small, url_large)}
        paired(lambda: cpu[url_large].measure(lambda: rate(large, n), n),
               lambda: cpu[url_small].measure(lambda: rate(small, n), n))
        single = (cpu[url_small].per_message_ms, cpu[url_large].per_message_ms)
        cpu = {url: ServerCpu(url) for url in (url_small, url_large)}
        paired(lambda: cpu[url_large].measure(
                   lambda: _batch_rate(url_large, token, requests), requests * 100),
               lambda: cpu[url_small].measure(
                   lambda: _batch_rate(url_small, token, requests), requests * 100))
        batch = (cpu[url_small].per_message_ms * 1000, cpu[url_large].per_message_ms * 1000)
    return (single[0], single[1], single[0] / single[1],
            batch[0], batch[1], batch[0] / batch[1])


# --- the dashboard's /metrics --------------------------------------------------------------


class CountingStatus(StatusClient):
    """A StatusClient that counts its logs requests (what a scrape costs QStash)."""

    requests = 0

    def events(self, **kwargs: Any) -> Any:
        self.requests += 1
        return super().events(**kwargs)


def metrics_scrape(history_small: int, history_large: int, new: int
                   ) -> tuple[float, float, float, float, float, float, float]:
    """A scrape after ``new`` events, with a long and a short history in QStash's logs:
    (scrapes/s large, scrapes/s small, ratio, logs requests per scrape, events read per
    scrape (the new ones and the settling overlap), task-list reads/s on the large history,
    scrapes per task-list read in time). Each dashboard scraped the
    history once first (its first read) and waited out the settling overlap."""
    from celery_qstash.local.dashboard.metrics import SETTLE_MS, Metrics

    with emulator_process(pending=history_small) as (url_small, token), emulator_process(
        pending=history_large
    ) as (url_large, _):
        sides = {}
        for url in (url_small, url_large):
            status = CountingStatus(QStash(token, retry=False, base_url=url))
            metrics = Metrics(status)
            metrics.exposition()  # the first read: the history, once
            sides[url] = (status, metrics, QStash(token, retry=False, base_url=url))
        # The history is older than the settling overlap: what a dashboard that has been
        # scraping all along sees (each read starts SETTLE_MS before the newest event).
        time.sleep(SETTLE_MS / 1000 + 1)
        scrapes = 0

        def scrape(url: str, count: int = new) -> float:
            nonlocal scrapes
            _, metrics, sdk = sides[url]
            # Scrapes further apart than the overlap, as Prometheus' (15 s by default) are:
            # each reads its new events and those of the 5 s before them, no more.
            time.sleep(SETTLE_MS / 1000)
            sdk.message.batch([
                {"url": f"{SEND_URL}?n={i}", "body": "{}", "content_type": "application/json",
                 "delay": 3600, "headers": {"X-Celery-Task": "bench.welcome"}}
                for i in range(count)
            ])
            began = time.perf_counter()
            metrics.exposition()
            if url == url_large:
                scrapes += 1
            return 1 / (time.perf_counter() - began)

        scrape(url_small, 1)
        scrape(url_large, 1)
        scrapes = 0

        status_large, metrics_large, _ = sides[url_large]
        before, read_before = status_large.requests, metrics_large.events_read
        large, small, ratio = paired(lambda: scrape(url_large), lambda: scrape(url_small))
        per_scrape = (status_large.requests - before) / max(1, scrapes)
        events_per_scrape = (metrics_large.events_read - read_before) / max(1, scrapes)

        def task_list() -> float:
            began = time.perf_counter()
            status_large.tasks(pages=5)  # what the dashboard's /tasks and /api/tasks read
            return 1 / (time.perf_counter() - began)

        listing, _, times = paired(task_list, lambda: scrape(url_large), rounds=3)
        return large, small, ratio, per_scrape, events_per_scrape, listing, 1 / times


# --- the table ------------------------------------------------------------------------------


def span(values: list[float], fmt: str = "{:,.0f}") -> str:
    lo, hi = min(values), max(values)
    low, high = fmt.format(lo), fmt.format(hi)
    return low if low == high else f"{low}-{high}"


#: The groups of rows ``--only`` selects, in the order they run.
GROUPS = ("publish", "eager", "batch", "redis", "ingest", "ingest_batch", "delivery", "flat",
          "flat_cpu", "deferred", "scrape")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="fewer calls per figure")
    parser.add_argument("--only", metavar="GROUP[,GROUP...]", default=",".join(GROUPS),
                        help="run only these groups of rows: " + ", ".join(GROUPS))
    args = parser.parse_args()
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    if not only or only - set(GROUPS):
        parser.error(f"--only takes some of {', '.join(GROUPS)}; got {args.only!r}")
    scale = 0.25 if args.quick else 1.0
    n = max(40, int(200 * scale))
    large_pending = 100_000 if not args.quick else 20_000

    rows: dict[str, dict[str, list[float]]] = {}

    def add(name: str, **values: float | None) -> None:
        slot = rows.setdefault(name, {})
        for key, value in values.items():
            if value is not None:
                slot.setdefault(key, []).append(value)

    for run in range(args.runs):
        print(f"run {run + 1}/{args.runs} ...", file=sys.stderr, flush=True)
        if "publish" in only:
            ours, anchor, ratio = per_call_publish(n)
            add("publish", ours=ours, anchor=anchor, ratio=1 / ratio)  # time ratio
        if "eager" in only:
            ours, anchor, ratio = eager_delay(n)
            add("eager", ours=ours, anchor=anchor, ratio=ratio)
        if "batch" in only:
            ours, anchor, ratio = batch_vs_sequential(max(100, int(1000 * scale)))
            add("batch", ours=ours, anchor=anchor, ratio=ratio)
        if "redis" in only:
            (ours, anchor, ratio), (sdk, anchor_sdk, ratio_sdk) = emulator_vs_redis(n)
            add("redis", ours=ours, anchor=anchor, ratio=ratio)
            add("redis_ceiling", ours=sdk, anchor=anchor_sdk, ratio=ratio_sdk)
        if "ingest" in only:
            ours, anchor, ratio, cpu_ms = emulator_single(n)
            add("ingest", ours=ours, anchor=anchor, ratio=ratio)
            add("ingest_cpu", ours=1000 / cpu_ms, anchor=cpu_ms)
        if "ingest_batch" in only:
            ours, anchor, ratio, cpu_ms = emulator_batch(max(5, int(20 * scale)))
            add("ingest_batch", ours=ours, anchor=anchor, ratio=ratio)
            add("ingest_batch_cpu", ours=1000 / cpu_ms, anchor=cpu_ms * 1000)
        if "delivery" in only:
            speed, p50, p99 = emulator_delivery(max(300, int(1000 * scale)))
            add("delivery", ours=speed)
            add("lateness", ours=p99, anchor=p50)
        if "flat" in only:
            small_in, large_in, ratio_in, small_out, large_out, ratio_out = emulator_flat(
                1_000, large_pending, n, max(300, int(500 * scale)))
            add("flat_ingest", ours=large_in, anchor=small_in, ratio=ratio_in)
            add("flat_delivery", ours=large_out, anchor=small_out, ratio=ratio_out)
        if "flat_cpu" in only:
            small_ms, large_ms, ratio_ms, small_us, large_us, ratio_us = emulator_flat_cpu(
                1_000, large_pending, n, max(5, int(20 * scale)))
            add("flat_ingest_cpu", ours=large_ms, anchor=small_ms, ratio=ratio_ms)
            add("flat_batch_cpu", ours=large_us, anchor=small_us, ratio=ratio_us)
        if "deferred" in only:
            rates, receiver, pipeline = deferred_vs_worker(n)
            for key, (ours, anchor, ratio) in (("deferred", rates), ("deferred_cpu", receiver),
                                               ("deferred_pipeline", pipeline)):
                add(key, ours=ours, anchor=anchor, ratio=ratio)
        if "scrape" in only:
            large_s, small_s, ratio_s, per_scrape, per_read, listing, cheaper = metrics_scrape(
                1_000, 50_000 if not args.quick else 10_000, 100)
            add("scrape_flat", ours=large_s, anchor=small_s, ratio=ratio_s)
            add("scrape_requests", ours=per_scrape, anchor=per_read,
                ratio=per_scrape / max(1.0, math.ceil(per_read / 100)))
            add("scrape_vs_list", ours=large_s, anchor=listing, ratio=cheaper)

    def line(label: str, key: str, unit: str, anchor_label: str, target: str,
             met: Callable[[list[float]], bool] | None, ratio_fmt: str = "{:.2f}",
             anchor_unit: str | None = None, ours_fmt: str = "{:,.0f}") -> str | None:
        if key not in rows:
            return None  # a group --only left out
        values = rows[key]
        ours = span(values.get("ours", [0.0]), ours_fmt) + unit
        anchor = "-"
        if values.get("anchor"):
            fmt = "{:,.2f}" if anchor_unit == " ms" else "{:,.0f}"
            anchor = (span(values["anchor"], fmt) + (unit if anchor_unit is None else anchor_unit)
                      + f" ({anchor_label})")
        ratio = span(values["ratio"], ratio_fmt) + "x" if values.get("ratio") else "-"
        if met is None:
            ok = "-"
        else:
            ok = "yes" if met(values.get("ratio") or values.get("ours", [])) else "**no**"
        return f"| {label} | {ours} | {anchor} | {ratio} | {target} | {ok} |"

    large = "100k" if not args.quick else "20k"
    history = "50k" if not args.quick else "10k"
    lines = [
        line("`.apply_async(countdown=60)`, time per call vs bare SDK `publish_json` "
             "(same stand-in server)",
             "publish", "/s", "SDK", "<= 1.10x the SDK's time", lambda r: max(r) <= 1.10),
        line("eager `.delay()` vs Celery's eager `.delay()` of a plain task", "eager", "/s",
             "Celery", ">= 1.0x", lambda r: min(r) >= 1.0),
        line("1,000 emails: `delay_many` vs 1,000 sequential `.delay()` (stand-in)", "batch",
             " emails/s", "sequential", ">= 10x", lambda r: min(r) >= 10),
        line("`.apply_async(countdown)` through the emulator vs Celery's on Redis", "redis", "/s",
             "Celery+Redis", ">= 1.0x", lambda r: bool(r) and min(r) >= 1.0),
        line("ceiling of the row above: a bare SDK `publish_json` to the do-nothing stand-in "
             "vs Celery's on Redis", "redis_ceiling", "/s", "Celery+Redis",
             "(context, no target)", None),
        line("emulator ingest, SDK `publish_json` one by one vs a bare stand-in", "ingest", "/s",
             "stand-in", ">= 1,000/s", lambda r: min(rows["ingest"]["ours"]) >= 1000),
        line("emulator ingest through `/v2/batch`, 100 per request vs a bare stand-in",
             "ingest_batch", " msg/s", "stand-in", ">= 10,000 msg/s",
             lambda r: min(rows["ingest_batch"]["ours"]) >= 10_000),
        line("emulator single-publish capacity: 1 / its CPU time per publish (anchor column: "
             "CPU per publish)", "ingest_cpu", "/s", "CPU", ">= 1,000/s",
             lambda r: min(rows["ingest_cpu"]["ours"]) >= 1000, anchor_unit=" ms"),
        line("emulator `/v2/batch` capacity: 1 / its CPU time per message (anchor column: "
             "CPU per message)", "ingest_batch_cpu", " msg/s", "CPU", ">= 10,000 msg/s",
             lambda r: min(rows["ingest_batch_cpu"]["ours"]) >= 10_000, anchor_unit=" us"),
        line("emulator delivery to a local sink (messages due together)", "delivery", "/s", "",
             ">= 500/s", lambda r: min(r) >= 500),
        line("300 messages due at the same second: lateness p99 (anchor column: p50)", "lateness",
             " ms", "p50", "p99 <= 100 ms", lambda r: max(rows["lateness"]["ours"]) <= 100),
        line(f"emulator ingest with {large} vs 1k pending delayed messages", "flat_ingest", "/s",
             "1k pending", ">= 0.9x (flat)", lambda r: min(r) >= 0.9),
        line(f"emulator delivery with {large} vs 1k pending delayed messages", "flat_delivery",
             "/s", "1k pending", ">= 0.9x (flat)", lambda r: min(r) >= 0.9),
        line(f"emulator CPU per single publish with {large} vs 1k pending (ratio: capacity, "
             "1k's CPU / the other's)", "flat_ingest_cpu", " ms", "1k pending",
             ">= 0.9x (flat)", lambda r: min(r) >= 0.9, anchor_unit=" ms", ours_fmt="{:,.2f}"),
        line(f"emulator CPU per `/v2/batch` message with {large} vs 1k pending (ratio: "
             "capacity)", "flat_batch_cpu", " us", "1k pending", ">= 0.9x (flat)",
             lambda r: min(r) >= 0.9),
        line(f"dashboard `/metrics` scrape after 100 new events, {history} vs 1k events in "
             "QStash's logs", "scrape_flat", " scrapes/s", "1k events", ">= 0.9x (flat)",
             lambda r: min(r) >= 0.9),
        line("QStash logs requests per `/metrics` scrape after 100 new events (anchor column: "
             "events read, the 5 s overlap included; ratio: requests / the pages they fill)",
             "scrape_requests", "", "events read", "1.0x (one request per 100 events read)",
             lambda r: max(r) <= 1.0, ours_fmt="{:,.1f}", anchor_unit=""),
        line(f"a `/metrics` scrape vs one read of the task list (`/api/tasks`, 5 pages), "
             f"{history} events", "scrape_vs_list", " scrapes/s", "task list",
             "(context, no target)", None),
        line("deferred no-op task end to end: `.delay()` -> emulator -> `celery-qstash serve` "
             "runs the body, vs `celery worker --pool solo` on Redis (publish to body done)",
             "deferred", " tasks/s", "worker", ">= 0.5x", lambda r: min(r) >= 0.5),
        line("the receiver's CPU per delivered task (HTTP, verify, dedup, trace; its process) "
             "vs the solo worker's CPU per task (ratio: ours / the worker's)", "deferred_cpu",
             " us", "worker", "<= 1.5x", lambda r: max(r) <= 1.5, anchor_unit=" us"),
        line("the whole pipeline's CPU per task: caller + emulator + receiver vs caller + "
             "worker (Redis left out)", "deferred_pipeline", " us", "worker",
             "(context, no target)", None, anchor_unit=" us"),
    ]
    print(f"\n{args.runs} run(s); ranges are over the runs; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
    header = ["| figure | ours | anchor, same run | ratio | target | met |",
              "|---|---|---|---|---|---|"]
    print("\n".join(header + [text for text in lines if text is not None]))


if __name__ == "__main__":
    main()
