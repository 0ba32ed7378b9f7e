"""The app ``benchmarks/deferred.py`` measures: one no-op body, as a deferred task (run by
``celery-qstash serve``) and as a plain Celery task (run by ``celery worker`` on Redis).

The body appends one byte to ``BENCH_DONE_FILE``: the same on both sides, and how the
benchmark sees from outside that a body has run.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from celery_qstash import DeferredTask

app = Celery("bench_deferred", broker=os.environ.get("BENCH_BROKER", "memory://"))
app.conf.update(broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)

_done: list[Any] = []


def _body() -> None:
    if not _done:
        _done.append(open(os.environ["BENCH_DONE_FILE"], "ab", buffering=0))  # noqa: SIM115
    _done[0].write(b".")


@app.task(base=DeferredTask, name="bench.noop_deferred", shared=False, ignore_result=True)
def noop_deferred(i: int) -> None:
    _body()


@app.task(name="bench.noop", shared=False, ignore_result=True)
def noop(i: int) -> None:
    _body()
