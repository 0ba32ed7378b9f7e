"""The long reliability runs behind ``RELIABILITY.md`` (``scripts/reliability`` runs this).

Everything runs on 127.0.0.1: the QStash emulator and the AutoSend sandbox as real
processes with SQLite state in a temporary directory, a :class:`FaultProxy` in front
of each where faults are injected, the shim publishing from threads of this process.

1. **Exactly once under faults**: ``--emails`` emails (5,000) while 20 % of AutoSend's
   answers fail (half a 503 before AutoSend acts, half lost after it captured the
   email) and the emulator is SIGKILLed once mid-run and restarted. A publish that
   fails is sent again with the same ``task_id``, as the error says to.
2. **End to end**: ``--tasks`` tasks (10,000), no faults, counted at every stage.
3. **Each fault** the CI suites (``tests/reliability/``) cover, with what the caller
   saw and how long it took on the real clock.
4. **Bad inputs**: what the caller (or an HTTP client) gets, and that nothing was
   published.
5. **Secrets**: every surface of the run (process output, logs, dashboard pages,
   Flower API, emulator logs/messages/DLQ API, SQLite files, sandbox pages, CLI)
   searched for the QStash token, the AutoSend key and the signing keys.

Run: ``python benchmarks/reliability.py [--emails N] [--tasks N] [--output FILE]``.
Exit status 1 if an email was lost or duplicated or a secret was found.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from celery import Celery

from celery_qstash import Email, PublishError, QStashTask
from celery_qstash.config import load_settings
from celery_qstash.devserver import AUTOSEND_URL
from celery_qstash.local.dashboard import create_app as dashboard_app
from celery_qstash.local.emulator import EmulatorServer
from celery_qstash.local.faultproxy import Fault, FaultProxy
from celery_qstash.local.sandbox import SandboxServer
from celery_qstash.local.serving import ThreadedServer, free_port
from celery_qstash.publish.transports.qstash import client_for
from celery_qstash.status import StatusClient

ROOT = Path(__file__).resolve().parent.parent
PUBLISHERS = 4
#: Task settings of the runs: QStash retries a failed delivery after 1 s, up to 10 times
#: (QStash's default backoff, 12 s then 2.5 min, would make the run wait, not test more).
RETRY_DELAY = 1
MAX_RETRIES = 10
#: The longest the run waits for the inbox to settle (a bound, not an expectation).
SETTLE = 600.0

log = logging.getLogger("reliability")


# -- plumbing --------------------------------------------------------------------------


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(0.05)


class Process:
    """A server (emulator or sandbox) in a child process; output goes to a file."""

    def __init__(self, name: str, code: str, port: int, health: str, workdir: Path,
                 env: dict[str, str]) -> None:
        self.name, self.code, self.port, self.health = name, code, port, health
        self.output = workdir / f"{name}.out"
        self.env = {**os.environ, **env,
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                os.environ.get("PYTHONPATH")]))}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Process:
        with self.output.open("ab") as out:
            self.process = subprocess.Popen([sys.executable, "-c", self.code], stdout=out,
                                            stderr=subprocess.STDOUT, env=self.env)

        def healthy() -> bool:
            try:
                return httpx.get(self.url + self.health, trust_env=False).is_success
            except httpx.TransportError:
                return False

        wait_until(healthy, 30, f"{self.name} to start")
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Secrets:
    token: str
    api_key: str
    signing: list[str] = field(default_factory=list)

    def named(self) -> dict[str, str]:
        out = {"QStash token": self.token, "AutoSend key": self.api_key}
        for i, key in enumerate(self.signing):
            out[("current", "next")[i] + " signing key"] = key
        return out


class Stack:
    """Emulator + sandbox processes, a fault proxy in front of each, and an app."""

    def __init__(self, workdir: Path, secret: Secrets) -> None:
        self.workdir = workdir
        self.secret = secret
        sandbox_port, emulator_port = free_port(), free_port()
        self.sandbox = Process(
            "sandbox",
            "from celery_qstash.local.sandbox import serve; "
            f"serve(port={sandbox_port}, data_dir={str(workdir / 'sandbox')!r}, "
            "rate_per_second=None, rate_per_minute=None, retry_after_header=True)",
            sandbox_port, "/_sandbox/health", workdir, {})
        self.autosend = FaultProxy(self.sandbox.url, seed=8)
        self.emulator: Process | None = None
        self.emulator_port = emulator_port
        self.qstash: FaultProxy | None = None
        self.http = httpx.Client(trust_env=False, timeout=30)

    def start(self) -> Stack:
        self.sandbox.start()
        self.autosend.start()
        self.emulator = Process(
            "emulator",
            "import os; from celery_qstash.local.emulator import serve; "
            f"serve(port={self.emulator_port}, data_dir={str(self.workdir / 'emulator')!r}, "
            f"routes={{{AUTOSEND_URL!r}: {self.autosend.url!r}}}, "
            "extra_tokens=[os.environ['RELIABILITY_QSTASH_TOKEN']])",
            self.emulator_port, "/_emulator/health", self.workdir,
            {"RELIABILITY_QSTASH_TOKEN": self.secret.token}).start()
        self.qstash = FaultProxy(self.emulator.url, seed=9).start()
        keys = self.http.get(f"{self.emulator.url}/v2/keys", headers=self.auth).json()
        self.secret.signing = [keys["current"], keys["next"]]
        return self

    def stop(self) -> None:
        for proxy in (self.qstash, self.autosend):
            if proxy is not None:
                proxy.stop()
        for process in (self.emulator, self.sandbox):
            if process is not None:
                process.stop()
        self.http.close()

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret.token}"}

    def app(self, publish_timeout: float = 2.0, via_proxy: bool = True) -> Celery:
        assert self.emulator is not None and self.qstash is not None
        app = Celery("reliability", set_as_current=False)
        app.conf.qstash_url = self.qstash.url if via_proxy else self.emulator.url
        app.conf.qstash_token = self.secret.token
        app.conf.autosend_api_key = self.secret.api_key
        app.conf.autosend_rate_limit = "off"
        app.conf.qstash_publish_timeout = publish_timeout
        return app

    def inbox(self) -> Counter[str]:
        """Emails captured per idempotency key (= task id), every page of the sandbox API."""
        counts: Counter[str] = Counter()
        offset = 0
        while True:
            page = self.http.get(f"{self.sandbox.url}/api/v1/messages",
                                 params={"limit": 500, "offset": offset}).json()
            counts.update(m["idempotencyKey"] for m in page["messages"])
            offset += len(page["messages"])
            if not page["messages"] or offset >= page["total"]:
                return counts

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.http.get(f"{self.sandbox.url}/api/v1/stats").json()
        return stats

    def count_events(self, state: str) -> int:
        """How many logs QStash has in ``state`` (every page of the logs API)."""
        assert self.emulator is not None
        total, cursor = 0, None
        while True:
            params: dict[str, Any] = {"state": state, "count": 1000}
            if cursor:
                params["cursor"] = cursor
            page = self.http.get(f"{self.emulator.url}/v2/events", headers=self.auth,
                                 params=params).json()
            total += len(page["events"])
            cursor = page.get("cursor")
            if not cursor or not page["events"]:
                return total

    def pending(self) -> int:
        """Messages QStash still holds (waiting, retrying or in flight)."""
        assert self.emulator is not None
        return int(self.http.get(f"{self.emulator.url}/_emulator/health").json()["pending"])

    def dlq(self) -> list[dict[str, Any]]:
        assert self.emulator is not None
        messages: list[dict[str, Any]] = self.http.get(
            f"{self.emulator.url}/v2/dlq", headers=self.auth).json()["messages"]
        return messages

    def reset_sandbox(self) -> None:
        # The sandbox's destructive endpoints take the key a send takes.
        self.http.post(f"{self.sandbox.url}/_sandbox/reset",
                       headers={"Authorization": f"Bearer {self.secret.api_key}"}
                       ).raise_for_status()


def email_task(app: Celery, name: str = "reliability.send", **options: Any) -> Any:
    options.setdefault("default_retry_delay", RETRY_DELAY)
    options.setdefault("max_retries", MAX_RETRIES)

    @app.task(base=QStashTask, name=name, shared=False, **options)
    def send(user_id: int, run: str) -> Email:
        return Email(to=f"user{user_id}@example.com", from_="Acme <hello@acme.example>",
                     subject=f"{run} #{user_id}", html=f"<p>Hello {user_id}</p>")

    # Bind the task now: publisher threads must not race to finalize the app.
    app.finalize(auto=True)
    assert send.request_stack is not None
    return send


def publish_all(send: Any, run: str, task_ids: list[str],
                on_published: Callable[[], None] | None = None
                ) -> tuple[list[str], list[tuple[str, Exception]]]:
    """Publish every task from ``PUBLISHERS`` threads: (published, failed with the error).

    Any exception is kept (a ``PublishError`` is expected under faults; anything else
    is reported as it is, never swallowed)."""
    published: list[str] = []
    failed: list[tuple[str, Exception]] = []
    lock = threading.Lock()

    def worker(start: int) -> None:
        for index in range(start, len(task_ids), PUBLISHERS):
            task_id = task_ids[index]
            try:
                send.apply_async((index, run), task_id=task_id)
            except Exception as exc:  # counted and shown in the report
                with lock:
                    failed.append((task_id, exc))
            else:
                with lock:
                    published.append(task_id)
                if on_published is not None:
                    on_published()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(PUBLISHERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return published, failed


def error_kinds(failed: list[tuple[str, Exception]]) -> str:
    """``PublishError (outcome unknown) x3, ...`` and the first one's words, for the report."""
    kinds: Counter[str] = Counter()
    for _, exc in failed:
        name = type(exc).__name__
        if getattr(exc, "outcome_unknown", False):
            name += " (outcome unknown)"
        kinds[name] += 1
    if not failed:
        return "none"
    first = str(failed[0][1]).split(". Calling again")[0][:160]
    return ", ".join(f"{name} x{n}" for name, n in kinds.most_common()) + f"; the first: {first}"


