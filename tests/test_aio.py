"""asyncio call sites: adelay, aapply_async, adelay_many, aget (respx; no thread per call)."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from typing import Any

import httpx
import pytest
import respx
from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import GroupResult

from celery_qstash import (
    ConfigurationError,
    DeliveryFailed,
    Email,
    EmailValidationError,
    PublishError,
    QStashAsyncResult,
    UnsupportedOption,
    autosend_task,
)
from celery_qstash.config import load_settings
from celery_qstash.publish.transports.aio import async_client_for
from celery_qstash.testing import outbox

QSTASH_URL = "http://qstash.test"  # the app fixture's (tests/conftest.py)


@autosend_task(name="aio.welcome")
def send_welcome(user_id: int, to: str | None = None) -> Email:
    return Email(
        to=to or f"user{user_id}@example.com", from_="shop@example.com",
        subject=f"Welcome #{user_id}", html="<p>Hi</p>",
    )


async def test_adelay_publishes_like_delay(app: Celery, qstash_mock: respx.MockRouter) -> None:
    result = await send_welcome.adelay(1)
    sync = send_welcome.delay(1)
    a, b = (c.request for c in qstash_mock["publish"].calls)
    assert isinstance(result, QStashAsyncResult)
    assert result.message_id == "msg_1"
    assert json.loads(a.content) == json.loads(b.content)
    for name in ("Upstash-Retries", "Upstash-Flow-Control-Key", "Upstash-Redact-Fields", "Upstash-Forward-X-Celery-Task"):
        assert a.headers[name] == b.headers[name]
    assert a.headers["Upstash-Deduplication-Id"] == result.id != sync.id


async def test_aapply_async_takes_the_same_options(app: Celery, qstash_mock: respx.MockRouter) -> None:
    result = await send_welcome.aapply_async((2,), task_id="t-async", countdown=90, queue=None)
    request = qstash_mock["publish"].calls.last.request
    assert result.id == "t-async"
    assert request.headers["Upstash-Delay"] == "90s"
    assert request.headers["Upstash-Label"] == "t-async"


async def test_aapply_async_validates_like_apply_async(app: Celery, qstash_mock: respx.MockRouter) -> None:
    with pytest.raises(UnsupportedOption, match="chain"):
        await send_welcome.aapply_async((1,), chain=[object()])
    with pytest.raises(EmailValidationError):
        await send_welcome.adelay(1, "nope")
    app.conf.qstash_token = None
    with pytest.raises(ConfigurationError, match="qstash_token"):
        await send_welcome.adelay(1)
    assert qstash_mock.calls.call_count == 0


async def test_async_publish_retries_then_raises(app: Celery, qstash_mock: respx.MockRouter, autosend_api_key: str) -> None:
    qstash_mock["publish"].mock(return_value=httpx.Response(503, json={"error": f"down {autosend_api_key}"}))
    with pytest.raises(PublishError) as info:
        await send_welcome.aapply_async((1,), retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0})
    assert qstash_mock["publish"].call_count == 3
    assert info.value.status == 503
    assert autosend_api_key not in str(info.value)


async def test_async_4xx_is_not_retried(app: Celery, qstash_mock: respx.MockRouter) -> None:
    qstash_mock["publish"].mock(return_value=httpx.Response(400, json={"error": "bad"}))
    with pytest.raises(PublishError, match="bad"):
        await send_welcome.adelay(1)
    assert qstash_mock["publish"].call_count == 1


async def test_adelay_many_one_request_per_hundred(app: Celery, qstash_mock: respx.MockRouter) -> None:
    result = await send_welcome.adelay_many((i,) for i in range(150))
    assert qstash_mock["batch"].call_count == 2
    assert isinstance(result, GroupResult)
    items = [i for c in qstash_mock["batch"].calls for i in json.loads(c.request.content)]
    assert [i["headers"]["Upstash-Label"] for i in items] == [r.id for r in result.results]
    assert [json.loads(i["body"])["subject"] for i in items] == [f"Welcome #{n}" for n in range(150)]


async def test_concurrent_calls_share_one_client_and_no_threads(app: Celery, qstash_mock: respx.MockRouter) -> None:
    before = threading.active_count()
    results = await asyncio.gather(*(send_welcome.adelay(i) for i in range(20)))
    assert len({r.message_id for r in results}) == 20
    assert threading.active_count() == before
    settings = load_settings(app.conf)
    assert async_client_for(settings) is async_client_for(settings)


def test_one_client_per_event_loop(app: Celery) -> None:
    settings = load_settings(app.conf)

    async def client() -> Any:
        return async_client_for(settings)

    assert asyncio.run(client()) is not asyncio.run(client())


async def test_eager_async_goes_to_the_outbox(app: Celery, qstash_mock: respx.MockRouter) -> None:
    app.conf.task_always_eager = True
    result = await send_welcome.adelay(3)
    many = await send_welcome.adelay_many([(4,), (5,)])
    assert qstash_mock.calls.call_count == 0
    assert [e.subject for e in outbox] == ["Welcome #3", "Welcome #4", "Welcome #5"]
    assert (await result.aget())["status"] == "queued"
    assert len(many.get()) == 2


# --- aget ---------------------------------------------------------------------------------


def events(task_id: str, *states: str, body: str | None = None) -> httpx.Response:
    out = []
    for n, state in enumerate(states):
        event: dict[str, Any] = {"time": 1_000 + n, "state": state, "messageId": "m1", "labels": [task_id]}
        if body is not None and state in ("DELIVERED", "FAILED"):
            event["responseStatus"] = 200 if state == "DELIVERED" else 400
            event["responseBody"] = base64.b64encode(body.encode()).decode()  # as QStash sends it
        out.append(event)
    return httpx.Response(200, json={"events": list(reversed(out))})


async def test_aget_polls_until_delivered(app: Celery, qstash_mock: respx.MockRouter) -> None:
    answers = iter([
        events("t1", "CREATED"),
        events("t1", "CREATED", "ACTIVE"),
        events("t1", "CREATED", "ACTIVE", "DELIVERED", body=json.dumps({"success": True, "data": {"emailId": "e1"}})),
    ])
    route = qstash_mock.get(f"{QSTASH_URL}/v2/events").mock(side_effect=lambda r: next(answers))
    result = QStashAsyncResult("t1", app=app)
    assert await result.aget(timeout=5, interval=0.01) == {"emailId": "e1"}
    assert route.call_count == 3
    assert route.calls.last.request.url.params["label"] == "t1"
    assert result.state == "SUCCESS"  # cached: no further request
    assert route.call_count == 3


async def test_aget_raises_delivery_failed(app: Celery, qstash_mock: respx.MockRouter) -> None:
    qstash_mock.get(f"{QSTASH_URL}/v2/events").mock(
        return_value=events("t2", "CREATED", "FAILED", body=json.dumps({"success": False, "error": {"message": "bad"}}))
    )
    result = QStashAsyncResult("t2", app=app)
    with pytest.raises(DeliveryFailed):
        await result.aget(timeout=5, interval=0.01)
    assert isinstance(await result.aget(propagate=False), DeliveryFailed)


async def test_aget_times_out(app: Celery, qstash_mock: respx.MockRouter) -> None:
    qstash_mock.get(f"{QSTASH_URL}/v2/events").mock(return_value=events("t3", "CREATED"))
    with pytest.raises(CeleryTimeoutError):
        await QStashAsyncResult("t3", app=app).aget(timeout=0.05, interval=0.01)


async def test_aget_of_an_ignored_result_is_none(app: Celery, qstash_mock: respx.MockRouter) -> None:
    result = await send_welcome.aapply_async((1,), ignore_result=True)
    assert await result.aget() is None


async def test_aget_of_a_refused_batch_item_raises(app: Celery, qstash_mock: respx.MockRouter) -> None:
    qstash_mock["batch"].mock(return_value=httpx.Response(200, json=[{"messageId": "a"}, {"error": "no"}]))
    result = await send_welcome.adelay_many([(1,), (2,)])
    with pytest.raises(PublishError, match="no"):
        await result.results[1].aget(timeout=1)


async def test_forced_eager_async_goes_to_the_outbox(app: Celery, qstash_mock: respx.MockRouter) -> None:
    from celery_qstash.publish.transports.eager import force_eager

    force_eager(True)  # what the pytest plugin's outbox fixture does
    try:
        await send_welcome.adelay(1)
        await send_welcome.adelay_many([(2,)])
    finally:
        force_eager(False)
    assert qstash_mock.calls.call_count == 0
    assert len(outbox) == 2


async def test_async_answer_that_is_not_qstashs_is_named(app: Celery, qstash_mock: respx.MockRouter) -> None:
    qstash_mock["publish"].mock(return_value=httpx.Response(200, text="<html>hi</html>"))
    with pytest.raises(PublishError, match="does not look like QStash"):
        await send_welcome.adelay(1)
    assert qstash_mock["publish"].call_count == 1


async def test_async_lost_answer_leaves_the_outcome_unknown(app: Celery, qstash_mock: respx.MockRouter) -> None:
    qstash_mock["publish"].mock(side_effect=httpx.ReadTimeout("lost"))
    with pytest.raises(PublishError) as info:
        await send_welcome.aapply_async((1,), task_id="t-lost", retry_policy={"max_retries": 1, "interval_start": 0})
    assert info.value.outcome_unknown and info.value.task_id == "t-lost"
    assert qstash_mock["publish"].call_count == 2
