"""Batch publishing: delay_many, group, map/starmap/chunks through ``/v2/batch`` (respx)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import httpx
import pytest
import respx
from celery import Celery, group
from celery.result import EagerResult, GroupResult
from celery.signals import after_task_publish, before_task_publish
from qstash import QStash

from celery_qstash import (
    BulkEmail,
    ConfigurationError,
    Email,
    EmailValidationError,
    PublishError,
    QStashAsyncResult,
    UnsupportedOption,
    autosend_task,
)
from celery_qstash.publish.request import FlowControl, PublishRequest
from celery_qstash.publish.transports.batch import QStashBatchTransport, batch_body
from celery_qstash.testing import FakeClock, outbox

QSTASH_URL = "http://qstash.test"  # the app fixture's (tests/conftest.py)

BATCH = f"{QSTASH_URL}/v2/batch"


@autosend_task(name="batch.welcome")
def send_welcome(user_id: int, to: str | None = None) -> Email:
    return Email(
        to=to or f"user{user_id}@example.com", from_="shop@example.com",
        subject=f"Welcome #{user_id}", html="<p>Hi</p>",
    )


@autosend_task(name="batch.newsletter", default_retry_delay=30)
def send_newsletter(count: int) -> BulkEmail:
    return BulkEmail(
        recipients=[f"r{i}@example.com" for i in range(count)],
        from_="news@example.com", subject="News", text="News",
    )


def batch_items(router: respx.MockRouter) -> list[list[dict[str, Any]]]:
    """The JSON array of every /v2/batch request, in order."""
    return [json.loads(call.request.content) for call in router["batch"].calls]


def subjects(items: list[dict[str, Any]]) -> list[str]:
    return [json.loads(i["body"])["subject"] for i in items]


# --- one request per 100 messages ---------------------------------------------------------


def test_delay_many_sends_one_request_per_hundred(app: Celery, qstash_mock: respx.MockRouter) -> None:
    result = send_welcome.delay_many((i,) for i in range(250))
    assert qstash_mock["batch"].call_count == 3
    assert qstash_mock["publish"].call_count == 0
    sizes = [len(items) for items in batch_items(qstash_mock)]
    assert sizes == [100, 100, 50]
    assert isinstance(result, GroupResult)
    assert len(result.results) == 250


def test_delay_many_results_resolve_to_their_own_tasks(app: Celery, qstash_mock: respx.MockRouter) -> None:
    result = send_welcome.delay_many([(7,), (8,), (9,)])
    [items] = batch_items(qstash_mock)
    ids = [r.id for r in result.results]
    assert len(set(ids)) == 3
    assert all(isinstance(r, QStashAsyncResult) for r in result.results)
    # Each message carries its own task id as deduplication id, label and Idempotency-Key ...
    for item, task_id in zip(items, ids, strict=True):
        assert item["headers"]["Upstash-Deduplication-Id"] == task_id
        assert item["headers"]["Upstash-Label"] == task_id
        assert item["headers"]["Upstash-Forward-Idempotency-Key"] == task_id
    # ... and its result is that message, in the caller's order.
    assert subjects(items) == ["Welcome #7", "Welcome #8", "Welcome #9"]
    assert [r.message_id for r in result.results] == ["msg_1", "msg_2", "msg_3"]


def _shadow_by_user(task: Any, args: Any, kwargs: Any, options: Any) -> str:
    return f"welcome-for-{args[0]}"


@autosend_task(name="batch.shadowed", shadow_name=_shadow_by_user)
def send_shadowed(user_id: int) -> Email:
    return Email(to=f"user{user_id}@example.com", from_="shop@example.com", subject="Hi", text="Hi")


def test_a_shadow_name_that_reads_the_arguments_names_each_message(
    app: Celery, qstash_mock: respx.MockRouter
) -> None:
    # delay_many plans the options once per call of it, unless the display name depends on
    # the arguments: then each message still gets its own.
    send_shadowed.delay_many([(1,), (2,)])
    [items] = batch_items(qstash_mock)
    assert [i["headers"]["Upstash-Forward-X-Celery-Task"] for i in items] == [
        "welcome-for-1", "welcome-for-2",
    ]


def test_batch_items_carry_what_a_single_publish_carries(
    app: Celery, qstash_mock: respx.MockRouter, autosend_api_key: str
) -> None:
    send_welcome.apply_async((1,), task_id="single-1", countdown=30)
    single = qstash_mock["publish"].calls.last.request
    send_welcome.delay_many([(1,)], countdown=30)
    [[item]] = batch_items(qstash_mock)
    assert item["destination"] == "https://api.autosend.com/v1/mails/send"
    assert json.loads(item["body"]) == json.loads(single.content)
    same = {
        "Upstash-Delay", "Upstash-Retries", "Upstash-Flow-Control-Key", "Upstash-Flow-Control-Value",
        "Upstash-Redact-Fields", "Upstash-Forward-Authorization", "Upstash-Forward-X-Celery-Task",
        "Content-Type",
    }
    for name in same:
        assert item["headers"][name] == single.headers[name], name
    assert item["headers"]["Upstash-Forward-Authorization"] == f"Bearer {autosend_api_key}"
    assert item["queue"] is None


def test_retry_delay_survives_the_batch(app: Celery, qstash_mock: respx.MockRouter) -> None:
    # The SDK's batch_json drops retry_delay; ours must not.
    send_newsletter.delay_many([(2,)])
    [[item]] = batch_items(qstash_mock)
    assert item["headers"]["Upstash-Retry-Delay"] == "30000"


def test_queue_goes_in_the_batch_item(app: Celery, qstash_mock: respx.MockRouter) -> None:
    send_welcome.delay_many([(1,)], queue="mail")
    [[item]] = batch_items(qstash_mock)
    assert item["queue"] == "mail"
    assert "Upstash-Flow-Control-Key" not in item["headers"]


def test_empty_delay_many_sends_nothing(app: Celery, qstash_mock: respx.MockRouter) -> None:
    result = send_welcome.delay_many([])
    assert result.results == []
    assert qstash_mock.calls.call_count == 0


# --- validated before the first request ----------------------------------------------------


def test_one_bad_email_publishes_nothing(app: Celery, qstash_mock: respx.MockRouter) -> None:
    with pytest.raises(EmailValidationError) as info:
        send_welcome.delay_many([(1,), (2, "not-an-address"), (3,)])
    assert info.value.errors[0]["field"] == "to.email"
    assert qstash_mock.calls.call_count == 0


def test_one_bad_group_member_publishes_nothing(app: Celery, qstash_mock: respx.MockRouter) -> None:
    job = group([send_welcome.s(1), send_welcome.s(2, "nope"), send_welcome.s(3)])
    with pytest.raises(EmailValidationError):
        job.apply_async()
    assert qstash_mock.calls.call_count == 0


def test_bad_option_publishes_nothing(app: Celery, qstash_mock: respx.MockRouter) -> None:
    with pytest.raises(UnsupportedOption, match="countdown"):
        send_welcome.delay_many([(1,)], countdown="soon")
    assert qstash_mock.calls.call_count == 0


def test_task_id_option_is_refused(app: Celery, qstash_mock: respx.MockRouter) -> None:
    with pytest.raises(UnsupportedOption, match="own task id"):
        send_welcome.delay_many([(1,), (2,)], task_id="same")
    assert qstash_mock.calls.call_count == 0


def test_items_must_be_argument_tuples(app: Celery, qstash_mock: respx.MockRouter) -> None:
    with pytest.raises(TypeError, match=r"item 1 is int.*\(5,\)"):
        send_welcome.delay_many([(1,), 5])
    assert qstash_mock.calls.call_count == 0


def test_wrong_arguments_fail_like_delay(app: Celery, qstash_mock: respx.MockRouter) -> None:
    with pytest.raises(TypeError):
        send_welcome.delay_many([(1,), (1, "a@example.com", "extra")])
    assert qstash_mock.calls.call_count == 0


def test_missing_key_fails_before_anything(app: Celery, qstash_mock: respx.MockRouter) -> None:
    app.conf.autosend_api_key = None
    with pytest.raises(ConfigurationError, match="autosend_api_key"):
        send_welcome.delay_many([(1,)])
    assert qstash_mock.calls.call_count == 0


def test_expired_tasks_are_not_published(app: Celery, qstash_mock: respx.MockRouter) -> None:
    result = send_welcome.delay_many([(1,), (2,)], countdown=60, expires=5)
    assert qstash_mock.calls.call_count == 0
    assert [r.state for r in result.results] == ["REVOKED", "REVOKED"]


# --- refusals and failures -----------------------------------------------------------------


def refuse_second(request: httpx.Request) -> httpx.Response:
    items = json.loads(request.content)
    answer: list[dict[str, Any]] = [{"messageId": f"ok_{i}"} for i in range(len(items))]
    answer[1] = {"error": "invalid destination"}
    return httpx.Response(200, json=answer)


def test_a_refused_item_marks_only_its_own_result(app: Celery, qstash_mock: respx.MockRouter) -> None:
    qstash_mock["batch"].mock(side_effect=refuse_second)
    result = send_welcome.delay_many([(1,), (2,), (3,)])
    first, second, third = result.results
    assert first.message_id == "ok_0" and third.message_id == "ok_2"
    assert second.message_id is None
    assert second.state == "FAILURE"
    assert isinstance(second.result, PublishError)
    assert "invalid destination" in str(second.result)
    assert second.id in str(second.result)
    with pytest.raises(PublishError):
        second.get()


def test_a_refused_group_member_marks_its_frozen_result(app: Celery, qstash_mock: respx.MockRouter) -> None:
    qstash_mock["batch"].mock(side_effect=refuse_second)
    result = group(send_welcome.s(i) for i in range(3)).apply_async()
    states = [r.state if r.message_id is None else "SENT" for r in result.results]
    assert states == ["SENT", "FAILURE", "SENT"]


def test_nothing_accepted_raises(app: Celery, qstash_mock: respx.MockRouter) -> None:
    qstash_mock["batch"].mock(return_value=httpx.Response(200, json=[{"error": "nope"}]))
    with pytest.raises(PublishError, match="nope"):
        send_welcome.delay_many([(1,)])


def test_whole_request_failure_is_retried(app: Celery, qstash_mock: respx.MockRouter) -> None:
    answers = itertools.chain([httpx.Response(503, json={"error": "busy"})], itertools.repeat(None))

    def flaky(request: httpx.Request) -> httpx.Response:
        failure = next(answers)
        if failure is not None:
            return failure
        return httpx.Response(200, json=[{"messageId": f"m{i}"} for i, _ in enumerate(json.loads(request.content))])

    qstash_mock["batch"].mock(side_effect=flaky)
    result = send_welcome.delay_many([(1,), (2,)], retry_policy={"interval_start": 0, "interval_step": 0})
    assert qstash_mock["batch"].call_count == 2
    first, second = (json.loads(c.request.content) for c in qstash_mock["batch"].calls)
    assert first == second  # same messages, same deduplication ids: the retry is safe
    assert [r.message_id for r in result.results] == ["m0", "m1"]


def test_whole_request_failure_raises_with_the_secrets_scrubbed(
    app: Celery, qstash_mock: respx.MockRouter, autosend_api_key: str, qstash_token: str
) -> None:
    qstash_mock["batch"].mock(return_value=httpx.Response(400, json={"error": f"bad {autosend_api_key} {qstash_token}"}))
    with pytest.raises(PublishError) as info:
        send_welcome.delay_many([(1,), (2,)])
    assert info.value.status == 400
    assert qstash_mock["batch"].call_count == 1  # a 4xx is not retried
    assert autosend_api_key not in str(info.value) and qstash_token not in str(info.value)


def test_after_a_whole_request_fails_the_rest_is_not_sent(app: Celery, qstash_mock: respx.MockRouter) -> None:
    answers = iter([None, httpx.Response(400, json={"error": "quota"})])

    def second_fails(request: httpx.Request) -> httpx.Response:
        failure = next(answers, None)
        if failure is not None:
            return failure
        return httpx.Response(200, json=[{"messageId": f"m{i}"} for i, _ in enumerate(json.loads(request.content))])

    qstash_mock["batch"].mock(side_effect=second_fails)
    result = send_welcome.delay_many([(i,) for i in range(250)])
    assert qstash_mock["batch"].call_count == 2
    sent = [r for r in result.results if r.message_id]
    failed = [r for r in result.results if not r.message_id]
    assert (len(sent), len(failed)) == (100, 150)
    assert all(r.state == "FAILURE" for r in failed)  # read locally: nothing asks QStash
    assert "quota" in str(failed[-1].result)


class BatchServer:
    """A stand-in QStash whose first answers fail at the network level."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.calls <= self.failures:
            raise httpx.ConnectError("refused")
        return httpx.Response(200, json=[{"messageId": "m"} for _ in json.loads(request.content)])


