"""The receiver's own Prometheus metrics: body runtimes and bodies running, in one process
and across several (prometheus_client's multiprocess mode), and never imported unless
configured."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from celery import Celery
from celery.result import AsyncResult
from prometheus_text import promtool_check_metrics, samples, value
from starlette.applications import Starlette
from starlette.routing import Mount

from celery_qstash import DeferredTask
from celery_qstash.contrib.prometheus import ReceiverMetrics
from celery_qstash.local.serving import ThreadedServer
from celery_qstash.receiver import fastapi_route
from celery_qstash.testing import DevServers

ROOT = Path(__file__).resolve().parents[2]


class Ticks:
    """A timer that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_observe_counts_a_body_as_running_then_records_its_runtime() -> None:
    ticks = Ticks()
    metrics = ReceiverMetrics(worker="web-1", timer=ticks, multiprocess=False)
    with metrics.observe("app.crunch"):
        text = metrics.exposition().decode()
        assert value(text, "flower_worker_number_of_currently_executing_tasks", worker="web-1") == 1
        assert value(text, "celery_qstash_tasks_executing", worker="web-1", task="app.crunch") == 1
        ticks.now += 0.3
    with pytest.raises(ValueError), metrics.observe("app.crunch"):
        ticks.now += 2
        raise ValueError("a body that raises is measured too")
    text = metrics.exposition().decode()
    labels = {"worker": "web-1", "task": "app.crunch"}
    assert value(text, "flower_task_runtime_seconds_count", **labels) == 2
    assert value(text, "flower_task_runtime_seconds_sum", **labels) == pytest.approx(2.3)
    assert value(text, "flower_task_runtime_seconds_bucket", le="0.5", **labels) == 1
    assert value(text, "flower_worker_number_of_currently_executing_tasks", worker="web-1") == 0
    promtool_check_metrics(text)


@pytest.fixture
def metered(live_app: Celery, dev_servers: DevServers) -> Iterator[tuple[ReceiverMetrics, str]]:
    """The user's web app: the receiver with metrics, and the registry mounted at /metrics."""
    metrics = ReceiverMetrics(worker="web-1", multiprocess=False)
    web = Starlette(routes=[Mount("/metrics", app=metrics.asgi_app())])
    fastapi_route(web, "/qstash/receive", live_app, metrics=metrics)
    with ThreadedServer(web) as server:
        live_app.conf.qstash_receiver_url = f"{server.url}/qstash/receive"
        live_app.conf.qstash_current_signing_key = dev_servers.emulator.current_signing_key
        live_app.conf.qstash_next_signing_key = dev_servers.emulator.next_signing_key
        live_app.conf.result_backend = "qstash://"
        yield metrics, server.url


def test_the_receiver_measures_each_deferred_body(
    live_app: Celery, metered: tuple[ReceiverMetrics, str]
) -> None:
    metrics, url = metered
    seen: list[float] = []

    @live_app.task(base=DeferredTask, name="live.measured", shared=False)
    def measured(x: int) -> int:
        text = metrics.exposition().decode()
        seen.append(value(text, "celery_qstash_tasks_executing", worker="web-1",
                          task="live.measured"))
        return x * 2

    results = [measured.delay(n) for n in range(3)]
    assert [AsyncResult(r.id, app=live_app).get(timeout=20) for r in results] == [0, 2, 4]
    # Each body saw itself running, and at most the three (QStash delivers concurrently).
    assert len(seen) == 3 and all(1 <= n <= 3 for n in seen), seen
    text = httpx.get(f"{url}/metrics/").text
    assert value(text, "flower_task_runtime_seconds_count", worker="web-1",
                 task="live.measured") == 3
    assert value(text, "flower_worker_number_of_currently_executing_tasks", worker="web-1") == 0


_CHILD = textwrap.dedent("""
    import sys
    from celery_qstash.contrib.prometheus import ReceiverMetrics
    metrics = ReceiverMetrics(worker="web-1")
    for _ in range(int(sys.argv[1])):
        with metrics.observe("app.crunch"):
            pass
    metrics.executing_by_task.labels("web-1", "app.stuck").inc()   # still running at exit
    print("done")
""")

_COLLECT = textwrap.dedent("""
    import sys
    from prometheus_client import multiprocess
    from celery_qstash.contrib.prometheus import ReceiverMetrics
    for pid in sys.argv[1:]:
        multiprocess.mark_process_dead(int(pid))
    sys.stdout.write(ReceiverMetrics(worker="web-1").exposition().decode())
""")


def _python(code: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done


def test_several_processes_add_up_in_multiprocess_mode(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    first = subprocess.Popen([sys.executable, "-c", _CHILD, "2"], env=env, cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    second = subprocess.Popen([sys.executable, "-c", _CHILD, "3"], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    assert first.communicate(timeout=60)[0].strip() == "done"
    assert second.communicate(timeout=60)[0].strip() == "done"
    alive = _python(_COLLECT, env).stdout
    labels = {"worker": "web-1", "task": "app.crunch"}
    assert value(alive, "flower_task_runtime_seconds_count", **labels) == 5
    # The two processes are gone without being marked dead: their running counts remain,
    # until the server's child_exit hook marks them (below).
    assert value(alive, "celery_qstash_tasks_executing", worker="web-1", task="app.stuck") == 2
    marked = _python(_COLLECT, env, str(first.pid), str(second.pid)).stdout
    assert value(marked, "flower_task_runtime_seconds_count", **labels) == 5
    stuck = samples(marked).get(("celery_qstash_tasks_executing",
                                 frozenset({"worker": "web-1", "task": "app.stuck"}.items())))
    assert not stuck


def test_the_core_never_imports_prometheus_client() -> None:
    code = textwrap.dedent("""
        import sys
        import celery_qstash, celery_qstash.receiver, celery_qstash.tasks.deferred
        from celery_qstash.receiver import asgi_app
        from celery import Celery
        asgi_app(Celery("x"))
        print("prometheus_client" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
