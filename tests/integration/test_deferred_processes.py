"""Two receiver processes behind one load balancer share the Redis ledger: the same
message delivered to both at once runs its body once (issue 18's "many processes")."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from waiting import wait_until

from celery_qstash.local.emulator.signing import sign
from celery_qstash.local.serving import free_port
from celery_qstash.publish.message import MESSAGE_KIND

KEY = "sig_" + "p" * 40

RECEIVER = textwrap.dedent('''
    import sys, time
    import uvicorn
    from celery import Celery
    from celery_qstash import DeferredTask
    from celery_qstash.receiver import asgi_app

    port, url, ledger, log = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    app = Celery("twins")
    app.conf.update(qstash_current_signing_key=sys.argv[5], qstash_next_signing_key=sys.argv[5],
                    qstash_receiver_url=url, qstash_ledger_url=ledger)

    @app.task(base=DeferredTask, name="twins.charge")
    def charge(order):
        with open(log, "a") as out:
            out.write(f"{order}\\n")
        time.sleep(0.5)  # long enough for the twin delivery to arrive meanwhile
        return order

    uvicorn.run(asgi_app(app), host="127.0.0.1", port=int(port), log_level="warning")
''')


@pytest.fixture
def twins(tmp_path: Path, redis_url: str) -> Iterator[tuple[list[str], Path, str]]:
    """Two receiver processes; QStash signs for the load balancer's one public URL."""
    public = "https://shop.example/qstash/receive"
    log = tmp_path / "charges.log"
    ports = [free_port(), free_port()]
    procs = [subprocess.Popen([sys.executable, "-c", RECEIVER, str(p), public, redis_url,
                               str(log), KEY]) for p in ports]
    urls = [f"http://127.0.0.1:{p}/" for p in ports]
    try:
        for url in urls:
            wait_until(lambda u=url: _up(u), f"receiver at {url}")
        yield urls, log, public
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


def _up(url: str) -> bool:
    try:
        return httpx.post(url, content=b"{}").status_code in (400, 401)
    except httpx.TransportError:
        return False


def _deliver(url: str, body: bytes, headers: dict[str, str], barrier: threading.Barrier,
             answers: list[httpx.Response]) -> None:
    barrier.wait()  # both deliveries leave together, as a load balancer's twins would
    answers.append(httpx.post(url + "qstash/receive", content=body, headers=headers,
                              timeout=10))


def test_the_same_message_at_both_receivers_at_once_runs_once(
    twins: tuple[list[str], Path, str],
) -> None:
    urls, log, public = twins
    for round_ in range(5):
        body = json.dumps({"kind": MESSAGE_KIND, "task": "twins.charge", "id": f"o{round_}",
                           "args": [round_], "kwargs": {}, "retries": 0,
                           "delivery": f"nonce-{round_}"}).encode()
        headers = {"Upstash-Signature": sign(KEY, public, body, time.time()),
                   "Upstash-Message-Id": f"msg_{round_}", "Content-Type": "application/json",
                   # The load balancer forwards the public host; the signature names it.
                   "Host": "shop.example", "X-Forwarded-Proto": "https"}
        answers: list[httpx.Response] = []
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=_deliver, args=(u, body, headers, barrier, answers))
                   for u in urls]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = sorted(a.status_code for a in answers)
        # One ran it (200 with the result); the twin was told to come back (409) or, had
        # the first already finished, that it was done (200 duplicate): never run twice.
        assert statuses in ([200, 409], [200, 200]), [a.text for a in answers]
        assert [a.json().get("result") for a in answers].count(round_) == 1
    assert log.read_text().split() == [str(r) for r in range(5)]
