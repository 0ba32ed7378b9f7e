"""Batch and asyncio call sites, whole path: emulator ``/v2/batch`` -> sandbox inbox, each email once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from celery import Celery, group

from celery_qstash import BulkEmail, Email, PublishError, QStashTask
from celery_qstash.config import load_settings
from celery_qstash.publish.request import PublishRequest
from celery_qstash.publish.transports import PublishResult
from celery_qstash.tasks.batch import get_batch_transport
from celery_qstash.testing import DevServers


@pytest.fixture(scope="module")
def fast_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServers]:
    # AutoSend's 2/s would make hundreds of emails take minutes; the limits have their own tests.
    with DevServers(str(tmp_path_factory.mktemp("batch")), rate_per_second=None, rate_per_minute=None) as servers:
        yield servers


@pytest.fixture
def batch_app(fast_servers: DevServers) -> Iterator[Celery]:
    fast_servers.reset()
    app = Celery("batch-live", set_as_current=True)
    fast_servers.configure(app)
    app.conf.autosend_rate_limit = "off"
    # A loaded CI machine can take longer than 2 s to commit 100 messages on the emulator.
    app.conf.qstash_publish_timeout = 20
    yield app
    app.close()


def _task(app: Celery) -> Any:
    @app.task(base=QStashTask, name="live.batch_welcome", shared=False)
    def send_welcome(user_id: int) -> Email:
        return Email(to=f"user{user_id}@example.com", from_="hello@acme.example",
                     subject=f"Welcome #{user_id}", text="Hi")

    return send_welcome


def inbox_once(servers: DevServers, task_ids: list[str], *, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Every task's email in the sandbox inbox, exactly once (keyed by Idempotency-Key)."""
    emails = servers.wait_for_emails(len(task_ids), timeout=timeout)
    keys = [e["idempotencyKey"] for e in emails]
    assert sorted(keys) == sorted(task_ids)
    assert len(keys) == len(set(keys))
    return emails


def test_delay_many_reaches_the_inbox_once_each(batch_app: Celery, fast_servers: DevServers) -> None:
    send_welcome = _task(batch_app)
    result = send_welcome.delay_many([(i,) for i in range(150)])
    ids = [r.id for r in result.results]
    emails = inbox_once(fast_servers, ids)
    by_key = {e["idempotencyKey"]: e for e in emails}
    for n, task_id in enumerate(ids):
        assert by_key[task_id]["to"]["email"] == f"user{n}@example.com"
    # Results resolve to their own tasks through QStash's logs.
    first, last = result.results[0], result.results[-1]
    assert first.get(timeout=10)["emailId"] == by_key[first.id]["emailId"]
    assert last.get(timeout=10)["emailId"] == by_key[last.id]["emailId"]


def test_group_and_chunks_reach_the_inbox_once_each(batch_app: Celery, fast_servers: DevServers) -> None:
    send_welcome = _task(batch_app)
    grouped = group(send_welcome.s(i) for i in range(5)).apply_async()
    chunked = send_welcome.chunks([(i,) for i in range(100, 107)], 3).apply_async()
    ids = [r.id for r in grouped.results] + [r.id for part in chunked.results for r in part.results]
    inbox_once(fast_servers, ids)
    assert [len(p) for p in chunked.get(timeout=10)] == [3, 3, 1]


def test_an_item_the_emulator_refuses_fails_alone(batch_app: Celery, fast_servers: DevServers) -> None:
    settings = load_settings(batch_app.conf)
    good = PublishRequest(
        task_id="good-1", task_name="t", url="https://api.autosend.com/v1/mails/send",
        body={"to": {"email": "a@example.com"}, "from": {"email": "b@example.com"}, "subject": "s", "text": "t"},
        authorization=f"Bearer {fast_servers.api_key}", headers={"Idempotency-Key": "good-1"},
        deduplication_id="good-1", label="good-1",
    )
    bad = replace(good, task_id="bad-1", url="ftp://nowhere.example/x", deduplication_id="bad-1", label="bad-1")
    ok, refused = get_batch_transport(settings).publish_many([good, bad])
    assert isinstance(ok, PublishResult) and ok.message_id.startswith("msg_")
    assert isinstance(refused, PublishError) and "bad-1" in str(refused)
    inbox_once(fast_servers, ["good-1"])


def test_large_bulk_is_split_and_each_part_delivered_once(batch_app: Celery, fast_servers: DevServers) -> None:
    @batch_app.task(base=QStashTask, name="live.news", shared=False)
    def send_news(count: int) -> BulkEmail:
        return BulkEmail(recipients=[f"r{i}@example.com" for i in range(count)],
                         from_="news@acme.example", subject="News", text="News")

    result = send_news.apply_async((230,), task_id="news-230")
    parts = result.get(timeout=15)
    assert [p["totalRecipients"] for p in parts] == [100, 100, 30]
    inbox = httpx.get(f"{fast_servers.sandbox.url}/api/v1/messages", params={"limit": 500}).json()["messages"]
    # The inbox lists one entry per recipient; each part was sent once.
    assert len(inbox) == 230
    assert sorted({e["idempotencyKey"] for e in inbox}) == ["news-230.1", "news-230.2", "news-230.3"]
    assert sorted(e["to"]["email"] for e in inbox) == sorted(f"r{i}@example.com" for i in range(230))


def test_async_forms_reach_the_inbox_once_each(batch_app: Celery, fast_servers: DevServers) -> None:
    send_welcome = _task(batch_app)

    async def main() -> list[str]:
        single = await send_welcome.adelay(1)
        applied = await send_welcome.aapply_async((2,), countdown=1)
        many = await send_welcome.adelay_many([(i,) for i in range(10, 130)])
        data = await single.aget(timeout=10, interval=0.1)
        assert "emailId" in data
        assert "emailId" in await applied.aget(timeout=15, interval=0.1)
        return [single.id, applied.id, *(r.id for r in many.results)]

    ids = asyncio.run(main())
    inbox_once(fast_servers, ids)