def make_request(task_id: str) -> PublishRequest:
    return PublishRequest(
        task_id=task_id, task_name="t", url="https://api.autosend.com/v1/mails/send",
        body={"to": {"email": "a@example.com"}}, authorization="Bearer k",
        headers={"Idempotency-Key": task_id}, deduplication_id=task_id, label=task_id,
        flow_control=FlowControl(key="k", rate=2, period="1s"), retry_delay="1000",
    )


def test_batch_retries_stop_at_the_deadline() -> None:
    clock = FakeClock()
    server = BatchServer(failures=1000)
    transport = QStashBatchTransport(QStash("t", retry=False, base_url=QSTASH_URL), timeout=2.0, clock=clock)
    start = clock.now()
    with respx.mock(assert_all_mocked=True) as router:
        router.post(BATCH).mock(side_effect=server)
        outcomes = transport.publish_many([make_request("a"), make_request("b")], retry_policy={"max_retries": None})
    assert all(isinstance(o, PublishError) for o in outcomes)
    assert 1 < server.calls < 100
    assert clock.now() - start <= 2.0


def test_batch_body_is_the_sdks() -> None:
    [item] = json.loads(batch_body([make_request("a")]))
    assert item["headers"]["Upstash-Flow-Control-Value"] == "rate=2, period=1s"
    assert item["headers"]["Upstash-Retry-Delay"] == "1000"
    assert item["headers"]["Upstash-Forward-Authorization"] == "Bearer k"


