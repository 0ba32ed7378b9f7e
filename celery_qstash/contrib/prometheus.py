"""The receiver's own Prometheus metrics: deferred task runtimes and tasks in flight.

The dashboard's ``/metrics`` counts what QStash's logs say (a delivery's round trip, as
QStash saw it). The receiver knows more: how long each deferred task's body ran, and how
many bodies are running right now. Give it a :class:`ReceiverMetrics` and mount the
registry it fills::

    from celery_qstash.contrib.prometheus import ReceiverMetrics
    from celery_qstash.receiver import asgi_app

    metrics = ReceiverMetrics()                          # one per process
    receiver = asgi_app(celery_app, metrics=metrics)     # or fastapi_route(..., metrics=...)
    api.mount("/metrics", metrics.asgi_app())            # or metrics.wsgi_app()

Series, under Flower's names so its Grafana dashboard shows them:

* ``flower_task_runtime_seconds{worker, task}``: a histogram of body runtimes (Flower's
  buckets; ``buckets=`` to change them);
* ``flower_worker_number_of_currently_executing_tasks{worker}``: bodies running now;
* ``celery_qstash_tasks_executing{worker, task}``: the same, per task.

``worker`` is this machine's host name (``worker=`` to choose another).

**Several processes** (gunicorn, uvicorn ``--workers``): set ``PROMETHEUS_MULTIPROC_DIR``
to an empty directory before the processes start (prometheus_client's multiprocess
mode). Each process then writes its values there, and ``registry`` (so the mounted app)
reads all of them: histograms add up across processes, and the running counts add up
over the processes still alive. Call ``prometheus_client.multiprocess.mark_process_dead
(pid)`` from the server's ``child_exit`` hook, as prometheus_client documents, so a dead
process's running count is dropped; empty the directory when the server restarts.

Needs ``prometheus_client`` (the ``metrics`` extra: ``pip install
"celery-qstash[metrics]"``); nothing else in the package imports this module.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
    make_asgi_app,
    make_wsgi_app,
)
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["ReceiverMetrics"]


class ReceiverMetrics:
    """Runtime and in-flight counts of the deferred tasks a receiver runs.

    :param worker: the ``worker`` label (default: this machine's host name).
    :param registry: where the series are registered in a single process (default: a
        registry of their own, :attr:`registry`).
    :param buckets: the runtime histogram's buckets (Flower's, by default).
    :param timer: seconds from an arbitrary origin (``time.perf_counter``; a fake in tests).
    :param multiprocess: prometheus_client's multiprocess mode (default: on when
        ``PROMETHEUS_MULTIPROC_DIR`` is set).
    """

    def __init__(
        self,
        *,
        worker: str | None = None,
        registry: CollectorRegistry | None = None,
        buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
        timer: Callable[[], float] = time.perf_counter,
        multiprocess: bool | None = None,
    ) -> None:
        if multiprocess is None:
            multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.worker = worker or socket.gethostname()
        self.timer = timer
        # In multiprocess mode the values live in PROMETHEUS_MULTIPROC_DIR's files, not in
        # a registry: the series are registered nowhere, and the collector reads the files.
        target = None if multiprocess else (registry or CollectorRegistry())
        self.runtime = Histogram(
            "flower_task_runtime_seconds", "Deferred task body runtime on the receiver.",
            ["worker", "task"], buckets=tuple(buckets), registry=target)
        self.executing = Gauge(
            "flower_worker_number_of_currently_executing_tasks",
            "Deferred task bodies running on this receiver.", ["worker"], registry=target,
            multiprocess_mode="livesum")
        self.executing_by_task = Gauge(
            "celery_qstash_tasks_executing", "Deferred task bodies running, per task.",
            ["worker", "task"], registry=target, multiprocess_mode="livesum")
        self.executing.labels(self.worker)  # the series exists (at 0) from the start
        if target is None:
            self.registry = CollectorRegistry()
            MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
        else:
            self.registry = target

    @contextmanager
    def observe(self, task_name: str) -> Iterator[None]:
        """Count a body as running while it runs, then record how long it took."""
        running = self.executing.labels(self.worker)
        per_task = self.executing_by_task.labels(self.worker, task_name)
        running.inc()
        per_task.inc()
        began = self.timer()
        try:
            yield
        finally:
            self.runtime.labels(self.worker, task_name).observe(max(0.0, self.timer() - began))
            running.dec()
            per_task.dec()

    def exposition(self) -> bytes:
        """Every series in Prometheus' text format (all processes' in multiprocess mode)."""
        return generate_latest(self.registry)

    def asgi_app(self) -> Any:
        """An ASGI app answering with :meth:`exposition` (mount it at ``/metrics``)."""
        return make_asgi_app(self.registry)

    def wsgi_app(self) -> Any:
        """A WSGI app answering with :meth:`exposition`."""
        return make_wsgi_app(self.registry)
