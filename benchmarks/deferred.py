"""Deferred tasks (issue 18) against a Celery worker on Redis, for ``bench.py --only deferred``.

Ours: ``.delay()`` of a no-op :class:`DeferredTask` -> the emulator (its own process,
delivering) -> ``celery-qstash serve`` (its own process) runs the body. The anchor:
``.delay()`` of the same no-op body as a plain task -> Redis -> ``celery worker --pool
solo`` (its own process, gossip, mingle and heartbeat off: the anchor at its cheapest).
Each body appends a byte to a file of its process; a round is ``n`` sequential calls, from
the first publish until the file holds ``n`` more bytes (publish to body done).

Each round also reads the CPU time the receiver's and the worker's processes used
(``/proc``): their cost per task, whatever the rest of the machine is doing.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _harness import HOST, PIDS, cpu_seconds, emulator_process, free_port, paired, redis_server

HERE = os.path.dirname(os.path.abspath(__file__))


def _env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("QSTASH_", "AUTOSEND_"))}
    return {**clean, "PYTHONPATH": HERE, **extra}


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], url: str, ready: Callable[[], bool],
             ) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, *args], env=env, cwd=HERE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    PIDS[url] = proc.pid
    try:
        deadline = time.monotonic() + 60
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(args)} did not start")
            time.sleep(0.05)
        yield proc
    finally:
        PIDS.pop(url, None)
        proc.terminate()
        proc.wait(30)


def _serve(emulator_url: str, done: Path) -> Any:
    """``celery-qstash serve`` on the benchmark's app (the emulator's dev signing keys)."""
    import httpx

    from celery_qstash.devserver import DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY

    url = f"http://{HOST}:{free_port()}/qstash/receive"
    port = url.rsplit(":", 1)[1].split("/")[0]

    def ready() -> bool:
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(url, timeout=1).status_code == 405
        return False

    env = _env(QSTASH_CURRENT_SIGNING_KEY=DEV_CURRENT_SIGNING_KEY,
               QSTASH_NEXT_SIGNING_KEY=DEV_NEXT_SIGNING_KEY, QSTASH_RECEIVER_URL=url,
               BENCH_DONE_FILE=str(done))
    args = ["-m", "celery_qstash", "serve", "-A", "_deferred_app:app", "--port", port,
            "-l", "WARNING"]
    return url, _process(args, env, url, ready)


def _worker(broker: str, done: Path) -> Any:
    key = f"worker:{broker}"
    args = ["-m", "celery", "-A", "_deferred_app", "worker", "--pool", "solo", "-c", "1",
            "-l", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    env = _env(BENCH_BROKER=broker, BENCH_DONE_FILE=str(done))
    # Ready once it has run a task: the warm-up below waits for that.
    return key, _process(args, env, key, lambda: True)


class Side:
    """One side: publish ``n`` no-op tasks, wait for their bodies. Over every measured round
    it adds up the CPU time of each process of the pipeline: the one that runs the bodies
    (``runner``), the servers in between (``via``) and this one, the caller (Redis, in C,
    is left out of the anchor's)."""

    def __init__(self, publish: Callable[[int], object], done: Path, runner: str,
                 via: tuple[str, ...] = ()) -> None:
        self.publish, self.done, self.runner, self.via = publish, done, runner, via
        self.cpu: dict[str, float] = {}
        self.tasks = 0

    def _count(self) -> int:
        return self.done.stat().st_size if self.done.exists() else 0

    def _cpu(self) -> dict[str, float]:
        times = {key: cpu_seconds(key) for key in (self.runner, *self.via)}
        return {**times, "caller": time.process_time()}

    def run(self, n: int, measure: bool = True, timeout: float = 120.0) -> float:
        """Tasks per second, from the first publish to the last body done."""
        goal = self._count() + n
        before = self._cpu()
        began = time.perf_counter()
        for i in range(n):
            self.publish(i)
        deadline = time.monotonic() + timeout
        while self._count() < goal:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {n - goal + self._count()} of {n} bodies ran")
            time.sleep(0.002)
        rate = n / (time.perf_counter() - began)
        if measure:
            for key, seconds in self._cpu().items():
                self.cpu[key] = self.cpu.get(key, 0.0) + seconds - before[key]
            self.tasks += n
        return rate

    def per_task_us(self, *keys: str) -> float:
        """CPU per task of these processes (all of them when none is named)."""
        total = sum(self.cpu.get(key, 0.0) for key in keys or tuple(self.cpu))
        return 1e6 * total / max(1, self.tasks)


def _publisher(**conf: Any) -> tuple[Any, Any, Any]:
    """A fresh app for the caller's side (each run has its own servers): the two tasks
    under the names ``_deferred_app`` registers; their bodies run elsewhere."""
    from celery import Celery

    from celery_qstash import DeferredTask

    app = Celery("bench-publisher", set_as_current=False)
    app.conf.update(**conf)

    @app.task(base=DeferredTask, name="bench.noop_deferred", shared=False, ignore_result=True)
    def noop_deferred(i: int) -> None:
        raise AssertionError("runs in the serve process")

    @app.task(name="bench.noop", shared=False, ignore_result=True)
    def noop(i: int) -> None:
        raise AssertionError("runs in the worker process")

    return app, noop_deferred, noop


Triple = tuple[float, float, float]
#: The last run's CPU per task of each process, in us (for the script's own printout).
PARTS: dict[str, float] = {}


def deferred_vs_worker(n: int, rounds: int = 5) -> tuple[Triple, Triple, Triple]:
    """((ours tasks/s, the worker's, ratio), (receiver CPU us per task, the worker's, ratio
    receiver/worker), (the pipeline's CPU us per task: caller + emulator + receiver, caller
    + worker, ratio))."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-deferred-"))
    ours_done, anchor_done = tmp / "serve.done", tmp / "worker.done"
    with emulator_process(deliver=True) as (emulator_url, token), \
            redis_server() as broker:
        if broker is None:
            raise SystemExit("redis-server is missing: scripts/bench installs it")
        receiver_url, serving = _serve(emulator_url, ours_done)
        worker_key, working = _worker(broker, anchor_done)
        with serving, working:
            app, noop_deferred, noop = _publisher(
                broker_url=broker, qstash_url=emulator_url, qstash_token=token,
                qstash_receiver_url=receiver_url, qstash_publish_timeout=30)
            ours = Side(lambda i: noop_deferred.delay(i), ours_done, receiver_url,
                        via=(emulator_url,))
            anchor = Side(lambda i: noop.delay(i), anchor_done, worker_key)
            try:
                ours.run(50, measure=False)
                anchor.run(50, measure=False)
                rates = paired(lambda: ours.run(n), lambda: anchor.run(n), rounds=rounds)
            finally:
                app.close()
    for path in (ours_done, anchor_done):
        path.unlink(missing_ok=True)
    tmp.rmdir()
    def per_task(a: float, b: float) -> tuple[float, float, float]:
        return a, b, a / max(1e-9, b)

    PARTS.update({f"{name} {part}": side.per_task_us(key)
                  for name, side in (("ours", ours), ("anchor", anchor))
                  for part, key in (("caller", "caller"), ("runner", side.runner),
                                    *(("emulator", k) for k in side.via))})
    return (rates, per_task(ours.per_task_us(receiver_url), anchor.per_task_us(worker_key)),
            per_task(ours.per_task_us(), anchor.per_task_us()))


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    (o, a, r), (oc, ac, rc), (op, ap, rp) = deferred_vs_worker(
        int(sys.argv[1]) if len(sys.argv) > 1 else 200)
    print(f"end to end: {o:,.0f}/s vs {a:,.0f}/s (worker) = {r:.2f}x")
    print(f"CPU per task: {oc:,.0f} us vs {ac:,.0f} us (worker) = {rc:.2f}x")
    print(f"pipeline CPU per task: {op:,.0f} us vs {ap:,.0f} us (worker) = {rp:.2f}x")
    for part, us in PARTS.items():
        print(f"  {part}: {us:,.0f} us per task")