# --- signals ---------------------------------------------------------------------------------


def test_publish_signals_fire_per_task(app: Celery, qstash_mock: respx.MockRouter) -> None:
    seen: list[tuple[str, str]] = []

    def before(sender: str, headers: dict[str, Any], **kw: Any) -> None:
        seen.append(("before", headers["id"]))

    def after(sender: str, headers: dict[str, Any], **kw: Any) -> None:
        seen.append(("after", headers["id"]))

    before_task_publish.connect(before)
    after_task_publish.connect(after)
    try:
        result = send_welcome.delay_many([(1,), (2,)])
    finally:
        before_task_publish.disconnect(before)
        after_task_publish.disconnect(after)
    a, b = (r.id for r in result.results)
    # Every task prepared before anything is published, then each one announced.
    assert seen == [("before", a), ("before", b), ("after", a), ("after", b)]


# --- map, starmap, chunks -----------------------------------------------------------------


def test_map_is_one_message_per_item(app: Celery, qstash_mock: respx.MockRouter) -> None:
    result = send_welcome.map([4, 5]).apply_async()
    [items] = batch_items(qstash_mock)
    assert subjects(items) == ["Welcome #4", "Welcome #5"]
    assert [r.message_id for r in result.results] == ["msg_1", "msg_2"]


