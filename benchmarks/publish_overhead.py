"""What the shim adds on top of a bare SDK publish, measured side by side in one run.

Both sides publish the same AutoSend email to the same local emulator (delivery
off, so only the publish path is timed): (a) the official SDK's ``publish_json``
with the headers the shim would send, (b) ``task.delay()`` (argument check,
option table, task body, pydantic validation, signals, SDK publish). Also (c)
eager mode, which never touches the network. Prints per-call times and ratios.

    python benchmarks/publish_overhead.py [N]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

from celery import Celery
from qstash import QStash

from celery_qstash import Email, QStashTask
from celery_qstash.local.emulator import EmulatorServer
from celery_qstash.testing import outbox


def _timed(fn: Callable[[int], object], n: int) -> list[float]:
    samples = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    with EmulatorServer(start_delivery=False) as server:
        app = Celery("bench", set_as_current=True)
        app.conf.update(
            qstash_url=server.url, qstash_token=server.token, autosend_api_key="AS_bench"
        )

        @app.task(base=QStashTask, name="bench.welcome")
        def welcome(i: int) -> Email:
            return Email(
                to=f"user{i}@example.com",
                from_="hi@acme.example",
                subject="Welcome",
                html="<p>Hi {{name}}</p>",
                dynamic_data={"name": "x"},
            )

        sdk = QStash(server.token, retry=False, base_url=server.url)

        def raw(i: int) -> object:
            body = {
                "from": {"email": "hi@acme.example"},
                "subject": "Welcome",
                "html": "<p>Hi {{name}}</p>",
                "dynamicData": {"name": "x"},
                "to": {"email": f"user{i}@example.com"},
            }
            return sdk.message.publish_json(
                url="https://api.autosend.com/v1/mails/send",
                body=body,
                headers={"Authorization": "Bearer AS_bench", "Idempotency-Key": f"raw-{i}"},
                retries=3,
                deduplication_id=f"raw-{i}",
                label=f"raw-{i}",
                flow_control={"key": "autosend.bench", "rate": 2, "period": "1s"},
                redact={"header": ["Authorization"]},
            )

        for fn in (raw, welcome.delay):  # warm up connections and imports
            _timed(fn, 20)
        rounds = {"sdk": [], "shim": []}  # type: dict[str, list[float]]
        for _ in range(3):  # interleave so both sides see the same machine state
            rounds["sdk"] += _timed(raw, n // 3)
            rounds["shim"] += _timed(welcome.delay, n // 3)
        app.conf.task_always_eager = True
        eager = _timed(welcome.delay, n)
        outbox.clear()

    sdk_ms = statistics.median(rounds["sdk"]) * 1000
    shim_ms = statistics.median(rounds["shim"]) * 1000
    eager_ms = statistics.median(eager) * 1000
    print(f"publishes per side: {len(rounds['sdk'])} (median per call)")
    print(f"  bare SDK publish_json   {sdk_ms:7.3f} ms")
    print(f"  task.delay() (shim)     {shim_ms:7.3f} ms   ratio shim/SDK = {shim_ms / sdk_ms:.2f}")
    print(
        f"  eager task.delay()      {eager_ms:7.3f} ms   ratio eager/SDK = {eager_ms / sdk_ms:.2f}"
    )


if __name__ == "__main__":
    main()
