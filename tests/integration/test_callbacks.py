"""The whole loop: ``.delay()`` -> emulator -> sandbox -> QStash's signed callback ->
the receiver mounted in an ASGI app -> ``on_success`` / ``task_success`` / ``email_delivered``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from celery import Celery
from celery.signals import task_failure, task_retry, task_success
from starlette.applications import Starlette

from celery_qstash import DeliveryFailed, Email, QStashTask
from celery_qstash.local.serving import ThreadedServer
from celery_qstash.receiver import fastapi_route
from celery_qstash.signals import email_delivered, email_failed
from celery_qstash.testing import DevServers


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []
        self.changed = threading.Condition()

    def add(self, name: str, **kwargs: Any) -> None:
        with self.changed:
            self.items.append((name, kwargs))
            self.changed.notify_all()

    def names(self) -> list[str]:
        return [name for name, _ in self.items]

    def wait_for(self, name: str, timeout: float = 15.0) -> dict[str, Any]:
        """Block until ``name`` happened (real servers deliver on real time)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for item, kwargs in self.items:
                    if item == name:
                        return kwargs
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{name} did not happen; got {self.names()}")
                self.changed.wait(left)


@pytest.fixture
def events() -> Iterator[Events]:
    ev = Events()

    def hook(name: str) -> Any:
        def receiver(sender: Any = None, **kwargs: Any) -> None:
            ev.add(name, sender=sender, **kwargs)
        return receiver

    hooks = [(sig, hook(name)) for sig, name in (
        (task_success, "task_success"), (task_failure, "task_failure"),
        (task_retry, "task_retry"), (email_delivered, "email_delivered"),
        (email_failed, "email_failed"),
    )]
    for sig, fn in hooks:
        sig.connect(fn, weak=False)
    yield ev
    for sig, fn in hooks:
        sig.disconnect(fn)


@pytest.fixture
def web_app(live_app: Celery, dev_servers: DevServers) -> Iterator[str]:
    """The user's web app with the receiver mounted; qstash_callback_url points at it."""
    web = Starlette()
    fastapi_route(web, "/qstash/callback", live_app)
    with ThreadedServer(web) as server:
        live_app.conf.qstash_callback_url = f"{server.url}/qstash/callback"
        live_app.conf.qstash_current_signing_key = dev_servers.emulator.current_signing_key
        live_app.conf.qstash_next_signing_key = dev_servers.emulator.next_signing_key
        yield server.url


def _task(app: Celery, events: Events, **options: Any) -> Any:
    class Tracked(QStashTask):  # type: ignore[misc]
        def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
            events.add("on_success", retval=retval, task_id=task_id)

        def on_failure(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
            events.add("on_failure", exc=exc, task_id=task_id)

    @app.task(base=Tracked, name="live.cb_welcome", shared=False, **options)
    def send_welcome(user_id: int) -> Email:
        return Email(to=f"user{user_id}@example.com", from_="hi@acme.example",
                     subject="Welcome", text="Hi")

    return send_welcome


def test_a_delivery_fires_on_success_task_success_and_email_delivered_once(
    live_app: Celery, dev_servers: DevServers, web_app: str, events: Events
) -> None:
    send_welcome = _task(live_app, events)
    result = send_welcome.apply_async((1,), task_id="welcome-1")

    delivered = events.wait_for("email_delivered")
    [email] = dev_servers.wait_for_emails(1)
    assert delivered["email_id"] == email["emailId"]
    assert delivered["task_id"] == "welcome-1"
    # Let any redelivery or stray callback land before counting.
    _settle(dev_servers)
    assert events.names() == ["on_success", "task_success", "email_delivered"]
    assert events.items[0][1]["task_id"] == result.id == "welcome-1"
    assert events.items[0][1]["retval"]["emailId"] == email["emailId"]
    # The callback is its own QStash message: the task's state is the email's, and get()
    # gives AutoSend's answer, not the receiver's.
    assert result.get(timeout=10)["emailId"] == email["emailId"]
    assert result.state == "SUCCESS"


def test_a_failure_fires_on_failure_task_failure_and_email_failed_once_after_retries(
    live_app: Celery, dev_servers: DevServers, web_app: str, events: Events
) -> None:
    send_welcome = _task(live_app, events, max_retries=1, default_retry_delay=0)
    dev_servers.chaos(fail_next=2, status=503)

    send_welcome.apply_async((2,), task_id="welcome-2")

    failed = events.wait_for("email_failed")
    _settle(dev_servers)
    # Each callback is its own QStash message: the retry's may land before or after.
    names = events.names()
    assert sorted(names) == sorted(["task_retry", "on_failure", "task_failure", "email_failed"])
    failure = names.index("on_failure")
    assert names[failure:failure + 3] == ["on_failure", "task_failure", "email_failed"]
    assert isinstance(failed["exception"], DeliveryFailed)
    assert failed["status"] == 503 and failed["dlq_id"]
    assert dev_servers.emails() == []


def test_a_forged_callback_gets_401_and_fires_nothing(
    live_app: Celery, web_app: str, events: Events
) -> None:
    _task(live_app, events)
    body = (b'{"status":200,"body":"e30=","retried":0,"maxRetries":3,"sourceMessageId":"m",'
            b'"sourceHeader":{"Idempotency-Key":["x"],"X-Celery-Task-Name":["live.cb_welcome"]}}')
    response = httpx.post(f"{web_app}/qstash/callback", content=body,
                          headers={"Upstash-Signature": "eyJhbGciOiJIUzI1NiJ9.e30.x",
                                   "Upstash-Message-Id": "msg_forged"})
    assert response.status_code == 401
    assert events.items == []


def _settle(servers: DevServers) -> None:
    """Wait until the emulator has nothing left to deliver (callbacks included)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        health = httpx.get(f"{servers.emulator.url}/_emulator/health").json()
        if health["pending"] == 0:
            return
        time.sleep(0.05)
    raise AssertionError("the emulator still has messages to deliver")