def republish(send: Any, run: str, failed: list[tuple[str, Exception]]) -> int:
    """Call again with the same task id until QStash answers (what the error tells the
    caller to do); returns how many calls it took in all."""
    calls = 0
    for task_id, _ in failed:
        index = int(task_id.rsplit("-", 1)[1])
        for _attempt in range(20):
            calls += 1
            try:
                send.apply_async((index, run), task_id=task_id)
                break
            except PublishError:
                time.sleep(0.5)
        else:
            raise RuntimeError(f"{task_id} could not be published again")
    return calls


def settle(stack: Stack, expected: set[str], timeout: float = SETTLE) -> Counter[str]:
    """The inbox (only the expected tasks) once it holds every one of them and QStash
    has nothing left to deliver, or the timeout passed."""
    deadline = time.monotonic() + timeout
    while True:
        inbox = stack.inbox()
        if (set(inbox) >= expected and stack.pending() == 0) or time.monotonic() > deadline:
            return Counter({key: n for key, n in inbox.items() if key in expected})
        time.sleep(1.0)


# -- 1. exactly once under faults ---------------------------------------------------------


def run_faults(stack: Stack, count: int) -> dict[str, Any]:
    assert stack.emulator is not None
    stack.reset_sandbox()
    stack.autosend.reset()
    # 20 % of AutoSend's answers fail: half before AutoSend acts, half lost after it
    # captured the email (the redelivery must be replayed, not sent again).
    stack.autosend.chance(0.10, Fault.respond(503, '{"success":false}', match="/v1/mails"))
    stack.autosend.chance(0.10 / 0.9, Fault.drop_response(match="/v1/mails"))
    app = stack.app()
    send = email_task(app)
    task_ids = [f"faults-{i}" for i in range(count)]
    published_so_far = [0]
    killed = threading.Event()
    emulator = stack.emulator

    def on_published() -> None:
        published_so_far[0] += 1

    def killer() -> None:
        wait_until(lambda: published_so_far[0] >= count * 2 // 5, SETTLE, "40 % published")
        emulator.kill()
        killed.set()
        time.sleep(1.0)  # publishes meanwhile find nothing listening
        emulator.start()

    kill_thread = threading.Thread(target=killer)
    started = time.monotonic()
    kill_thread.start()
    published, failed = publish_all(send, "faults", task_ids, on_published)
    kill_thread.join()
    calls = republish(send, "faults", failed)
    inbox = settle(stack, set(task_ids))
    took = time.monotonic() - started
    attempts = stack.autosend.counts("/v1/mails")
    stats = stack.stats()
    app.close()
    return {
        "emails": count,
        "published first time": len(published),
        "publish errors (sent again)": len(failed),
        "what those calls raised": error_kinds(failed),
        "calls to publish them again": calls,
        "emulator SIGKILLed": killed.is_set(),
        "AutoSend requests": sum(attempts.values()),
        "injected 503 (before AutoSend)": attempts["respond"],
        "injected lost answers (after AutoSend)": attempts["drop_response"],
        "AutoSend replays (Idempotency-Key)": stats["replayed"],
        "distinct emails in the inbox": len(inbox),
        "lost": len(set(task_ids) - set(inbox)),
        "duplicated": sum(n - 1 for n in inbox.values() if n > 1),
        "dead letters": len(stack.dlq()),
        "time (s)": round(took, 1),
    }


# -- 2. end to end ----------------------------------------------------------------------------


def run_end_to_end(stack: Stack, count: int) -> dict[str, Any]:
    stack.reset_sandbox()
    stack.autosend.reset()
    app = stack.app(via_proxy=False)
    send = email_task(app, name="reliability.e2e")
    task_ids = [f"e2e-{i}" for i in range(count)]
    created_before = stack.count_events("CREATED")
    delivered_before = stack.count_events("DELIVERED")
    started = time.monotonic()
    published, failed = publish_all(send, "e2e", task_ids)
    publish_time = time.monotonic() - started
    calls = republish(send, "e2e", failed)
    inbox = settle(stack, set(task_ids))
    took = time.monotonic() - started
    stats = stack.stats()
    app.close()
    return {
        "tasks": count,
        "published (calls returned)": len(published),
        "publish errors (sent again)": len(failed),
        "what those calls raised": error_kinds(failed),
        "calls to publish them again": calls,
        "accepted by QStash (CREATED logs)": stack.count_events("CREATED") - created_before,
        "delivery attempts (AutoSend requests)": stats["received"],
        "delivered (DELIVERED logs)": stack.count_events("DELIVERED") - delivered_before,
        "emails in the inbox (distinct)": len(inbox),
        "lost": len(set(task_ids) - set(inbox)),
        "duplicated": sum(n - 1 for n in inbox.values() if n > 1),
        "publish rate (tasks/s)": round(len(published) / publish_time, 1),
        "time (s)": round(took, 1),
    }


# -- 3. each fault ----------------------------------------------------------------------------


@dataclass
class FaultRow:
    fault: str
    caller_saw: str
    took: float
    inbox: str
    note: str = ""


def _outcome(call: Callable[[], Any]) -> tuple[str, float, Any]:
    started = time.monotonic()
    try:
        value = call()
    except Exception as exc:  # what the caller sees is the point here
        took = time.monotonic() - started
        text = f"{type(exc).__name__}: {str(exc).splitlines()[0][:110]}"
        if getattr(exc, "outcome_unknown", None) is not None:
            text += f" (outcome_unknown={exc.outcome_unknown})"  # type: ignore[attr-defined]
        return text, took, exc
    return "returned", time.monotonic() - started, value


class InProcess:
    """Emulator (system clock) + sandbox in this process, a proxy in front of each."""

    def __init__(self) -> None:
        self.sandbox = SandboxServer(rate_per_second=None, rate_per_minute=None,
                                     retry_after_header=True).start()
        self.autosend = FaultProxy(self.sandbox.url).start()
        self.emulator = EmulatorServer(routes={AUTOSEND_URL: self.autosend.url}).start()
        self.qstash = FaultProxy(self.emulator.url).start()
        self.http = httpx.Client(trust_env=False, timeout=30)

    def stop(self) -> None:
        for proxy in (self.qstash, self.autosend):
            proxy.stop()
        self.emulator.stop()
        self.sandbox.stop()
        self.http.close()

    def app(self, publish_timeout: float = 1.0) -> Celery:
        app = Celery("faults", set_as_current=False)
        app.conf.qstash_url = self.qstash.url
        app.conf.qstash_token = self.emulator.token
        app.conf.autosend_api_key = "fault-table-key"
        app.conf.autosend_rate_limit = "off"
        app.conf.qstash_publish_timeout = publish_timeout
        return app

    def inbox(self, task_id: str) -> int:
        messages = self.http.get(f"{self.sandbox.url}/api/v1/messages",
                                 params={"limit": 500}).json()["messages"]
        return sum(m["idempotencyKey"] == task_id for m in messages)

    def wait_inbox(self, task_id: str, timeout: float = 30) -> tuple[int, float]:
        started = time.monotonic()
        with contextlib.suppress(RuntimeError):
            wait_until(lambda: self.inbox(task_id) >= 1, timeout, task_id)
        return self.inbox(task_id), time.monotonic() - started

    def chaos(self, **rule: Any) -> None:
        self.http.post(f"{self.sandbox.url}/api/v1/chaos", json=rule,
                       headers={"Authorization": "Bearer fault-table-key"}).raise_for_status()


def run_fault_table() -> list[FaultRow]:
    env = InProcess()
    rows: list[FaultRow] = []
    publish = "/v2/publish/"
    try:
        app = env.app()
        send = email_task(app, name="faults.send")

        def qstash_fault(name: str, task_id: str, setup: Callable[[], object],
                         teardown: Callable[[], None] = lambda: None, note: str = "") -> None:
            env.qstash.reset()
            setup()
            try:
                saw, took, _ = _outcome(lambda: send.apply_async((1, name), task_id=task_id))
            finally:
                teardown()
                env.qstash.reset()
            first, _ = env.wait_inbox(task_id, timeout=2)
            if first == 0:  # not stored: the recovery is calling again with the same id
                _outcome(lambda: send.apply_async((1, name), task_id=task_id))
                count, _ = env.wait_inbox(task_id)
                where = f"{count} after calling again"
            else:
                _outcome(lambda: send.apply_async((1, name), task_id=task_id))
                time.sleep(0.5)
                where = f"{env.inbox(task_id)} (calling again was deduplicated)"
            rows.append(FaultRow(name, saw, took, where, note))

        qstash_fault("QStash down (connection refused)", "q-down", env.qstash.down, env.qstash.up)
        qstash_fault("QStash slow (answers after 3 s, stores it)", "q-slow",
                     lambda: env.qstash.add(Fault.delay(3.0, match=publish)))
        qstash_fault("QStash trickles its answer (1 byte / 50 ms)", "q-trickle",
                     lambda: env.qstash.add(Fault.trickle(0.05, match=publish)))
        qstash_fault("QStash 503 twice, then fine", "q-5xx",
                     lambda: env.qstash.add(Fault.respond(503, '{"error":"busy"}',
                                                          match=publish), 2))
        qstash_fault("QStash 500 on every attempt", "q-500",
                     lambda: env.qstash.add(Fault.respond(500, '{"error":"internal"}',
                                                          match=publish), 50))
        qstash_fault("QStash 429", "q-429",
                     lambda: env.qstash.add(Fault.respond(429, '{"error":"Too many requests"}',
                                                          match=publish)))
        qstash_fault("QStash 401 (token refused)", "q-401",
                     lambda: env.qstash.add(Fault.respond(401, '{"error":"Unauthorized"}',
                                                          match=publish)))
        qstash_fault("QStash 200 with a body that is not JSON", "q-200-html",
                     lambda: env.qstash.add(Fault.respond(200, "<html>gateway</html>",
                                                          match=publish)))
        qstash_fault("QStash 200 with {}", "q-200-empty",
                     lambda: env.qstash.add(Fault.respond(200, "{}", match=publish)))
        qstash_fault("QStash stores it, the answer is lost", "q-lost",
                     lambda: env.qstash.add(Fault.drop_response(match=publish)))
        qstash_fault("QStash stores it, every answer is lost", "q-lost-all",
                     lambda: env.qstash.add(Fault.drop_response(match=publish), 50))

        def destination(name: str, task_id: str, setup: Callable[[], object],
                        teardown: Callable[[], None] = lambda: None, **options: Any) -> None:
            task = email_task(app, name=f"faults.{task_id}", **options)
            setup()
            try:
                saw, _, result = _outcome(lambda: task.apply_async((2, name), task_id=task_id))
                started = time.monotonic()
                if saw == "returned":
                    got, _, _ = _outcome(lambda: result.get(timeout=60, interval=0.2))
                    final = result.state + ("" if got == "returned" else f" ({got})")
                    saw = f".delay() returned; get(): {final}, retries={result.retries}"
            finally:
                teardown()
            took = time.monotonic() - started
            count, _ = env.wait_inbox(task_id, timeout=5)
            rows.append(FaultRow(name, saw, took, str(count)))

        def down_for(seconds: float) -> None:
            env.autosend.down()
            threading.Timer(seconds, env.autosend.up).start()

        destination("AutoSend down for 1.5 s", "d-down", lambda: down_for(1.5))
        destination("AutoSend slower than Upstash-Timeout (2.5 s vs 1 s)", "d-slow",
                    lambda: env.chaos(fail_next=1, status=None, delay_ms=2500), time_limit=1)
        destination("AutoSend 502 twice", "d-5xx", lambda: env.chaos(fail_next=2, status=502))
        destination("AutoSend 503 past the retries (max_retries=1)", "d-5xx-dlq",
                    lambda: env.chaos(fail_next=2, status=503), max_retries=1)
        destination("AutoSend 429 with Retry-After: 3", "d-429-ra",
                    lambda: env.chaos(fail_next=1, status=429, retry_after=3))
        destination("AutoSend 429 without Retry-After", "d-429",
                    lambda: env.chaos(fail_next=1, status=429))
        app.close()
    finally:
        env.stop()
    return rows


# -- 4. bad inputs ------------------------------------------------------------------------------


def run_bad_inputs() -> list[tuple[str, str, str]]:
    """(input, what the caller got, published?) for inputs the shim or a server must refuse."""
    env = InProcess()
    rows: list[tuple[str, str, str]] = []
    try:
        app = env.app()

        @app.task(base=QStashTask, name="bad.send", shared=False)
        def send(**fields: Any) -> dict[str, Any]:
            return {"from": "hello@acme.example", "subject": "Hi", "text": "x",
                    "to": {"email": "jane@example.com"}, **fields}

        def created() -> int:
            return len(env.http.get(f"{env.emulator.url}/v2/events",
                                    headers={"Authorization": f"Bearer {env.emulator.token}"},
                                    params={"state": "CREATED"}).json()["events"])

        def shim(name: str, call: Callable[[], Any]) -> None:
            before = created()
            saw, _, _ = _outcome(call)
            rows.append((name, saw, "yes" if created() > before else "no"))

        shim("recipient `not-an-address`", lambda: send.delay(to={"email": "not-an-address"}))
        shim("no subject", lambda: send.delay(subject=""))
        shim("an email of 20 MB", lambda: send.delay(text="x" * 20_000_000))
        shim("`chain=` option", lambda: send.apply_async(kwargs={}, chain=[send.s()]))
        shim("`serializer='pickle'`", lambda: send.apply_async(kwargs={}, serializer="pickle"))
        shim("task_id with a comma", lambda: send.apply_async(kwargs={}, task_id="a,b"))
        shim("header `Authorization`",
             lambda: send.apply_async(kwargs={}, headers={"Authorization": "x"}))
        shim("`link` a Celery signature", lambda: send.apply_async(kwargs={}, link=send.s()))
        shim("`eta='tomorrow'`", lambda: send.apply_async(kwargs={}, eta="tomorrow"))
        shim("`countdown='soon'`", lambda: send.apply_async(kwargs={}, countdown="soon"))
        shim("unknown option `frobnicate=1`", lambda: send.apply_async(kwargs={}, frobnicate=1))

        auth = {"Authorization": f"Bearer {env.emulator.token}"}
        target = f"{env.emulator.url}/v2/publish/https://example.com/x"

        def http(name: str, method: str, url: str, **kwargs: Any) -> None:
            before = created()
            try:
                response = env.http.request(method, url, **kwargs)
                saw = f"HTTP {response.status_code}: {response.text[:80]!r}"
            except httpx.HTTPError as exc:
                saw = f"{type(exc).__name__}"
            rows.append((name, saw, "yes" if created() > before else "no"))

        nested = b"[" * 100_000 + b"]" * 100_000
        http("emulator: batch of JSON nested 100,000 deep", "POST",
             f"{env.emulator.url}/v2/batch", content=nested,
             headers={**auth, "Content-Type": "application/json"})
        http("emulator: publish of 2 MB (QStash's default limit is 1 MB)", "POST", target,
             content=b"x" * 2_000_000, headers=auth)
        http("emulator: publish with `Host: evil.example`", "POST", target, content=b"{}",
             headers={**auth, "Host": "evil.example"})
        http("emulator: reset from another origin, no token", "POST",
             f"{env.emulator.url}/_emulator/reset", headers={"Origin": "http://evil.example"})
        http("emulator: publish with the token in `?qstash_token=`", "POST",
             f"{target}?qstash_token={env.emulator.token}", content=b"{}",
             headers={"Origin": "http://evil.example"})
        http("emulator: `Upstash-Delay: forever`", "POST", target, content=b"{}",
             headers={**auth, "Upstash-Delay": "forever"})
        http("sandbox: an email of 30 MB", "POST", f"{env.sandbox.url}/v1/mails/send",
             json={"from": {"email": "a@acme.example"}, "to": {"email": "b@example.com"},
                   "subject": "big", "text": "x" * 30_000_000},
             headers={"Authorization": "Bearer k"})
        http("sandbox: body that is not JSON", "POST", f"{env.sandbox.url}/v1/mails/send",
             content=b"{nope", headers={"Authorization": "Bearer k",
                                        "Content-Type": "application/json"})
        app.close()
    finally:
        env.stop()
    return rows


# -- 5. secrets -----------------------------------------------------------------------------------


def run_secret_search(stack: Stack, captured_logs: io.StringIO, report_so_far: str
                      ) -> list[tuple[str, str, str]]:
    """(surface, how many places were read, secrets found) for every surface of the run."""
    assert stack.emulator is not None
    secret = stack.secret
    rows: list[tuple[str, str, str]] = []
    # Leave something in the DLQ and something pending, so their pages and files show.
    app = stack.app(via_proxy=False)
    dead = email_task(app, name="secrets.dead", max_retries=0)
    stack.autosend.reset()
    stack.autosend.add(Fault.respond(500, '{"success":false}', match="/v1/mails"))
    dead_result = dead.apply_async((1, "secrets"), task_id="secrets-dead")
    wait_until(lambda: dead_result.state == "FAILURE", 30, "the dead letter")
    pending = email_task(app, name="secrets.pending")
    pending_result = pending.apply_async((2, "secrets"), task_id="secrets-pending",
                                         countdown=3600)
    some = ["faults-1", "faults-2", "e2e-1", "secrets-dead", "secrets-pending"]

    def found(text: str | bytes) -> list[str]:
        data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
        return [name for name, value in secret.named().items() if value.encode() in data]

    statuses: Counter[int] = Counter()

    def get(url: str, **kwargs: Any) -> str:
        """GET ``url``, counting its status (a page that errors shows nothing worth grepping)."""
        response = stack.http.get(url, **kwargs)
        statuses[response.status_code] += 1
        return response.text

    def add(surface: str, texts: list[str | bytes]) -> None:
        names = sorted({name for text in texts for name in found(text)})
        places = str(len(texts))
        if statuses:
            places += " (HTTP " + ", ".join(f"{code} x{n}" for code, n in sorted(statuses.items()))
            places += ")"
            statuses.clear()
        rows.append((surface, places, ", ".join(names) or "none"))

    for process in (stack.emulator, stack.sandbox):
        output = process.output.read_bytes()
        add(f"{process.name} process output", [output])
        # Not a secret, but worth seeing: did the server crash on anything?
        lines, tracebacks = len(output.splitlines()), output.count(b"Traceback")
        rows[-1] = (rows[-1][0], f"1 ({lines} lines, {tracebacks} tracebacks)", rows[-1][2])
    add("this process's logs (every logger, DEBUG)", [captured_logs.getvalue()])
    add("this report", [report_so_far])

    status = StatusClient(client_for(load_settings({"qstash_url": stack.emulator.url,
                                                    "qstash_token": secret.token})))
    board = ThreadedServer(dashboard_app(status, secrets=[secret.token, secret.api_key],
                                         inbox_url=stack.sandbox.url)).start()
    try:
        pages = ["/tasks", "/tasks?state=FAILURE", "/dlq", "/queues"]
        pages += [f"/tasks/{task_id}" for task_id in some]
        add("dashboard pages", [get(board.url + p) for p in pages])
        api = ["/api/tasks?limit=200", "/api/task/types", "/api/queues/length", "/api/dlq"]
        api += [f"/api/task/info/{task_id}" for task_id in some]
        api += [f"/api/task/result/{task_id}" for task_id in some]
        add("Flower API", [get(board.url + p) for p in api])
    finally:
        board.stop()

    emulator_api: list[str | bytes] = []
    cursor = None
    for _ in range(5):
        params: dict[str, Any] = {"count": 1000, **({"cursor": cursor} if cursor else {})}
        page = get(f"{stack.emulator.url}/v2/events", headers=stack.auth, params=params)
        emulator_api.append(page)
        cursor = json.loads(page).get("cursor")
        if not cursor:
            break
    for task_id in some:
        emulator_api.append(get(f"{stack.emulator.url}/v2/events", headers=stack.auth,
                                params={"label": task_id}))
    emulator_api.append(get(f"{stack.emulator.url}/v2/dlq", headers=stack.auth))
    for entry in stack.dlq():
        emulator_api.append(get(f"{stack.emulator.url}/v2/dlq/{entry['dlqId']}",
                                headers=stack.auth))
    emulator_api.append(get(f"{stack.emulator.url}/v2/messages/{pending_result.message_id}",
                            headers=stack.auth))
    add("emulator logs, messages and DLQ API", emulator_api)

    sandbox_pages: list[str | bytes] = []
    for path in ("/", "/rejected", "/api/v1/messages?limit=200", "/api/v1/stats"):
        sandbox_pages.append(get(stack.sandbox.url + path))
    listed = stack.http.get(f"{stack.sandbox.url}/api/v1/messages", params={"limit": 3}).json()
    for message in listed["messages"]:
        sandbox_pages.append(get(f"{stack.sandbox.url}/inbox/{message['id']}"))
        sandbox_pages.append(get(f"{stack.sandbox.url}/api/v1/messages/{message['id']}"))
    add("sandbox pages and API", sandbox_pages)

    env = {**os.environ, "QSTASH_URL": stack.emulator.url, "QSTASH_TOKEN": secret.token,
           "NO_COLOR": "1"}
    cli = [sys.executable, "-m", "celery_qstash"]
    outputs: list[str | bytes] = []
    for args in (["status", "--json"], ["status", "--wide"], ["inspect", "secrets-dead"],
                 ["dlq", "list"], ["inspect", "no-such-task"]):
        done = subprocess.run([*cli, *args], env=env, capture_output=True, timeout=60,
                              cwd=ROOT)
        outputs += [done.stdout, done.stderr]
    add("CLI output (status, inspect, dlq list)", outputs)

    files = sorted(p for p in stack.workdir.rglob("*") if p.is_file() and ".out" not in p.name)
    for file in files:
        hits = found(file.read_bytes())
        table_hits = _sqlite_tables(file, secret) if hits and file.suffix == ".sqlite3" else ""
        mode = oct(file.stat().st_mode & 0o777)[2:]
        rows.append((f"file {file.relative_to(stack.workdir)} (mode {mode})", "1",
                     ", ".join(hits) + (f" ({table_hits})" if table_hits else "")
                     if hits else "none"))
    pending_result.revoke()
    app.close()
    return rows


def _sqlite_tables(path: Path, secret: Secrets) -> str:
    """Which tables of a SQLite file hold a secret (to tell storage from leakage)."""
    out = []
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            rows = db.execute(f'SELECT * FROM "{table}"').fetchall()
            text = repr(rows)
            names = [n for n, v in secret.named().items() if v in text]
            if names:
                out.append(f"table {table}: {', '.join(names)}")
    return "; ".join(out)


# -- the report -------------------------------------------------------------------------


def _table(rows: dict[str, Any]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in rows.items()]
    return "\n".join(lines)


def _rows(header: list[str], rows: list[tuple[Any, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines)


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, timeout=10).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


@contextlib.contextmanager
def captured_logging() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=5000)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--output", default=str(ROOT / "RELIABILITY.md"))
    args = parser.parse_args(argv)
    started = time.monotonic()
    secret = Secrets(token="qstash_rel_" + secrets.token_hex(16),
                     api_key="as_rel_" + secrets.token_hex(16))
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp, \
            captured_logging() as logs:
        print(f"[{0:6.1f}s] faults table ...", file=sys.stderr, flush=True)
        fault_rows = run_fault_table()
        print(f"[{time.monotonic() - started:6.1f}s] bad inputs ...", file=sys.stderr, flush=True)
        bad_rows = run_bad_inputs()
        stack = Stack(Path(tmp), secret).start()
        try:
            print(f"[{time.monotonic() - started:6.1f}s] {args.emails} emails under faults ...",
                  file=sys.stderr, flush=True)
            faults = run_faults(stack, args.emails)
            print(f"[{time.monotonic() - started:6.1f}s] {args.tasks} tasks end to end ...",
                  file=sys.stderr, flush=True)
            e2e = run_end_to_end(stack, args.tasks)
            print(f"[{time.monotonic() - started:6.1f}s] secrets ...", file=sys.stderr,
                  flush=True)
            head = report(faults, e2e, fault_rows, bad_rows, [], 0.0)
            secret_rows = run_secret_search(stack, logs, head)
        finally:
            stack.stop()
    text = report(faults, e2e, fault_rows, bad_rows, secret_rows, time.monotonic() - started)
    Path(args.output).write_text(text)
    print(text)
    # Any secret on a surface is a leak; in a file, the token is (QStash never needs it
    # at rest), the AutoSend key and signing keys are what the emulator must keep.
    leaked = [row for row in secret_rows if row[2] != "none"
              and (not row[0].startswith("file ") or "QStash token" in row[2])]
    bad = faults["lost"] or faults["duplicated"] or e2e["lost"] or e2e["duplicated"] or leaked
    return 1 if bad else 0


def report(faults: dict[str, Any], e2e: dict[str, Any], fault_rows: list[FaultRow],
           bad_rows: list[tuple[str, str, str]], secret_rows: list[tuple[str, str, str]],
           took: float) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# Reliability",
        "",
        "Generated by `scripts/reliability` (`benchmarks/reliability.py`); do not edit by hand.",
        f"Run {when} at commit `{_commit()}` on {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, in {took:.0f} s. Everything ran on 127.0.0.1: the QStash "
        "emulator and the AutoSend sandbox as separate processes with SQLite state, a fault "
        "proxy (`celery_qstash/local/faultproxy.py`) in front of each, the shim publishing from "
        f"{PUBLISHERS} threads. The CI suites in `tests/reliability/` check the same faults "
        "on a smaller scale at every run.",
        "",
        "Settings of the long runs: the sandbox's rate limits and the shim's default flow "
        "control are off (at AutoSend's 2/s, 15,000 emails would take two hours and test "
        f"nothing more); tasks set `default_retry_delay={RETRY_DELAY}` and "
        f"`max_retries={MAX_RETRIES}`, so QStash retries a failed delivery after "
        f"{RETRY_DELAY} s instead of its default 12 s, 2.5 min... backoff. Counts are not "
        "scaled down.",
        "",
        f"## {faults['emails']:,} emails, 20 % of AutoSend's answers failing, "
        "the emulator SIGKILLed once",
        "",
        "Half of the injected failures are a 503 before AutoSend acts; the other half "
        "are answers lost after AutoSend captured the email, so QStash delivers again and "
        "AutoSend's `Idempotency-Key` must turn the redelivery into a replay. The emulator "
        "is killed with SIGKILL when 40 % are published and restarted a second later; "
        "each publish that failed is sent again with the same `task_id`.",
        "",
        _table(faults),
        "",
        f"## {e2e['tasks']:,} tasks end to end",
        "",
        "Published straight to the emulator (no proxy, no faults), counted at every stage.",
        "",
        _table(e2e),
        "",
        "## Each fault: what the caller saw",
        "",
        "On the real clock (in-process emulator and sandbox, `qstash_publish_timeout=1`). "
        "QStash faults are injected between the shim and the emulator; for each, the "
        "inbox column is the final count for that task after the caller's natural "
        "recovery (calling again with the same `task_id`). AutoSend faults are injected "
        "between the emulator and the sandbox; `took` is from the publish to the final "
        "state.",
        "",
        _rows(["fault", "the caller saw", "took (s)", "emails in the inbox"],
              [(r.fault, r.caller_saw, f"{r.took:.2f}", r.inbox) for r in fault_rows]),
        "",
        "## Bad inputs",
        "",
        _rows(["input", "the caller got", "published?"], bad_rows),
        "",
    ]
    if secret_rows:
        named = ", ".join(Secrets("", "").named().keys()) + ", current/next signing keys"
        parts += [
            "## Secrets",
            "",
            f"Every surface of the run searched for the secrets it used ({named}; the "
            "token and key were random for this run). `files` are every file the emulator "
            "and the sandbox wrote (SQLite databases and their WAL), read as raw bytes; a "
            "hit in a database names the tables holding it. The signing keys are QStash's "
            "to keep: the emulator stores them to sign deliveries.",
            "",
            _rows(["surface", "places read", "secrets found"], secret_rows),
            "",
        ]
        stored = [f"{row[0][5:]}: {row[2]}" for row in secret_rows if row[0].startswith("file ")
                  and ("AutoSend key" in row[2] or "QStash token" in row[2])]
        if stored:
            parts += [
                "Where the AutoSend key rests (the emulator must keep it to deliver and retry "
                "a message; it reaches AutoSend as `Upstash-Forward-Authorization`): "
                + "; ".join(stored) + ". No page, API, log or output shows it.",
                "",
            ]
    return "\n".join(parts)


if __name__ == "__main__":
    sys.exit(main())