def test_starmap_spreads_each_item(app: Celery, qstash_mock: respx.MockRouter) -> None:
    send_welcome.starmap([(1, "a@example.com"), (2, "b@example.com")]).delay()
    [items] = batch_items(qstash_mock)
    assert [json.loads(i["body"])["to"]["email"] for i in items] == ["a@example.com", "b@example.com"]


def test_chunks_keep_celerys_result_shape(app: Celery, qstash_mock: respx.MockRouter) -> None:
    result = send_welcome.chunks([(i,) for i in range(7)], 3).apply_async(countdown=10)
    [items] = batch_items(qstash_mock)  # seven messages, one request
    assert len(items) == 7
    assert all(i["headers"]["Upstash-Delay"] == "10s" for i in items)
    assert [len(part.results) for part in result.results] == [3, 3, 1]
    flat = [r.message_id for part in result.results for r in part.results]
    assert flat == [f"msg_{n}" for n in range(1, 8)]


# --- eager mode -------------------------------------------------------------------------------


def test_eager_delay_many_goes_to_the_outbox(app: Celery, qstash_mock: respx.MockRouter) -> None:
    app.conf.task_always_eager = True
    result = send_welcome.delay_many([(1,), (2,)])
    assert qstash_mock.calls.call_count == 0
    assert [e.subject for e in outbox] == ["Welcome #1", "Welcome #2"]
    assert [r.id for r in result.results] == [e.task_id for e in outbox]
    assert all(isinstance(r, EagerResult) for r in result.results)
    assert result.get()[0]["status"] == "queued"


