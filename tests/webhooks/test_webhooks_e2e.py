"""Issue 21's "done when", end to end offline: a task's email goes through the QStash
emulator to the AutoSend sandbox, which sends its signed webhooks to the app's endpoint
(served over HTTP); the app's ``email_event`` handlers see what happened to the email.

One fake clock moves everything (the emulator's deliveries, the sandbox's webhooks and
their retries, the endpoint's timestamp check). It starts at the real time because the
QStash SDK checks the callback receiver's tokens against the real clock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from celery import Celery
from starlette.applications import Starlette

from celery_qstash import Email, QStashTask
from celery_qstash import webhooks as hooks
from celery_qstash.clock import FakeClock
from celery_qstash.local.serving import ThreadedServer, free_port
from celery_qstash.receiver import fastapi_route
from celery_qstash.signals import email_event
from celery_qstash.testing import DevServers
from celery_qstash.webhooks import MemoryEventStore, signature

CALLBACK, HOOKS = "/qstash/callback", "/autosend/webhooks"


@dataclass
class Loop:
    servers: DevServers
    app: Celery
    send: Any
    store: MemoryEventStore
    url: str
    seen: list[dict[str, Any]] = field(default_factory=list)

    def events(self, task_id: str) -> list[tuple[str, str | None]]:
        return [(s["event"], s["bounce_type"]) for s in self.seen if s["task_id"] == task_id]


def build_loop(*, callbacks: bool) -> Iterator[Loop]:
    clock = FakeClock(time.time())
    app = Celery(f"hooks-{callbacks}", set_as_current=False)

    @app.task(base=QStashTask, name="hooks.send_welcome", shared=False)
    def send(to: str) -> Email:
        return Email(to=to, from_="hi@acme.example", subject="Welcome", text="Hi")

    store = MemoryEventStore()
    with DevServers(clock=clock) as servers:
        servers.configure(app)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        web = Starlette()
        keys = (servers.emulator.current_signing_key, servers.emulator.next_signing_key)
        fastapi_route(web, CALLBACK, app, url=base + CALLBACK,
                      current_signing_key=keys[0], next_signing_key=keys[1])
        hooks.fastapi_route(web, HOOKS, app, clock=clock, store=store)
        loop = Loop(servers, app, send, store, base + HOOKS)

        def record(sender: Any = None, **kwargs: Any) -> None:
            loop.seen.append({"sender": sender, **kwargs})

        email_event.connect(record, weak=False)
        try:
            with ThreadedServer(web, "127.0.0.1", port):
                if callbacks:
                    app.conf.qstash_callback_url = base + CALLBACK
                servers.send_webhooks_to(loop.url)
                yield loop
        finally:
            email_event.disconnect(record)


@pytest.fixture
def loop() -> Iterator[Loop]:
    yield from build_loop(callbacks=True)


def _send(loop: Loop, to: str, task_id: str) -> None:
    loop.send.apply_async((to,), task_id=task_id)
    loop.servers.advance(0)   # the email, then QStash's callback
    loop.servers.advance(1)   # email.sent
    loop.servers.advance(1)   # the email's fate, a second later


def test_a_delivered_email_fires_email_delivered_with_the_tasks_id(loop: Loop) -> None:
    _send(loop, "ok@example.com", "welcome-ok")
    assert loop.events("welcome-ok") == [("email.sent", None), ("email.delivered", None)]
    delivered = loop.seen[-1]
    assert delivered["recipient"] == "ok@example.com"
    assert delivered["sender"] is loop.app.tasks["hooks.send_welcome"]   # the task, as Celery
    assert delivered["email_id"] == loop.servers.emails()[0]["emailId"]
    assert delivered["timestamp"].tzinfo is not None and delivered["test"] is False
    assert delivered["raw"]["type"] == "email.delivered"


def test_a_bounce_simulator_address_fires_a_permanent_bounce(loop: Loop) -> None:
    _send(loop, "bounce@example.com", "welcome-bounce")
    assert loop.events("welcome-bounce") == [("email.sent", None), ("email.bounced", "Permanent")]
    assert "550" in (loop.seen[-1]["reason"] or "")
    # The store keeps it for status: the task's result names the email.
    result = loop.send.AsyncResult("welcome-bounce").get(timeout=5)
    fate = hooks.last_event(loop.store, result)
    assert fate is not None and fate["fate"] == "bounced" and fate["bounce_type"] == "Permanent"


def test_complaint_and_ooto_simulator_addresses(loop: Loop) -> None:
    _send(loop, "complaint@example.com", "welcome-complaint")
    _send(loop, "ooto@example.com", "welcome-ooto")
    loop.servers.advance(1)
    assert [e for e, _ in loop.events("welcome-complaint")] == [
        "email.sent", "email.delivered", "email.spam_reported"]
    assert [e for e, _ in loop.events("welcome-ooto")] == ["email.sent", "email.delivered"]


def test_a_bounce_rule_turns_any_recipients_email_into_a_bounce(loop: Loop) -> None:
    loop.servers.chaos(bounce="jane@example.com", bounce_type="Transient")
    _send(loop, "jane@example.com", "welcome-jane")
    _send(loop, "jane@example.com", "welcome-jane-2")   # the rule was used up
    assert loop.events("welcome-jane")[-1] == ("email.bounced", "Transient")
    assert loop.events("welcome-jane-2")[-1] == ("email.delivered", None)


def _resend(loop: Loop, delivery: dict[str, Any], *, delivery_id: str | None = None,
            stamp_ms: int | None = None, secret: str | None = None) -> httpx.Response:
    body = delivery["body"].encode()
    now_ms = int(loop.servers.clock.now() * 1000) if loop.servers.clock else 0
    return httpx.post(loop.url, content=body, headers={
        "Content-Type": "application/json",
        "X-Webhook-Signature": signature(body, secret or loop.servers.webhook_secret),
        "X-Webhook-Event": delivery["event"],
        "X-Webhook-Delivery-Id": delivery_id or delivery["deliveryId"],
        "X-Webhook-Timestamp": str(stamp_ms if stamp_ms is not None else now_ms),
    })


def _deliveries(loop: Loop) -> list[dict[str, Any]]:
    email_id = loop.servers.emails()[0]["emailId"]
    sent = httpx.get(f"{loop.servers.sandbox.url}/api/v1/messages/{email_id}/events")
    events: list[dict[str, Any]] = sent.json()["events"]
    return events


def test_a_redelivered_webhook_fires_once(loop: Loop) -> None:
    _send(loop, "ok@example.com", "welcome-once")
    fired = len(loop.seen)
    delivered = _deliveries(loop)[-1]
    assert delivered["state"] == "delivered" and delivered["attempts"] == 1
    again = _resend(loop, delivered)                     # AutoSend's retry: same delivery id
    replayed = _resend(loop, delivered, delivery_id="replayed-under-a-new-id")
    assert again.status_code == replayed.status_code == 200
    assert again.json()["outcome"] == replayed.json()["outcome"] == "duplicate"
    assert len(loop.seen) == fired


def test_a_forged_signature_or_a_stale_timestamp_fires_nothing(loop: Loop) -> None:
    _send(loop, "ok@example.com", "welcome-forged")
    fired = len(loop.seen)
    fresh = {**_deliveries(loop)[-1], "deliveryId": "a-new-one"}
    forged = _resend(loop, fresh, secret="not-the-secret")
    stale_ms = int((loop.servers.clock.now() - 301) * 1000)  # type: ignore[union-attr]
    stale = _resend(loop, fresh, stamp_ms=stale_ms)
    stale_seconds = _resend(loop, fresh, stamp_ms=stale_ms // 1000)   # the older docs' form
    unsigned = httpx.post(loop.url, content=fresh["body"].encode(),
                          headers={"Content-Type": "application/json"})
    assert forged.status_code == unsigned.status_code == 401
    assert stale.status_code == stale_seconds.status_code == 400
    assert "X-Webhook-Timestamp" in stale.json()["error"]
    assert len(loop.seen) == fired


def test_webhooks_are_retried_on_autosends_schedule() -> None:
    clock = FakeClock(time.time())
    app = Celery("hooks-retry", set_as_current=False)

    @app.task(base=QStashTask, name="hooks.retry", shared=False)
    def send(to: str) -> Email:
        return Email(to=to, from_="hi@acme.example", subject="Hi", text="Hi")

    with DevServers(clock=clock) as servers:
        servers.configure(app)
        servers.send_webhooks_to(f"http://127.0.0.1:{free_port()}/nobody-listens")
        send.delay("ok@example.com")
        servers.advance(0)                    # the email: email.sent is due a second later
        servers.advance(1)                    # its first attempt
        [email] = servers.emails()

        def sent() -> dict[str, Any]:
            answer = httpx.get(f"{servers.sandbox.url}/api/v1/messages/{email['emailId']}/events")
            first: dict[str, Any] = answer.json()["events"][0]
            assert first["event"] == "email.sent"
            return first

        start = clock.now()
        assert (sent()["attempts"], sent()["dueAt"] - start) == (1, 5)   # then 5 s later
        servers.advance(4.9)
        assert sent()["attempts"] == 1
        servers.advance(0.1)
        assert (sent()["attempts"], sent()["dueAt"] - start) == (2, 15)  # then 10 s later
        servers.advance(10)
        assert (sent()["attempts"], sent()["dueAt"] - start) == (3, 35)  # then 20 s later
        servers.advance(20)
        last = sent()
        assert (last["attempts"], last["state"]) == (4, "failed")        # 4 attempts in all
        assert last["lastError"] == "ConnectError"
        servers.advance(3600)
        assert sent()["attempts"] == 4
        # Every attempt carried the same delivery id and body: the receiver dedupes on it.
        assert json.loads(last["body"])["data"]["to"]["email"] == "ok@example.com"


def test_without_callbacks_the_task_is_found_in_qstashs_logs() -> None:
    for loop in build_loop(callbacks=False):
        _send(loop, "bounce@example.com", "welcome-from-logs")
        assert loop.events("welcome-from-logs") == [
            ("email.sent", None), ("email.bounced", "Permanent")]
        # The first event's lookup became a link: the second one did not search again.
        email_id = loop.seen[-1]["email_id"]
        assert loop.store.task_for(f"email:{email_id}") == ("welcome-from-logs",
                                                            "hooks.send_welcome")
