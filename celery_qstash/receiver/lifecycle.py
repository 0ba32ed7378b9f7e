"""A receiver process's start and stop, told to the app as a Celery worker's are.

Code moved off a worker still hangs its set-up on the worker's signals: a connection
pool or an OpenTelemetry instrumentation opened in ``worker_process_init``, per-worker
settings in ``celeryd_init``, and Celery's own Django fix-up, which on ``worker_init``
starts closing stale database connections around every task (``task_prerun`` /
``task_postrun``, which the receiver's tracer sends). :func:`worker_lifecycle` sends
them, in a worker's order, around a process that runs deferred task bodies:
``celery-qstash serve`` uses it, and an app that mounts the receiver in its own server
can enter it in its lifespan.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from celery import signals
from celery.utils.nodenames import default_nodename, host_format

__all__ = ["ReceiverWorker", "worker_lifecycle"]


@dataclass(eq=False)  # a signal sender: hashed by identity, as a WorkController is
class ReceiverWorker:
    """What the ``sender`` of ``worker_init`` / ``worker_ready`` / ``worker_shutdown`` is
    here, in a worker's place: handlers read ``sender.app`` and ``sender.hostname``."""

    app: Any
    hostname: str
    #: The keyword options the process was started with (a worker's ``options``).
    options: dict[str, Any] = field(default_factory=dict)
    #: Bodies run in the ASGI server's threads: the thread pool is the worker pool this
    #: is closest to (Celery's Django fix-up reads it to decide how to close connections).
    pool_cls: str = "celery.concurrency.thread:TaskPool"


@contextmanager
def worker_lifecycle(
    app: Any, hostname: str | None = None, **options: Any
) -> Iterator[ReceiverWorker]:
    """Send a worker's start-up signals, yield, then its shut-down ones.

    On entry, as ``celery worker -P solo`` does: ``app.loader.init_worker()`` (the
    ``imports``/``include`` modules, the loader's and the Django fix-up's start-up), then
    ``celeryd_init``, ``worker_init``, ``celeryd_after_setup``, ``worker_process_init``
    and ``worker_ready``. On exit, even after an error: ``worker_shutting_down``,
    ``worker_process_shutdown`` and ``worker_shutdown``. A handler that raises is logged
    and the others still run (Celery's ``Signal.send``), as in a worker. ``hostname``
    (``celery@<host>`` by default) takes Celery's ``%h``/``%n``/``%d`` too.
    """
    node = host_format(default_nodename(hostname))
    worker = ReceiverWorker(app=app, hostname=node, options=dict(options))
    app.loader.init_worker()
    signals.celeryd_init.send(sender=node, instance=worker, conf=app.conf, options=options)
    # As a worker's start does (celery.app.trace.setup_worker_optimizations, without its
    # patch of Task.__call__): threads that run bodies find this app, its tasks are final.
    app.set_current()
    app.set_default()
    app.finalize(auto=True)
    signals.worker_init.send(sender=worker)
    signals.celeryd_after_setup.send(sender=node, instance=worker, conf=app.conf)
    app.loader.init_worker_process()
    signals.worker_process_init.send(sender=node)
    signals.worker_ready.send(sender=worker)
    exitcode = 0
    try:
        yield worker
    except BaseException:
        exitcode = 1
        raise
    finally:
        signals.worker_shutting_down.send(sender=node, sig="SIGTERM", how="Warm",
                                          exitcode=exitcode)
        signals.worker_process_shutdown.send(sender=node, pid=os.getpid(), exitcode=exitcode)
        signals.worker_shutdown.send(sender=worker)
        app.loader.shutdown_worker()
