"""The fault stack: shim -> fault proxy -> emulator -> fault proxy -> sandbox, on loopback.

- ``stack.qstash``: a :class:`FaultProxy` in front of the emulator; the app publishes
  through it, so QStash can be down, slow, trickling, erroring or lose its answer.
- ``stack.autosend``: a proxy in front of the sandbox, where the emulator delivers
  AutoSend-bound messages, so the destination can be down; the sandbox's own chaos
  rules (``/api/v1/chaos``) make it slow, 5xx or 429.
- The emulator runs on a ``FakeClock`` with background delivery: what is due now is
  delivered at once (real HTTP), and retries wait until a test moves the clock through
  the emulator's control endpoint (``stack.advance``), so no test sleeps on a backoff.

Rate limits are off (the sandbox's and the shim's default flow control), so only the
faults a test injects shape what happens. One stack per session, reset before each test.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from celery import Celery
from waiting import wait_until

from celery_qstash import Email, QStashTask
from celery_qstash.clock import FakeClock
from celery_qstash.devserver import AUTOSEND_URL, DEV_AUTOSEND_API_KEY, DEV_TOKEN
from celery_qstash.local.emulator import EmulatorServer
from celery_qstash.local.faultproxy import FaultProxy
from celery_qstash.local.sandbox import SandboxServer

START = 1_800_000_000.0
#: The shim's publish deadline in these tests (seconds): the production default, so
#: retries within a call have room on a loaded machine.
PUBLISH_TIMEOUT = 2.0


class Stack:
    def __init__(self, emulator: EmulatorServer, sandbox: SandboxServer,
                 qstash: FaultProxy, autosend: FaultProxy) -> None:
        self.emulator = emulator
        self.sandbox = sandbox
        self.qstash = qstash
        self.autosend = autosend
        self.http = httpx.Client(trust_env=False, timeout=10)
        self.auth = {"Authorization": f"Bearer {DEV_TOKEN}"}
        # The sandbox's destructive endpoints (reset, chaos) take the key a send takes.
        self.sandbox_auth = {"Authorization": f"Bearer {DEV_AUTOSEND_API_KEY}"}

    def reset(self) -> None:
        for proxy in (self.qstash, self.autosend):
            proxy.reset()
        self.http.post(f"{self.emulator.url}/_emulator/reset", headers=self.auth).raise_for_status()
        self.emulator.emulator.clock.set(START)
        self.http.post(f"{self.sandbox.url}/_sandbox/reset",
                       headers=self.sandbox_auth).raise_for_status()

    # -- time and faults ------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move the emulator's clock (its control endpoint); due retries go out at once."""
        self.http.post(f"{self.emulator.url}/_emulator/clock/advance", headers=self.auth,
                       params={"seconds": seconds}).raise_for_status()

    def chaos(self, **rule: Any) -> None:
        self.http.post(f"{self.sandbox.url}/api/v1/chaos", json=rule,
                       headers=self.sandbox_auth).raise_for_status()

    # -- what happened ----------------------------------------------------------------

    def inbox(self) -> Counter[str]:
        """How many emails the sandbox captured per idempotency key (= task id)."""
        response = self.http.get(f"{self.sandbox.url}/api/v1/messages", params={"limit": 1000})
        response.raise_for_status()
        return Counter(m["idempotencyKey"] for m in response.json()["messages"])

    def wait_for_inbox(self, *task_ids: str) -> Counter[str]:
        """The inbox once it holds an email for each of ``task_ids``."""
        def ready() -> Counter[str] | None:
            counts = self.inbox()
            return counts if set(task_ids) <= set(counts) else None

        result: Counter[str] = wait_until(ready, what=f"emails for {task_ids}")
        return result

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.http.get(f"{self.sandbox.url}/api/v1/stats").json()
        return stats

    def events(self, **params: Any) -> list[dict[str, Any]]:
        response = self.http.get(f"{self.emulator.url}/v2/events", headers=self.auth,
                                 params=params)
        response.raise_for_status()
        events: list[dict[str, Any]] = response.json()["events"]
        return events

    def states(self, task_id: str) -> list[str]:
        """The task's message states, oldest first (its label is the task id)."""
        return [e["state"] for e in reversed(self.events(label=task_id))]

    def wait_for_state(self, task_id: str, state: str, count: int = 1) -> list[dict[str, Any]]:
        """The task's events (newest first) once ``state`` was logged ``count`` times."""
        def ready() -> list[dict[str, Any]] | None:
            events = self.events(label=task_id)
            return events if sum(e["state"] == state for e in events) >= count else None

        result: list[dict[str, Any]] = wait_until(ready, what=f"{count} x {state} for {task_id}")
        return result

    def dlq(self) -> list[dict[str, Any]]:
        response = self.http.get(f"{self.emulator.url}/v2/dlq", headers=self.auth)
        response.raise_for_status()
        messages: list[dict[str, Any]] = response.json()["messages"]
        return messages


@pytest.fixture(scope="session")
def _stack() -> Iterator[Stack]:
    # Retry-After on a 429 is asked for explicitly: the tests set it per chaos rule.
    with SandboxServer(rate_per_second=None, rate_per_minute=None,
                       retry_after_header=True) as sandbox, \
            FaultProxy(sandbox.url) as autosend:
        emulator = EmulatorServer(clock=FakeClock(START), routes={AUTOSEND_URL: autosend.url})
        with emulator, FaultProxy(emulator.url) as qstash:
            stack = Stack(emulator, sandbox, qstash, autosend)
            yield stack
            stack.http.close()


@pytest.fixture
def stack(_stack: Stack) -> Stack:
    _stack.reset()
    return _stack


@pytest.fixture
def app(stack: Stack) -> Iterator[Celery]:
    app = Celery("reliability", set_as_current=False)
    app.conf.qstash_url = stack.qstash.url
    app.conf.qstash_token = DEV_TOKEN
    app.conf.autosend_api_key = DEV_AUTOSEND_API_KEY
    app.conf.autosend_rate_limit = "off"
    app.conf.qstash_publish_timeout = PUBLISH_TIMEOUT
    yield app
    app.close()


def welcome_task(app: Celery, **options: Any) -> Any:
    """An email task as an app would write it (``options`` are task attributes)."""

    @app.task(base=QStashTask, name="reliability.send_welcome", shared=False, **options)
    def send_welcome(user_id: int) -> Email:
        return Email(to=f"user{user_id}@example.com", from_="Acme <hello@acme.example>",
                     subject=f"Welcome #{user_id}", text="Hello")

    return send_welcome
