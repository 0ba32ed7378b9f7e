"""The task shim: decorators, call sites, Celery semantics kept, configuration, errors, secrets."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import respx
from celery import Celery, Task, group, states
from celery.exceptions import CDeprecationWarning
from celery.result import GroupResult
from celery.signals import after_task_publish, before_task_publish
from kombu.exceptions import EncodeError

from celery_qstash import (
    BulkEmail,
    CeleryQStashWarning,
    ConfigurationError,
    Email,
    EmailValidationError,
    PublishError,
    QStashAsyncResult,
    QStashTask,
    UnsupportedOption,
    autosend_task,
)
from celery_qstash.config import load_settings
from celery_qstash.devserver import DEV_AUTOSEND_API_KEY, DEV_TOKEN
from celery_qstash.publish.plan import plan_publish
from celery_qstash.publish.request import TaskAttrs

SEND_PATH = "/v2/publish/https://api.autosend.com/v1/mails/send"
BULK_PATH = "/v2/publish/https://api.autosend.com/v1/mails/bulk"


def welcome(user_id: int, to: str = "jane@example.com") -> Email:
    return Email(to=to, from_="shop@example.com", subject=f"Welcome #{user_id}", html="<p>Hi</p>")


@autosend_task
def send_welcome(user_id: int) -> Email:
    return welcome(user_id)


@autosend_task(max_retries=9, name="emails.send_receipt")
def send_receipt(order_id: int, *, cc: str | None = None) -> Email:
    return Email(
        to="jane@example.com", cc=cc, from_="shop@example.com", subject=f"Receipt {order_id}", text="Thanks"
    )


@autosend_task
def send_to(address: str) -> Email:
    return welcome(1, to=address)


@autosend_task
def send_dict(user_id: int) -> dict[str, Any]:
    return {"to": "jane@example.com", "from": "shop@example.com", "templateId": "tpl_welcome", "dynamicData": {"id": user_id}}


@autosend_task
def send_newsletter(addresses: list[str]) -> BulkEmail:
    return BulkEmail(
        recipients=[{"email": a, "dynamic_data": {"n": i}} for i, a in enumerate(addresses)],
        from_="news@example.com",
        subject="News",
        html="<p>News</p>",
    )


@autosend_task
def send_no_content(user_id: int) -> Email:
    return Email(to="jane@example.com", from_="shop@example.com", subject="no body")  # raises


@autosend_task
def send_nothing(user_id: int) -> None:
    return None


seen_ids: list[str] = []


@autosend_task(bind=True)
def send_bound(self: Task, user_id: int) -> Email:
    seen_ids.append(self.request.id)
    return welcome(user_id)


seen_args: list[Any] = []


@autosend_task
def send_seeing_args(items: Any) -> Email:
    seen_args.append(items)
    return welcome(1)


@autosend_task(ignore_result=True)
def send_ignored(user_id: int) -> Email:
    return welcome(user_id)


@autosend_task(time_limit=20, expires=3600)
def send_with_exec_defaults(user_id: int) -> Email:
    return welcome(user_id)


@pytest.fixture(autouse=True)
def _reset_seen() -> None:
    seen_ids.clear()
    seen_args.clear()


def only_request(mock: respx.MockRouter) -> httpx.Request:
    assert mock.calls.call_count == 1, f"expected one request, got {mock.calls.call_count}"
    return mock.calls.last.request


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


# --- ways to declare a task ------------------------------------------------------------


def test_bare_decorator(app: Celery, qstash_mock: respx.MockRouter) -> None:
    assert isinstance(send_welcome._get_current_object(), QStashTask)
    assert send_welcome.name == "test_task.send_welcome"
    result = send_welcome.delay(7)
    request = only_request(qstash_mock)
    assert request.url.path == SEND_PATH
    assert body(request)["subject"] == "Welcome #7"
    assert isinstance(result, QStashAsyncResult)


def test_decorator_with_options(app: Celery, qstash_mock: respx.MockRouter) -> None:
    assert send_receipt.name == "emails.send_receipt"
    assert send_receipt.max_retries == 9
    send_receipt.delay(3, cc="boss@example.com")
    request = only_request(qstash_mock)
    assert request.headers["Upstash-Retries"] == "9"
    assert request.headers["Upstash-Forward-X-Celery-Task"] == "emails.send_receipt"
    assert body(request)["cc"] == [{"email": "boss@example.com"}]


def test_decorator_binds_to_the_current_app(make_app: Callable[..., Celery], qstash_mock: respx.MockRouter) -> None:
    first = make_app()
    first.conf.autosend_base_url = "https://first.example.com"
    second = make_app()  # now current
    second.conf.autosend_base_url = "https://second.example.com"
    send_welcome.delay(1)
    assert only_request(qstash_mock).url.path == "/v2/publish/https://second.example.com/v1/mails/send"
    assert send_welcome._get_current_object().app is second
    assert first.tasks["test_task.send_welcome"].app is first


def test_decorator_rejects_non_qstash_base() -> None:
    with pytest.raises(UnsupportedOption) as info:
        autosend_task(base=Task)(lambda: None)
    assert info.value.option == "base"


def test_app_task_with_base(app: Celery, qstash_mock: respx.MockRouter) -> None:
    @app.task(base=QStashTask, max_retries=4, shared=False)
    def send_reset(user_id: int) -> Email:
        return welcome(user_id)

    assert isinstance(send_reset, QStashTask)
    result = send_reset.apply_async((5,))
    request = only_request(qstash_mock)
    assert request.headers["Upstash-Retries"] == "4"
    assert body(request)["subject"] == "Welcome #5"
    assert result.message_id == "msg_1"


@pytest.mark.parametrize("task_cls", [QStashTask, "celery_qstash:QStashTask", "celery_qstash.tasks.task:QStashTask"])
def test_app_task_cls(make_app: Callable[..., Celery], qstash_mock: respx.MockRouter, task_cls: Any) -> None:
    app = make_app(task_cls=task_cls)

    @app.task(shared=False)
    def send_plain(user_id: int) -> Email:
        return welcome(user_id)

    assert isinstance(send_plain, QStashTask)
    result = send_plain.delay(11)
    request = only_request(qstash_mock)
    assert request.url.path == SEND_PATH
    assert body(request)["subject"] == "Welcome #11"
    assert isinstance(result, QStashAsyncResult)


def test_task_returning_a_dict(app: Celery, qstash_mock: respx.MockRouter) -> None:
    send_dict.delay(4)
    assert body(only_request(qstash_mock)) == {
        "to": {"email": "jane@example.com"},
        "from": {"email": "shop@example.com"},
        "templateId": "tpl_welcome",
        "dynamicData": {"id": 4},
    }


def test_calling_the_task_directly_runs_the_body_only(app: Celery, qstash_mock: respx.MockRouter) -> None:
    mail = send_welcome(3)
    assert isinstance(mail, Email)
    assert mail.subject == "Welcome #3"
    assert qstash_mock.calls.call_count == 0


def test_default_from_setting(app: Celery, qstash_mock: respx.MockRouter) -> None:
    app.conf.autosend_default_from = "noreply@example.com"

    @app.task(base=QStashTask, shared=False)
    def send_without_from() -> dict[str, Any]:
        return {"to": "jane@example.com", "subject": "s", "text": "t"}

    send_without_from.delay()
    assert body(only_request(qstash_mock))["from"] == {"email": "noreply@example.com"}


# --- call sites --------------------------------------------------------------------------


def test_delay(app: Celery, qstash_mock: respx.MockRouter) -> None:
    result = send_welcome.delay(1)
    request = only_request(qstash_mock)
    assert result.id == request.headers["Upstash-Deduplication-Id"]
    assert result.message_id == "msg_1"


def test_apply_async_with_countdown(app: Celery, qstash_mock: respx.MockRouter, autosend_api_key: str) -> None:
    result = send_receipt.apply_async((42,), countdown=90)
    request = only_request(qstash_mock)
    assert request.url.path == SEND_PATH
    assert request.headers["Upstash-Delay"] == "90s"
    assert request.headers["Upstash-Retries"] == "9"
    assert request.headers["Upstash-Forward-Authorization"] == f"Bearer {autosend_api_key}"
    assert body(request) == {
        "to": {"email": "jane@example.com"},
        "from": {"email": "shop@example.com"},
        "subject": "Receipt 42",
        "text": "Thanks",
    }
    assert result.id and result.message_id == "msg_1"


def test_apply_async_with_kwargs(app: Celery, qstash_mock: respx.MockRouter) -> None:
    send_receipt.apply_async(kwargs={"order_id": 8, "cc": "c@example.com"})
    request = only_request(qstash_mock)
    assert body(request)["subject"] == "Receipt 8"
    assert body(request)["cc"] == [{"email": "c@example.com"}]


def test_signature_delay(app: Celery, qstash_mock: respx.MockRouter) -> None:
    result = send_welcome.s(12).delay()
    request = only_request(qstash_mock)
    assert body(request)["subject"] == "Welcome #12"
    assert isinstance(result, QStashAsyncResult)
    assert result.message_id == "msg_1"


def test_signature_apply_async_with_options(app: Celery, qstash_mock: respx.MockRouter) -> None:
    send_welcome.s(12).set(countdown=15).apply_async(task_id="sig-id")
    request = only_request(qstash_mock)
    assert request.headers["Upstash-Delay"] == "15s"
    assert request.headers["Upstash-Deduplication-Id"] == "sig-id"


@pytest.mark.filterwarnings("ignore::celery_qstash.CeleryQStashWarning")  # canvas passes producer/add_to_parent
def test_group_honours_frozen_task_ids(app: Celery, qstash_mock: respx.MockRouter) -> None:
    job = group(send_welcome.s(i) for i in range(3))
    result = job.apply_async()
    assert isinstance(result, GroupResult)
    frozen = [r.id for r in result.results]
    assert len(set(frozen)) == 3
    # One /v2/batch request carries the whole group.
    assert qstash_mock["publish"].call_count == 0
    items = body(only_request(qstash_mock))
    assert [i["headers"]["Upstash-Deduplication-Id"] for i in items] == frozen
    assert [i["headers"]["Upstash-Label"] for i in items] == frozen
    assert [json.loads(i["body"])["subject"] for i in items] == ["Welcome #0", "Welcome #1", "Welcome #2"]
    assert all(isinstance(r, QStashAsyncResult) for r in result.results)
    assert [r.message_id for r in result.results] == ["msg_1", "msg_2", "msg_3"]


def test_group_with_prefrozen_ids(app: Celery, qstash_mock: respx.MockRouter) -> None:
    job = group(send_welcome.s(1).set(task_id="g-a"), send_welcome.s(2).set(task_id="g-b"))
    result = job.apply_async()
    assert [r.id for r in result.results] == ["g-a", "g-b"]
    items = body(only_request(qstash_mock))
    assert [i["headers"]["Upstash-Deduplication-Id"] for i in items] == ["g-a", "g-b"]


def test_group_members_warn_about_nothing_they_did_not_ask_for(
    app: Celery, qstash_mock: respx.MockRouter
) -> None:
    # Celery's group passes producer= and add_to_parent=False to every member itself.
    with warnings.catch_warnings():
        warnings.simplefilter("error", CeleryQStashWarning)
        group(send_welcome.s(i) for i in range(2)).apply_async()
    assert qstash_mock["batch"].call_count == 1


def test_task_routes_pick_the_qstash_queue(app: Celery, qstash_mock: respx.MockRouter) -> None:
    app.conf.task_routes = {send_welcome.name: {"queue": "mail"}, "other.*": {"queue": "x"}}
    send_welcome.delay(1)
    assert qstash_mock["enqueue"].call_count == 1
    assert "/v2/enqueue/mail/https://api.autosend.com/v1/mails/send" in str(qstash_mock["enqueue"].calls.last.request.url)


def test_an_explicit_queue_wins_over_task_routes(app: Celery, qstash_mock: respx.MockRouter) -> None:
    app.conf.task_routes = {send_welcome.name: {"queue": "mail"}}
    send_welcome.apply_async((1,), queue="urgent")
    assert "/v2/enqueue/urgent/" in str(qstash_mock["enqueue"].calls.last.request.url)


def test_unrouted_tasks_are_published_not_enqueued(app: Celery, qstash_mock: respx.MockRouter) -> None:
    app.conf.task_routes = {"other.*": {"queue": "x"}}
    send_welcome.delay(1)
    assert qstash_mock["publish"].call_count == 1 and qstash_mock["enqueue"].call_count == 0


def test_passed_task_id_is_honoured(app: Celery, qstash_mock: respx.MockRouter) -> None:
    result = send_welcome.apply_async((1,), task_id="my-own-id")
    request = only_request(qstash_mock)
    assert result.id == "my-own-id"
    assert request.headers["Upstash-Deduplication-Id"] == "my-own-id"
    assert request.headers["Upstash-Forward-Idempotency-Key"] == "my-own-id"


@pytest.fixture
def send_queued(app: Celery) -> Task:
    with warnings.catch_warnings():
        # Celery 5.7 deprecates the queue task attribute (task_routes instead); still honoured.
        warnings.simplefilter("ignore", CDeprecationWarning)

        @app.task(base=QStashTask, queue="emails", shared=False)
        def send_queued(user_id: int) -> Email:
            return welcome(user_id)

        assert send_queued.queue == "emails"
    return send_queued


def test_task_level_queue_default(send_queued: Task, qstash_mock: respx.MockRouter) -> None:
    send_queued.delay(1)
    request = only_request(qstash_mock)
    assert request.url.path == "/v2/enqueue/emails/https://api.autosend.com/v1/mails/send"


def test_task_level_queue_overridden_per_call(send_queued: Task, qstash_mock: respx.MockRouter) -> None:
    send_queued.apply_async((1,), queue="urgent")
    assert only_request(qstash_mock).url.path.startswith("/v2/enqueue/urgent/")


@pytest.mark.filterwarnings("ignore:celery-qstash. expires:celery_qstash.CeleryQStashWarning")
def test_task_level_exec_defaults(app: Celery, qstash_mock: respx.MockRouter) -> None:
    send_with_exec_defaults.delay(1)
    assert only_request(qstash_mock).headers["Upstash-Timeout"] == "20s"


def test_args_get_celerys_json_round_trip(app: Celery, qstash_mock: respx.MockRouter) -> None:
    send_seeing_args.delay(("a", "b"))
    assert seen_args == [["a", "b"]]  # a tuple arrives as a list, as on a worker
    assert qstash_mock.calls.call_count == 1


def test_unserialisable_args_fail_and_publish_nothing(app: Celery, qstash_mock: respx.MockRouter) -> None:
    # Named, at the call site (kombu's bare EncodeError named neither the argument nor a fix).
    with pytest.raises(UnsupportedOption, match=r"^args\[0\]: object cannot be serialised "
                       r"with 'json' \(Object of type object is not JSON serializable\)") as caught:
        send_seeing_args.delay(object())
    assert isinstance(caught.value.__cause__, EncodeError)
    assert seen_args == []
    assert qstash_mock.calls.call_count == 0


# --- what Celery's apply_async would have done ---------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: send_welcome.delay(),
        lambda: send_welcome.delay(1, 2),
        lambda: send_welcome.delay(user=1),
        lambda: send_welcome.apply_async((1,), {"extra": True}),
        lambda: send_receipt.delay(1, "positional-cc"),
        lambda: send_welcome.s().delay(),
    ],
)
def test_wrong_arguments_raise_type_error_and_publish_nothing(
    app: Celery, qstash_mock: respx.MockRouter, call: Callable[[], Any]
) -> None:
    with pytest.raises(TypeError):
        call()
    assert qstash_mock.calls.call_count == 0


def test_args_must_be_a_sequence(app: Celery, qstash_mock: respx.MockRouter) -> None:
    with pytest.raises(TypeError, match="list or tuple"):
        send_welcome.apply_async("1")
    with pytest.raises(TypeError, match="mapping"):
        send_welcome.apply_async((), ["user_id"])
    assert qstash_mock.calls.call_count == 0


def test_strict_typing_off_skips_the_check(make_app: Callable[..., Celery], qstash_mock: respx.MockRouter) -> None:
    app = make_app(strict_typing=False)

    @app.task(base=QStashTask, shared=False)
    def send_flexible(*args: Any) -> Email:
        return welcome(len(args))

    send_flexible.delay(1, 2, 3)
    assert body(only_request(qstash_mock))["subject"] == "Welcome #3"


def test_invalid_email_raises_and_publishes_nothing(app: Celery, qstash_mock: respx.MockRouter) -> None:
    with pytest.raises(EmailValidationError) as info:
        send_to.delay("not-an-address")
    assert info.value.field == "to.email"
    assert isinstance(info.value, ValueError)
    assert qstash_mock.calls.call_count == 0


def test_missing_content_raises_and_publishes_nothing(app: Celery, qstash_mock: respx.MockRouter) -> None:
    with pytest.raises(EmailValidationError) as info:
        send_no_content.delay(1)
    assert info.value.field == "html"
    assert qstash_mock.calls.call_count == 0


def test_task_returning_none_is_ignored_and_publishes_nothing(app: Celery, qstash_mock: respx.MockRouter) -> None:
    # "Nothing to send" (issue 7): Celery's IGNORED state, as in eager mode; before, an
    # EmailValidationError reached the caller.
    result = send_nothing.delay(1)
    assert result.state == states.IGNORED
    assert result.ready() and not result.successful()
    assert result.get(timeout=1) is None
    assert qstash_mock.calls.call_count == 0


def test_publish_signals_fire_once_each(app: Celery, qstash_mock: respx.MockRouter) -> None:
    events: list[tuple[str, Any, dict[str, Any]]] = []

    def before(sender: Any = None, **kwargs: Any) -> None:
        events.append(("before", sender, kwargs))
        assert qstash_mock.calls.call_count == 0  # before means before

    def after(sender: Any = None, **kwargs: Any) -> None:
        events.append(("after", sender, kwargs))
        assert qstash_mock.calls.call_count == 1

    before_task_publish.connect(before, weak=False)
    after_task_publish.connect(after, weak=False)
    try:
        result = send_welcome.apply_async((1,), task_id="sig-1")
    finally:
        before_task_publish.disconnect(before)
        after_task_publish.disconnect(after)
    assert [(e[0], e[1]) for e in events] == [
        ("before", "test_task.send_welcome"),
        ("after", "test_task.send_welcome"),
    ]
    headers = events[0][2]["headers"]
    assert headers["id"] == result.id == "sig-1"
    assert headers["task"] == "test_task.send_welcome"
    assert events[0][2]["body"][0] == [1]


def test_headers_a_signal_handler_adds_are_forwarded(app: Celery, qstash_mock: respx.MockRouter) -> None:
    seen: dict[str, Any] = {}

    def tracer(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
        assert headers is not None
        seen.update(headers)
        headers["traceparent"] = "00-abc-def-01"

    before_task_publish.connect(tracer, weak=False)
    try:
        send_welcome.apply_async((1,), headers={"X-Request-Id": "r1"})
    finally:
        before_task_publish.disconnect(tracer)
    assert seen["X-Request-Id"] == "r1"  # the call's own headers are merged in, as in Celery
    request = qstash_mock.calls.last.request
    assert request.headers["Upstash-Forward-traceparent"] == "00-abc-def-01"
    assert request.headers["Upstash-Forward-X-Request-Id"] == "r1"
    assert "Upstash-Forward-lang" not in request.headers  # protocol headers stay behind


def test_a_handler_header_that_cannot_be_forwarded_is_skipped_with_a_warning(
    app: Celery, qstash_mock: respx.MockRouter, autosend_api_key: str
) -> None:
    def bad(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
        assert headers is not None
        headers["Authorization"] = "Bearer stolen"
        headers["fine"] = "yes"

    before_task_publish.connect(bad, weak=False)
    try:
        with pytest.warns(CeleryQStashWarning, match="Authorization"):
            send_welcome.delay(1)
    finally:
        before_task_publish.disconnect(bad)
    request = qstash_mock.calls.last.request
    assert request.headers["Upstash-Forward-Authorization"] == f"Bearer {autosend_api_key}"
    assert request.headers["Upstash-Forward-fine"] == "yes"


def test_no_signals_when_nothing_is_published(app: Celery, qstash_mock: respx.MockRouter) -> None:
    fired: list[str] = []

    def before(sender: Any = None, **kwargs: Any) -> None:
        fired.append(sender)

    before_task_publish.connect(before, weak=False)
    try:
        with pytest.raises(EmailValidationError):
            send_to.delay("nope")
    finally:
        before_task_publish.disconnect(before)
    assert fired == []


def test_ignore_result_per_call(app: Celery, qstash_mock: respx.MockRouter) -> None:
    result = send_welcome.apply_async((1,), ignore_result=True)
    assert qstash_mock.calls.call_count == 1
    assert result.ignored is True
    assert result.get() is None
    assert qstash_mock.calls.call_count == 1  # get() asked nothing


def test_ignore_result_task_attribute(app: Celery, qstash_mock: respx.MockRouter) -> None:
    result = send_ignored.delay(1)
    assert result.ignored is True
    assert result.get() is None


def test_result_not_ignored_by_default(app: Celery, qstash_mock: respx.MockRouter) -> None:
    assert send_welcome.delay(1).ignored is False


def test_result_carries_task_id_and_message_id(app: Celery, qstash_mock: respx.MockRouter) -> None:
    result = send_welcome.apply_async((1,), task_id="t-123")
    assert isinstance(result, QStashAsyncResult)
    assert result.id == "t-123"
    assert result.task_id == "t-123"
    assert result.message_id == "msg_1"
    assert "t-123" in repr(result) and "msg_1" in repr(result)


def test_bound_task_sees_its_task_id(app: Celery, qstash_mock: respx.MockRouter) -> None:
    result = send_bound.apply_async((1,), task_id="bound-id")
    assert seen_ids == ["bound-id"]
    assert result.id == "bound-id"
    generated = send_bound.delay(2)
    assert seen_ids[1] == generated.id
    assert send_bound.request.id is None  # the request context was popped again


def test_delay_on_commit_without_django_calls_through(
    app: Celery, qstash_mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Django not importable at all
    monkeypatch.setitem(sys.modules, "django", None)
    monkeypatch.setitem(sys.modules, "django.conf", None)
    monkeypatch.setitem(sys.modules, "django.db", None)
    assert send_welcome.delay_on_commit(5) is None
    request = only_request(qstash_mock)
    assert body(request)["subject"] == "Welcome #5"


def test_delay_on_commit_with_django_installed_but_unused(app: Celery, qstash_mock: respx.MockRouter) -> None:
    # Django may be installed (or configured by another test): no open transaction -> sent now
    assert send_welcome.delay_on_commit(5) is None
    request = only_request(qstash_mock)
    assert body(request)["subject"] == "Welcome #5"


def test_apply_async_on_commit_without_django_calls_through(app: Celery, qstash_mock: respx.MockRouter) -> None:
    send_welcome.apply_async_on_commit((6,), countdown=3)
    request = only_request(qstash_mock)
    assert request.headers["Upstash-Delay"] == "3s"


def test_bulk_email_goes_to_bulk_endpoint(app: Celery, qstash_mock: respx.MockRouter) -> None:
    send_newsletter.delay(["a@example.com", "b@example.com"])
    request = only_request(qstash_mock)
    assert request.url.path == BULK_PATH
    assert body(request)["recipients"] == [
        {"email": "a@example.com", "dynamicData": {"n": 0}},
        {"email": "b@example.com", "dynamicData": {"n": 1}},
    ]


def test_autosend_base_url_changes_the_destination(app: Celery, qstash_mock: respx.MockRouter) -> None:
    app.conf.autosend_base_url = "https://autosend.internal.example.com/"
    send_welcome.delay(1)
    send_newsletter.delay(["a@example.com"])
    paths = [c.request.url.path for c in qstash_mock.calls]
    assert paths == [
        "/v2/publish/https://autosend.internal.example.com/v1/mails/send",
        "/v2/publish/https://autosend.internal.example.com/v1/mails/bulk",
    ]


def test_settings_are_read_at_call_time(app: Celery, qstash_mock: respx.MockRouter) -> None:
    send_welcome.delay(1)
    app.conf.autosend_api_key = "a-different-key-1234"
    send_welcome.delay(1)
    keys = [c.request.headers["Upstash-Forward-Authorization"] for c in qstash_mock.calls]
    assert keys[1] == "Bearer a-different-key-1234"
    assert keys[0] != keys[1]


# --- configuration -----------------------------------------------------------------------


def test_missing_token_names_the_setting_and_publishes_nothing(app: Celery, qstash_mock: respx.MockRouter) -> None:
    app.conf.qstash_token = None
    with pytest.raises(ConfigurationError) as info:
        send_welcome.delay(1)
    assert info.value.setting == "qstash_token"
    assert "qstash_token" in str(info.value) and "QSTASH_TOKEN" in str(info.value)
    assert qstash_mock.calls.call_count == 0


def test_missing_api_key_names_the_setting_and_publishes_nothing(app: Celery, qstash_mock: respx.MockRouter) -> None:
    app.conf.autosend_api_key = None
    with pytest.raises(ConfigurationError) as info:
        send_welcome.delay(1)
    assert info.value.setting == "autosend_api_key"
    assert "AUTOSEND_API_KEY" in str(info.value)
    assert qstash_mock.calls.call_count == 0


def test_env_var_fallback(app: Celery, qstash_mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch) -> None:
    app.conf.update(qstash_token=None, qstash_url=None, autosend_api_key=None)
    monkeypatch.setenv("QSTASH_TOKEN", "env-token-ABCDEF")
    monkeypatch.setenv("QSTASH_URL", "http://qstash.test")
    monkeypatch.setenv("AUTOSEND_API_KEY", "env-key-123456")
    monkeypatch.setenv("AUTOSEND_BASE_URL", "https://env.autosend.example.com")
    send_welcome.delay(1)
    request = only_request(qstash_mock)
    assert request.headers["Authorization"] == "Bearer env-token-ABCDEF"
    assert request.headers["Upstash-Forward-Authorization"] == "Bearer env-key-123456"
    assert request.url.path == "/v2/publish/https://env.autosend.example.com/v1/mails/send"


def test_celery_conf_wins_over_env(app: Celery, qstash_mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch, qstash_token: str) -> None:
    monkeypatch.setenv("QSTASH_TOKEN", "env-token-ABCDEF")
    send_welcome.delay(1)
    assert only_request(qstash_mock).headers["Authorization"] == f"Bearer {qstash_token}"


def test_uppercase_conf_keys_work(make_app: Callable[..., Celery], qstash_mock: respx.MockRouter) -> None:
    app = make_app()
    app.conf.update(qstash_token=None, autosend_api_key=None)
    app.conf.update(QSTASH_TOKEN="upper-token-1234", AUTOSEND_API_KEY="upper-key-1234")
    send_welcome.delay(1)
    assert only_request(qstash_mock).headers["Authorization"] == "Bearer upper-token-1234"


def test_default_qstash_url_is_upstash(app: Celery) -> None:
    app.conf.qstash_url = None
    assert load_settings(app.conf).qstash_url == "https://qstash.upstash.io"


@pytest.mark.parametrize("setting", ["qstash_url", "autosend_base_url"])
def test_non_http_urls_rejected(app: Celery, qstash_mock: respx.MockRouter, setting: str) -> None:
    app.conf[setting] = "ftp://example.com"
    with pytest.raises(ConfigurationError) as info:
        send_welcome.delay(1)
    assert info.value.setting == setting
    assert qstash_mock.calls.call_count == 0


def test_qstash_dev_points_at_the_local_emulator(app: Celery, monkeypatch: pytest.MonkeyPatch) -> None:
    app.conf.update(qstash_token=None, qstash_url=None, autosend_api_key=None)
    monkeypatch.setenv("QSTASH_DEV", "true")
    with respx.mock(assert_all_called=True, assert_all_mocked=True) as mock:
        route = mock.post(url__startswith="http://127.0.0.1:8080/v2/publish/").mock(
            return_value=httpx.Response(200, json={"messageId": "msg_dev"})
        )
        result = send_welcome.delay(1)
    assert route.call_count == 1
    request = route.calls.last.request
    assert str(request.url) == "http://127.0.0.1:8080/v2/publish/https://api.autosend.com/v1/mails/send"
    assert request.headers["Authorization"] == f"Bearer {DEV_TOKEN}"
    assert request.headers["Upstash-Forward-Authorization"] == f"Bearer {DEV_AUTOSEND_API_KEY}"
    assert result.message_id == "msg_dev"


def test_qstash_dev_explicit_settings_still_win(app: Celery, qstash_mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch, qstash_token: str) -> None:
    monkeypatch.setenv("QSTASH_DEV", "1")
    send_welcome.delay(1)
    request = only_request(qstash_mock)
    assert request.url.host == "qstash.test"
    assert request.headers["Authorization"] == f"Bearer {qstash_token}"


def test_bad_qstash_dev_flag_rejected(app: Celery, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QSTASH_DEV", "maybe")
    with pytest.raises(ConfigurationError) as info:
        load_settings(app.conf)
    assert info.value.setting == "qstash_dev"


# --- errors from QStash ------------------------------------------------------------------


@pytest.fixture
def qstash_says() -> Iterator[Callable[[int, Any], respx.Route]]:
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as mock:

        def answer(status: int, payload: Any) -> respx.Route:
            response = httpx.Response(status, json=payload) if not isinstance(payload, str) else httpx.Response(status, text=payload)
            return mock.post(url__startswith="http://qstash.test/v2/").mock(return_value=response)

        yield answer


def test_400_raises_publish_error_with_status_and_text(app: Celery, qstash_says: Any) -> None:
    route = qstash_says(400, {"error": "invalid destination url"})
    with pytest.raises(PublishError) as info:
        send_welcome.apply_async((1,), task_id="t-400")
    assert route.call_count == 1  # a 4xx is not retried
    assert info.value.status == 400
    assert info.value.error == "invalid destination url"
    assert "HTTP 400" in str(info.value)
    assert "invalid destination url" in str(info.value)
    assert "t-400" in str(info.value)


def test_publish_error_never_shows_secrets(app: Celery, qstash_says: Any, qstash_token: str, autosend_api_key: str) -> None:
    qstash_says(401, {"error": f"token {qstash_token} rejected for header Bearer {autosend_api_key}"})
    with pytest.raises(PublishError) as info:
        send_welcome.delay(1)
    for text in (str(info.value), repr(info.value), info.value.error or "", repr(info.value.args)):
        assert qstash_token not in text
        assert autosend_api_key not in text
    assert info.value.status == 401
    assert "***" in (info.value.error or "")


def test_non_json_error_body(app: Celery, qstash_says: Any) -> None:
    qstash_says(403, "forbidden, plain text")
    with pytest.raises(PublishError) as info:
        send_welcome.delay(1)
    assert info.value.status == 403
    assert info.value.error == "forbidden, plain text"


def test_publish_error_is_raised_after_the_before_signal_only(app: Celery, qstash_says: Any) -> None:
    qstash_says(400, {"error": "bad"})
    fired: list[str] = []

    def after(sender: Any = None, **kwargs: Any) -> None:
        fired.append(sender)

    after_task_publish.connect(after, weak=False)
    try:
        with pytest.raises(PublishError):
            send_welcome.delay(1)
    finally:
        after_task_publish.disconnect(after)
    assert fired == []


# --- no secret anywhere ------------------------------------------------------------------


def test_no_secret_in_reprs_errors_or_logs(
    app: Celery,
    qstash_mock: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    qstash_token: str,
    autosend_api_key: str,
) -> None:
    secrets = (qstash_token, autosend_api_key)
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []

    settings = load_settings(app.conf)
    texts += [repr(settings), str(settings)]
    plan = plan_publish(task=TaskAttrs(name="t"), task_id="x", options={}, settings=settings, now=0.0)
    request = plan.request(welcome(1), settings)
    assert request.authorization == f"Bearer {autosend_api_key}"  # it is there, just not shown
    texts += [repr(plan), repr(request), str(request)]

    result = send_welcome.apply_async((1,), countdown=5)
    texts += [repr(result), str(result), repr(result.__dict__.get("message_id"))]

    app.conf.qstash_token = None
    with pytest.raises(ConfigurationError) as missing_token:
        send_welcome.delay(1)
    app.conf.qstash_token = qstash_token
    app.conf.autosend_api_key = None
    with pytest.raises(ConfigurationError) as missing_key:
        send_welcome.delay(1)
    texts += [str(missing_token.value), str(missing_key.value)]

    texts += [caplog.text, *(r.getMessage() for r in caplog.records)]
    captured = capsys.readouterr()
    texts += [captured.out, captured.err]
    assert caplog.records, "expected some log output to check (httpx logs each request)"
    for text in texts:
        for secret in secrets:
            assert secret not in text


def test_a_non_ascii_task_name_travels_percent_encoded(app: Celery, qstash_mock: respx.MockRouter) -> None:
    @app.task(base=QStashTask, name="emails.envoyer_bienvenüe", shared=False)
    def envoyer(user_id: int) -> Email:
        return welcome(user_id)

    envoyer.delay(1)
    envoyer.apply_async((2,), shadow="Bienvenüe 100%")
    first, second = (call.request for call in qstash_mock.calls)
    assert first.headers["Upstash-Forward-X-Celery-Task"] == "emails.envoyer_bienven%C3%BCe"
    assert second.headers["Upstash-Forward-X-Celery-Task"] == "Bienven%C3%BCe 100%25"


def test_first_calls_from_several_threads_on_a_lazy_app_all_publish() -> None:
    # Celery registers a lazily created task before binding it, so a second thread's first
    # call could take it unbound (no request stack: AttributeError in push_request). Web
    # servers make exactly these concurrent first calls right after start-up.
    import threading

    from celery_qstash import QStashTask

    errors: list[BaseException] = []
    published = 0
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(url__regex=r".*/v2/publish/.*").mock(
            return_value=httpx.Response(201, json={"messageId": "msg_1"})
        )
        for trial in range(30):
            app = Celery(f"lazy{trial}")
            app.conf.qstash_dev = True

            def body(user_id: int) -> Email:
                return welcome(user_id)

            task = app.task(name=f"lazy.send{trial}", base=QStashTask, shared=False)(body)
            barrier = threading.Barrier(4)

            def call(task: Any = task, barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                try:
                    task.delay(1)
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=call) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        published = route.call_count
    assert errors == []
    assert published == 30 * 4
