"""Status past AutoSend's answer: with an event store, ``AsyncResult(id).info``,
``celery-qstash inspect``, the dashboard's task page and Flower's task info show the
email's latest fate. End to end offline with the Redis store; the stores one by one."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from celery import Celery
from click.testing import CliRunner
from sandbox.helpers import TestClient
from starlette.applications import Starlette

from celery_qstash import Email, QStashTask
from celery_qstash import webhooks as hooks
from celery_qstash.cli import main
from celery_qstash.clock import FakeClock
from celery_qstash.config import load_settings
from celery_qstash.errors import ConfigurationError
from celery_qstash.local.dashboard import create_app
from celery_qstash.local.serving import ThreadedServer, free_port
from celery_qstash.publish.transports.qstash import client_for
from celery_qstash.status import StatusClient
from celery_qstash.testing import DevServers
from celery_qstash.webhooks import (
    EmailEvent,
    MemoryEventStore,
    RedisEventStore,
    configured_event_store,
    last_event,
)
from celery_qstash.webhooks.store import MAX_EVENTS, DjangoCacheEventStore, event_store_from_url

T0 = datetime(2027, 1, 15, 9, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def sent_two(redis_url: str) -> Iterator[tuple[Celery, DevServers]]:
    """ok@example.com then bounce@example.com, through the emulator, the sandbox and the
    app's endpoint, with the Redis store; no callback receiver (the logs find the task)."""
    clock = FakeClock(time.time())
    app = Celery("status-hooks", set_as_current=False)
    app.conf.autosend_event_store_url = redis_url
    app.conf.result_backend = "qstash://"

    @app.task(base=QStashTask, name="status.send_welcome", shared=False)
    def send(to: str) -> Email:
        return Email(to=to, from_="hi@acme.example", subject="Welcome", text="Hi")

    with DevServers(clock=clock) as servers:
        servers.configure(app)
        port = free_port()
        web = Starlette()
        hooks.fastapi_route(web, "/hooks", app, clock=clock)
        with ThreadedServer(web, "127.0.0.1", port):
            servers.send_webhooks_to(f"http://127.0.0.1:{port}/hooks")
            send.apply_async(("ok@example.com",), task_id="status-ok")
            send.apply_async(("bounce@example.com",), task_id="status-bounce")
            for _ in range(5):  # AutoSend's rate limit (flow control) spaces the two
                servers.advance(1)
            yield app, servers


def test_async_result_info_shows_the_latest_fate(sent_two: tuple[Celery, DevServers]) -> None:
    app, _ = sent_two
    bounced = app.AsyncResult("status-bounce").info
    delivered = app.AsyncResult("status-ok").info
    assert bounced["last_event"]["fate"] == "bounced"
    assert bounced["last_event"]["bounce_type"] == "Permanent"
    assert bounced["emailId"] == bounced["last_event"]["email_id"]   # AutoSend's data, kept
    assert delivered["last_event"]["event"] == "email.delivered"


def test_inspect_shows_bounced(sent_two: tuple[Celery, DevServers], redis_url: str) -> None:
    _app, servers = sent_two
    env = {"QSTASH_URL": servers.emulator.url, "QSTASH_TOKEN": servers.emulator.token,
           "AUTOSEND_EVENT_STORE_URL": redis_url, "NO_COLOR": "1"}
    text = CliRunner().invoke(main, ["inspect", "status-bounce", "--wide"], env=env)
    assert text.exit_code == 0, text.output
    email_line = next(line for line in text.output.splitlines() if line.startswith("Email:"))
    assert "bounced at" in email_line and "Permanent" in email_line
    assert "email.sent" in text.output and "email.bounced" in text.output
    as_json = CliRunner().invoke(main, ["inspect", "status-bounce", "--json"], env=env)
    assert json.loads(as_json.output)["email"]["fate"] == "bounced"
    without_store = CliRunner().invoke(main, ["inspect", "status-bounce", "--json"],
                                       env={**env, "AUTOSEND_EVENT_STORE_URL": ""})
    assert json.loads(without_store.output)["email"] is None


def test_the_dashboard_and_flowers_task_info_show_bounced(
        sent_two: tuple[Celery, DevServers]) -> None:
    app, _servers = sent_two
    board = create_app(StatusClient(client_for(load_settings(app.conf))),
                       event_store=configured_event_store(app.conf))
    with TestClient(board) as client:
        page = client.get("/tasks/status-bounce")
        info = client.get("/api/task/info/status-bounce").json()
        plain = client.get("/tasks/status-ok")
    assert page.status_code == 200
    assert '<p id="email-fate"><strong>bounced</strong>' in page.text
    assert "Permanent" in page.text and "email.bounced" in page.text
    assert info["email"]["fate"] == "bounced" and info["state"] == "SUCCESS"
    assert "<strong>delivered</strong>" in plain.text


def _event(email_id: str, kind: str, minutes: int, **extra: Any) -> EmailEvent:
    return EmailEvent(event=kind, timestamp=T0 + timedelta(minutes=minutes), email_id=email_id,
                      recipient="jane@example.com", **extra)


def _stores(redis_url: str) -> Iterator[Any]:
    import redis
    from django.conf import settings

    if not settings.configured:
        settings.configure(CACHES={"default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache"}})
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield MemoryEventStore()
    yield RedisEventStore(client)
    yield DjangoCacheEventStore("default", prefix=f"t{time.monotonic_ns()}:")


@pytest.mark.parametrize("kind", ["memory", "redis", "django"])
def test_each_store_keeps_events_links_and_batches(redis_url: str, kind: str) -> None:
    store = dict(zip(["memory", "redis", "django"], _stores(redis_url), strict=True))[kind]
    store.add(_event("e1", "email.sent", 0))
    store.add(_event("e1", "email.opened", 9))
    store.add(_event("e1", "email.delivered", 1))   # arrived late: not the latest fate
    store.add(_event("b1", "email.bounced", 2, batch_id="batch-1", bounce_type="Permanent"))
    store.add(_event("b2", "email.delivered", 3, batch_id="batch-1"))
    store.link("email:e1", "task-1", "app.send")
    assert [e.event for e in store.events("e1")] == ["email.sent", "email.opened",
                                                     "email.delivered"]
    assert store.task_for("email:e1") == ("task-1", "app.send")
    assert store.task_for("email:nope") is None
    fate = last_event(store, {"emailId": "e1"})
    assert fate is not None and fate["fate"] == "opened" and len(fate["events"]) == 3
    bulk = last_event(store, {"batchId": "batch-1"})
    assert bulk is not None
    assert bulk["emails"] == {"email.bounced": 1, "email.delivered": 1}
    assert last_event(store, {"emailId": "unknown"}) is None


def test_an_email_keeps_its_last_events_only(redis_url: str) -> None:
    for store in _stores(redis_url):
        for n in range(MAX_EVENTS + 5):
            store.add(_event("busy", "email.opened", n))
        kept = store.events("busy")
        assert len(kept) == MAX_EVENTS and kept[-1].timestamp == T0 + timedelta(
            minutes=MAX_EVENTS + 4), type(store).__name__


def test_the_store_setting_is_checked_without_showing_a_password() -> None:
    with pytest.raises(ConfigurationError, match="autosend_event_store_url") as info:
        event_store_from_url("memcached://user:hunter2@cache:11211")
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigurationError, match="autosend_event_store_url"):
        event_store_from_url("django://")
    assert configured_event_store(Celery("no-store", set_as_current=False).conf) is None