def test_eager_refuses_what_production_refuses(app: Celery, qstash_mock: respx.MockRouter) -> None:
    app.conf.task_always_eager = True
    with pytest.raises(EmailValidationError):
        send_welcome.delay_many([(1,), (2, "nope")])
    assert len(outbox) == 0  # validated before anything went to the outbox


def test_eager_map_goes_to_the_outbox(app: Celery, qstash_mock: respx.MockRouter) -> None:
    app.conf.task_always_eager = True
    send_welcome.map([1, 2, 3]).apply_async()
    assert len(outbox) == 3


# --- a BulkEmail over AutoSend's cap --------------------------------------------------------


def test_large_bulk_is_split_into_autosend_sized_messages(app: Celery, qstash_mock: respx.MockRouter) -> None:
    result = send_newsletter.apply_async((250,), task_id="news")
    [items] = batch_items(qstash_mock)
    assert [len(json.loads(i["body"])["recipients"]) for i in items] == [100, 100, 50]
    keys = [i["headers"]["Upstash-Forward-Idempotency-Key"] for i in items]
    assert keys == ["news.1", "news.2", "news.3"]
    assert [i["headers"]["Upstash-Label"] for i in items] == keys
    everyone = [r["email"] for i in items for r in json.loads(i["body"])["recipients"]]
    assert everyone == [f"r{n}@example.com" for n in range(250)]
    assert isinstance(result, GroupResult) and result.id == "news"
    assert [r.id for r in result.results] == keys


def test_hundred_recipients_stay_one_message(app: Celery, qstash_mock: respx.MockRouter) -> None:
    result = send_newsletter.delay(100)
    assert qstash_mock["publish"].call_count == 1
    assert isinstance(result, QStashAsyncResult)


def test_a_large_bulk_built_outside_a_task_is_still_refused() -> None:
    # The sandbox validates with the same model: AutoSend itself takes 100 at most.
    with pytest.raises(EmailValidationError, match="at most 100"):
        BulkEmail(recipients=[f"r{i}@example.com" for i in range(101)], from_="a@example.com", subject="s", text="t")


def test_eager_large_bulk_fills_the_outbox_in_parts(app: Celery, qstash_mock: respx.MockRouter) -> None:
    app.conf.task_always_eager = True
    send_newsletter.delay(201)
    assert [len(e.to) for e in outbox] == [100, 100, 1]
    assert [e.task_id.rsplit(".", 1)[1] for e in outbox] == ["1", "2", "3"]


def test_large_bulk_in_a_group_is_refused(app: Celery, qstash_mock: respx.MockRouter) -> None:
    with pytest.raises(UnsupportedOption, match="delay_many"):
        group([send_newsletter.s(150), send_welcome.s(1)]).apply_async()
    assert qstash_mock.calls.call_count == 0


def test_large_bulk_in_delay_many_is_a_nested_result(app: Celery, qstash_mock: respx.MockRouter) -> None:
    result = send_newsletter.delay_many([(150,), (3,)])
    [items] = batch_items(qstash_mock)
    assert len(items) == 3
    big, small = result.results
    assert isinstance(big, GroupResult) and len(big.results) == 2
    assert isinstance(small, QStashAsyncResult)


def test_forced_eager_delay_many_goes_to_the_outbox(app: Celery, qstash_mock: respx.MockRouter) -> None:
    from celery_qstash.publish.transports.eager import force_eager

    force_eager(True)  # what the pytest plugin's outbox fixture does
    try:
        send_welcome.delay_many([(1,), (2,)])
    finally:
        force_eager(False)
    assert qstash_mock.calls.call_count == 0
    assert [e.subject for e in outbox] == ["Welcome #1", "Welcome #2"]


def test_a_group_of_ordinary_celery_tasks_is_untouched(make_app: Any, qstash_mock: respx.MockRouter) -> None:
    # Batching hooks into Celery's group; a group of broker tasks still goes to the broker.
    app = make_app("plain", broker="memory://")

    @app.task(name="plain.add", shared=False)
    def add(x: int) -> int:
        return x

    result = group(add.s(i) for i in range(3)).apply_async()
    assert len(result.results) == 3
    assert qstash_mock.calls.call_count == 0
    with app.connection_for_write() as conn:
        queue = conn.SimpleQueue("celery")
        received = [queue.get(timeout=1) for _ in range(3)]
        queue.close()
    assert sorted(m.headers["id"] for m in received) == sorted(r.id for r in result.results)


def test_a_mixed_group_batches_only_the_qstash_members(make_app: Any, qstash_mock: respx.MockRouter) -> None:
    app = make_app("mixed", broker="memory://")

    @app.task(name="mixed.add", shared=False)
    def add(x: int) -> int:
        return x

    result = group([add.s(1), send_welcome.s(2), send_welcome.s(3)]).apply_async()
    [items] = batch_items(qstash_mock)
    assert [i["headers"]["Upstash-Label"] for i in items] == [r.id for r in result.results[1:]]


@autosend_task(name="batch.maybe")
def send_maybe(user_id: int) -> Email | None:
    if user_id % 2:
        return None  # nothing to send for this one
    return Email(to=f"user{user_id}@example.com", from_="shop@example.com", subject=f"#{user_id}", text="t")


def test_nothing_to_send_is_ignored_in_a_batch(app: Celery, qstash_mock: respx.MockRouter) -> None:
    result = send_maybe.delay_many([(0,), (1,), (2,)])
    [items] = batch_items(qstash_mock)
    assert subjects(items) == ["#0", "#2"]
    assert result.results[1].state == "IGNORED"  # read locally: nothing was published
    assert result.results[0].message_id and result.results[2].message_id


def test_eager_nothing_to_send_is_ignored_in_a_batch(app: Celery, qstash_mock: respx.MockRouter) -> None:
    app.conf.task_always_eager = True
    result = send_maybe.delay_many([(0,), (1,)])
    assert [e.subject for e in outbox] == ["#0"]
    assert [r.state for r in result.results] == ["SUCCESS", "IGNORED"]


def test_lost_answers_leave_the_outcome_unknown(app: Celery, qstash_mock: respx.MockRouter) -> None:
    qstash_mock["batch"].mock(side_effect=httpx.ReadTimeout("lost"))
    with pytest.raises(PublishError) as info:
        send_welcome.delay_many([(1,), (2,)], retry_policy={"max_retries": 1, "interval_start": 0})
    assert info.value.outcome_unknown
    assert "same task ids is safe" in str(info.value)
    assert qstash_mock["batch"].call_count == 2


def test_a_retry_answered_as_duplicates_is_a_success(app: Celery, qstash_mock: respx.MockRouter) -> None:
    answers = iter([httpx.ReadTimeout("lost"), None])

    def second(request: httpx.Request) -> httpx.Response:
        failure = next(answers)
        if failure is not None:
            raise failure
        items = json.loads(request.content)
        return httpx.Response(200, json=[{"messageId": f"m{i}", "deduplicated": True} for i, _ in enumerate(items)])

    qstash_mock["batch"].mock(side_effect=second)
    result = send_welcome.delay_many([(1,), (2,)], retry_policy={"interval_start": 0})
    assert [r.message_id for r in result.results] == ["m0", "m1"]


def test_an_answer_that_is_not_qstashs_is_named_and_not_retried(app: Celery, qstash_mock: respx.MockRouter) -> None:
    qstash_mock["batch"].mock(return_value=httpx.Response(200, text="<html>hello</html>"))
    with pytest.raises(PublishError, match="does not look like QStash") as info:
        send_welcome.delay_many([(1,)])
    assert not info.value.outcome_unknown
    assert qstash_mock["batch"].call_count == 1
    qstash_mock["batch"].mock(return_value=httpx.Response(200, json={"messageId": "x"}))
    with pytest.raises(PublishError, match="does not look like QStash"):
        send_welcome.delay_many([(1,), (2,)])


def test_task_routes_route_each_item_by_its_arguments(app: Celery, qstash_mock: respx.MockRouter) -> None:
    def by_user(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any) -> Any:
        return {"queue": f"mail-{args[0] % 2}"} if name == "batch.welcome" else None

    app.conf.task_routes = (by_user,)
    send_welcome.delay_many([(1,), (2,), (3,)])
    [items] = batch_items(qstash_mock)
    assert [i["queue"] for i in items] == ["mail-1", "mail-0", "mail-1"]
