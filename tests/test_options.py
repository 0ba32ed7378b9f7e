"""Every row of the option tables, checked by value on the HTTP request the SDK sends."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import respx
from celery import Celery, chain, states
from celery.exceptions import TaskRevokedError

from celery_qstash import (
    CeleryQStashWarning,
    ConfigurationError,
    Email,
    QStashAsyncResult,
    UnsupportedOption,
    autosend_task,
)
from celery_qstash.publish.options import APPLY_ASYNC_OPTIONS, TASK_ATTRIBUTES, Outcome

SEND_PATH = "/v2/publish/https://api.autosend.com/v1/mails/send"
FUTURE = datetime(2031, 5, 17, 9, 30, 0, tzinfo=timezone.utc)
FUTURE_TS = int(FUTURE.timestamp())


def welcome(user_id: int) -> Email:
    return Email(
        to="jane@example.com",
        from_="Shop <shop@example.com>",
        subject=f"Welcome #{user_id}",
        html="<p>Hello</p>",
    )


@autosend_task
def send_welcome(user_id: int) -> Email:
    return welcome(user_id)


@autosend_task(max_retries=7)
def send_seven_retries(user_id: int) -> Email:
    return welcome(user_id)


@autosend_task(max_retries=0)
def send_no_retries(user_id: int) -> Email:
    return welcome(user_id)


@autosend_task(max_retries=None)
def send_retry_forever(user_id: int) -> Email:
    return welcome(user_id)


@autosend_task(default_retry_delay=30)
def send_delay_30(user_id: int) -> Email:
    return welcome(user_id)


@autosend_task(retry_backoff=True)
def send_backoff_true(user_id: int) -> Email:
    return welcome(user_id)


@autosend_task(retry_backoff=5, retry_jitter=False)
def send_backoff_5(user_id: int) -> Email:
    return welcome(user_id)


@autosend_task(retry_backoff=2, retry_backoff_max=60, retry_jitter=False)
def send_backoff_max_60(user_id: int) -> Email:
    return welcome(user_id)


@autosend_task(rate_limit="50/m")
def send_rate_50m(user_id: int) -> Email:
    return welcome(user_id)


@autosend_task(rate_limit="10/s")
def send_rate_10s(user_id: int) -> Email:
    return welcome(user_id)


@autosend_task(time_limit=45)
def send_time_limit_45(user_id: int) -> Email:
    return welcome(user_id)


@autosend_task(autoretry_for=(ConnectionError,), retry_kwargs={"max_retries": 6, "countdown": 30})
def send_autoretry(user_id: int) -> Email:
    return welcome(user_id)


@autosend_task(retry_kwargs={"max_retries": 2, "countdown": 30}, retry_backoff=3, retry_jitter=False)
def send_kwargs_and_backoff(user_id: int) -> Email:
    return welcome(user_id)


@autosend_task(retry_kwargs={"exc": ValueError, "max_retries": 1})
def send_bad_retry_kwargs(user_id: int) -> Email:
    return welcome(user_id)


@autosend_task(acks_late=True)
def send_acks_late(user_id: int) -> Email:
    return welcome(user_id)


# --- helpers -----------------------------------------------------------------------------


def only_request(mock: respx.MockRouter) -> httpx.Request:
    assert mock.calls.call_count == 1, f"expected one request, got {mock.calls.call_count}"
    return mock.calls.last.request


def publish(
    mock: respx.MockRouter, task: Any = None, *, args: tuple[Any, ...] = (1,), **options: Any
) -> tuple[httpx.Request, Any]:
    result = (task or send_welcome).apply_async(args, **options)
    return only_request(mock), result


@pytest.fixture
def recorded() -> Iterator[list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def ours(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, CeleryQStashWarning)]


def fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


# --- defaults of every message ---------------------------------------------------------


def test_default_message(app: Celery, qstash_mock: respx.MockRouter, autosend_api_key: str) -> None:
    request, result = publish(qstash_mock)
    assert request.method == "POST"
    assert request.url.host == "qstash.test"
    assert request.url.path == SEND_PATH
    h = request.headers
    assert h["Content-Type"] == "application/json"
    assert h["Upstash-Forward-Authorization"] == f"Bearer {autosend_api_key}"
    assert h["Upstash-Redact-Fields"] == "header[Authorization]"
    assert h["Upstash-Retries"] == "3"  # Celery's default max_retries
    assert "Upstash-Retry-Delay" not in h  # QStash's own backoff unless the task sets one
    assert "Upstash-Delay" not in h
    assert "Upstash-Not-Before" not in h
    assert "Upstash-Timeout" not in h
    assert h["Upstash-Forward-X-Celery-Task"] == "test_options.send_welcome"
    assert h["Upstash-Deduplication-Id"] == result.id
    assert h["Upstash-Label"] == result.id
    assert h["Upstash-Forward-Idempotency-Key"] == result.id
    assert json.loads(request.content) == {
        "to": {"email": "jane@example.com"},
        "from": {"email": "shop@example.com", "name": "Shop"},
        "subject": "Welcome #1",
        "html": "<p>Hello</p>",
    }


def test_redact_can_be_switched_off(app: Celery, qstash_mock: respx.MockRouter) -> None:
    app.conf.qstash_redact_authorization = False
    request, _ = publish(qstash_mock)
    assert "Upstash-Redact-Fields" not in request.headers
    assert request.headers["Upstash-Forward-Authorization"].startswith("Bearer ")


# --- countdown / eta ---------------------------------------------------------------------


def test_countdown_is_upstash_delay(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, countdown=90)
    assert request.url.path == SEND_PATH
    assert request.headers["Upstash-Delay"] == "90s"
    assert "Upstash-Not-Before" not in request.headers


def test_fractional_countdown_rounds_up(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, countdown=1.2)
    assert request.headers["Upstash-Delay"] == "2s"


def test_zero_countdown_means_now(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, countdown=0)
    assert "Upstash-Delay" not in request.headers


def test_non_numeric_countdown_rejected(app: Celery, qstash_mock: respx.MockRouter) -> None:
    with pytest.raises(UnsupportedOption) as info:
        send_welcome.apply_async((1,), countdown="soon")
    assert info.value.option == "countdown"
    assert qstash_mock.calls.call_count == 0


def test_eta_datetime_is_not_before(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, eta=FUTURE)
    assert request.headers["Upstash-Not-Before"] == str(FUTURE_TS)
    assert "Upstash-Delay" not in request.headers


def test_eta_other_timezone_converted(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, eta=FUTURE.astimezone(timezone(timedelta(hours=-5))))
    assert request.headers["Upstash-Not-Before"] == str(FUTURE_TS)


def test_eta_iso_string(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, eta="2031-05-17T11:30:00+02:00")
    assert request.headers["Upstash-Not-Before"] == str(FUTURE_TS)


def test_eta_iso_string_with_z(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, eta="2031-05-17T09:30:00Z")
    assert request.headers["Upstash-Not-Before"] == str(FUTURE_TS)


def test_naive_eta_means_utc(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, eta=datetime(2031, 5, 17, 9, 30, 0))
    assert request.headers["Upstash-Not-Before"] == str(FUTURE_TS)


def test_naive_iso_eta_means_utc(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, eta="2031-05-17T09:30:00")
    assert request.headers["Upstash-Not-Before"] == str(FUTURE_TS)


def test_eta_fraction_of_a_second_rounds_up(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, eta=FUTURE + timedelta(milliseconds=200))
    assert request.headers["Upstash-Not-Before"] == str(FUTURE_TS + 1)


def test_invalid_eta_rejected(app: Celery, qstash_mock: respx.MockRouter) -> None:
    with pytest.raises(UnsupportedOption) as info:
        send_welcome.apply_async((1,), eta="next tuesday")
    assert info.value.option == "eta"
    assert qstash_mock.calls.call_count == 0


def test_countdown_wins_over_eta(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, countdown=30, eta=FUTURE)
    assert request.headers["Upstash-Delay"] == "30s"
    assert "Upstash-Not-Before" not in request.headers


# --- expires -----------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:celery-qstash. expires:celery_qstash.CeleryQStashWarning")
def test_expires_in_the_past_publishes_nothing_and_is_revoked(app: Celery, qstash_mock: respx.MockRouter) -> None:
    result = send_welcome.apply_async((1,), expires=datetime(2001, 1, 1, tzinfo=timezone.utc))
    assert qstash_mock.calls.call_count == 0
    assert isinstance(result, QStashAsyncResult)
    assert result.state == states.REVOKED
    assert isinstance(result.result, TaskRevokedError)
    with pytest.raises(TaskRevokedError):
        result.get()


@pytest.mark.filterwarnings("ignore:celery-qstash. expires:celery_qstash.CeleryQStashWarning")
def test_expires_before_eta_publishes_nothing(app: Celery, qstash_mock: respx.MockRouter) -> None:
    result = send_welcome.apply_async((1,), eta=FUTURE, expires=FUTURE - timedelta(minutes=1))
    assert qstash_mock.calls.call_count == 0
    assert result.state == states.REVOKED


@pytest.mark.filterwarnings("ignore:celery-qstash. expires:celery_qstash.CeleryQStashWarning")
def test_expires_seconds_shorter_than_countdown_publishes_nothing(app: Celery, qstash_mock: respx.MockRouter) -> None:
    result = send_welcome.apply_async((1,), countdown=120, expires=60)
    assert qstash_mock.calls.call_count == 0
    assert result.state == states.REVOKED


def test_expires_after_eta_is_published_with_one_warning(
    app: Celery, qstash_mock: respx.MockRouter, recorded: list[warnings.WarningMessage]
) -> None:
    send_welcome.apply_async((1,), eta=FUTURE, expires=FUTURE + timedelta(hours=1))
    send_welcome.apply_async((2,), expires=3600)
    assert qstash_mock.calls.call_count == 2
    assert qstash_mock.calls[0].request.headers["Upstash-Not-Before"] == str(FUTURE_TS)
    assert len([m for m in ours(recorded) if ": expires:" in m]) == 1


# --- queue -------------------------------------------------------------------------------


def test_queue_uses_enqueue(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, result = publish(qstash_mock, queue="emails")
    assert qstash_mock["enqueue"].call_count == 1
    assert qstash_mock["publish"].call_count == 0
    assert request.url.path == "/v2/enqueue/emails/https://api.autosend.com/v1/mails/send"
    h = request.headers
    assert "Upstash-Delay" not in h
    assert "Upstash-Not-Before" not in h
    assert "Upstash-Flow-Control-Key" not in h  # enqueue takes no flow control
    assert h["Upstash-Deduplication-Id"] == result.id
    assert h["Upstash-Forward-Authorization"].startswith("Bearer ")
    assert h["Upstash-Redact-Fields"] == "header[Authorization]"


def test_kombu_queue_object_accepted(app: Celery, qstash_mock: respx.MockRouter) -> None:
    from kombu import Queue

    request, _ = publish(qstash_mock, queue=Queue("emails"))
    assert request.url.path.startswith("/v2/enqueue/emails/")


def test_queue_with_countdown_publishes_with_queue_flow_control(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, queue="emails", countdown=60)
    assert qstash_mock["enqueue"].call_count == 0
    assert request.url.path == SEND_PATH
    assert request.headers["Upstash-Delay"] == "60s"
    assert request.headers["Upstash-Flow-Control-Key"] == "queue.emails"
    # One at a time, and still at AutoSend's pace.
    assert request.headers["Upstash-Flow-Control-Value"] == "parallelism=1, rate=1, period=2s"


def test_queue_with_countdown_without_the_default_rate(app: Celery, qstash_mock: respx.MockRouter) -> None:
    app.conf.autosend_rate_limit = "off"
    request, _ = publish(qstash_mock, queue="emails", countdown=60)
    assert request.headers["Upstash-Flow-Control-Value"] == "parallelism=1"


def test_queue_with_eta_publishes_with_queue_flow_control(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, queue="emails", eta=FUTURE)
    assert request.url.path == SEND_PATH
    assert request.headers["Upstash-Not-Before"] == str(FUTURE_TS)
    assert request.headers["Upstash-Flow-Control-Key"] == "queue.emails"


def test_queue_with_rate_limited_task_rejected(app: Celery, qstash_mock: respx.MockRouter) -> None:
    with pytest.raises(UnsupportedOption) as info:
        send_rate_50m.apply_async((1,), queue="emails")
    assert info.value.option == "rate_limit"
    assert qstash_mock.calls.call_count == 0


def test_queue_with_countdown_and_rate_limit_combines_both(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, send_rate_50m, queue="emails", countdown=5)
    assert request.headers["Upstash-Flow-Control-Key"] == "queue.emails"
    assert request.headers["Upstash-Flow-Control-Value"] == "parallelism=1, rate=50, period=60s"


@pytest.mark.parametrize("name", ["bad queue", "emails/x", "", "ü"])
def test_invalid_queue_name_rejected(app: Celery, qstash_mock: respx.MockRouter, name: str) -> None:
    with pytest.raises(UnsupportedOption) as info:
        send_welcome.apply_async((1,), queue=name)
    assert info.value.option == "queue"
    assert qstash_mock.calls.call_count == 0


# --- task_id -----------------------------------------------------------------------------


def test_task_id_is_dedup_id_label_and_idempotency_key(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, result = publish(qstash_mock, task_id="order-42-welcome")
    assert result.id == "order-42-welcome"
    h = request.headers
    assert h["Upstash-Deduplication-Id"] == "order-42-welcome"
    assert h["Upstash-Label"] == "order-42-welcome"
    assert h["Upstash-Forward-Idempotency-Key"] == "order-42-welcome"


def test_generated_task_ids_are_unique(app: Celery, qstash_mock: respx.MockRouter) -> None:
    first = send_welcome.delay(1)
    second = send_welcome.delay(1)
    assert first.id != second.id
    ids = [c.request.headers["Upstash-Deduplication-Id"] for c in qstash_mock.calls]
    assert ids == [first.id, second.id]


# --- headers -----------------------------------------------------------------------------


def test_headers_are_forwarded(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, headers={"X-Tenant": "acme", "X-Trace": {"span": 1}, "X-Count": 3})
    h = request.headers
    assert h["Upstash-Forward-X-Tenant"] == "acme"
    assert h["Upstash-Forward-X-Trace"] == '{"span":1}'
    assert h["Upstash-Forward-X-Count"] == "3"


@pytest.mark.parametrize("name", ["Authorization", "authorization", "Content-Type", "Idempotency-Key", "Host", "Content-Length"])
def test_reserved_forward_headers_rejected(app: Celery, qstash_mock: respx.MockRouter, name: str) -> None:
    with pytest.raises(UnsupportedOption) as info:
        send_welcome.apply_async((1,), headers={name: "x"})
    assert info.value.option == "headers"
    assert qstash_mock.calls.call_count == 0


def test_header_value_with_newline_rejected(app: Celery, qstash_mock: respx.MockRouter) -> None:
    with pytest.raises(UnsupportedOption, match="CR or LF"):
        send_welcome.apply_async((1,), headers={"X-Evil": "a\r\nUpstash-Delay: 1s"})
    assert qstash_mock.calls.call_count == 0


def test_invalid_header_name_rejected(app: Celery, qstash_mock: respx.MockRouter) -> None:
    with pytest.raises(UnsupportedOption):
        send_welcome.apply_async((1,), headers={"Bad Name": "x"})
    assert qstash_mock.calls.call_count == 0


def test_headers_must_be_a_mapping(app: Celery, qstash_mock: respx.MockRouter) -> None:
    with pytest.raises(UnsupportedOption):
        send_welcome.apply_async((1,), headers=[("X-A", "1")])
    assert qstash_mock.calls.call_count == 0


# --- link / link_error / chain / chord ------------------------------------------------


def test_link_url_is_callback(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, link="https://app.example.com/hooks/sent")
    assert request.headers["Upstash-Callback"] == "https://app.example.com/hooks/sent"
    assert "Upstash-Failure-Callback" not in request.headers


def test_link_error_url_is_failure_callback(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, link_error="https://app.example.com/hooks/failed")
    assert request.headers["Upstash-Failure-Callback"] == "https://app.example.com/hooks/failed"
    assert "Upstash-Callback" not in request.headers


def test_link_as_single_item_list(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, link=["https://app.example.com/hooks/sent"])
    assert request.headers["Upstash-Callback"] == "https://app.example.com/hooks/sent"


@pytest.mark.parametrize("option", ["link", "link_error"])
def test_link_signature_rejected(app: Celery, qstash_mock: respx.MockRouter, option: str) -> None:
    with pytest.raises(UnsupportedOption) as info:
        send_welcome.apply_async((1,), **{option: send_welcome.s(2)})
    assert info.value.option == option
    assert "https://" in str(info.value)
    assert qstash_mock.calls.call_count == 0


@pytest.mark.parametrize("value", ["ftp://x.example.com/hook", "/relative/hook", ["https://a.example.com", "https://b.example.com"]])
def test_link_must_be_one_http_url(app: Celery, qstash_mock: respx.MockRouter, value: Any) -> None:
    with pytest.raises(UnsupportedOption) as info:
        send_welcome.apply_async((1,), link=value)
    assert info.value.option == "link"
    assert qstash_mock.calls.call_count == 0


@pytest.mark.parametrize("option", ["chain", "chord"])
def test_chain_and_chord_options_rejected(app: Celery, qstash_mock: respx.MockRouter, option: str) -> None:
    with pytest.raises(UnsupportedOption) as info:
        send_welcome.apply_async((1,), **{option: [send_welcome.s(2)]})
    assert info.value.option == option
    assert qstash_mock.calls.call_count == 0


def test_celery_chain_rejected(app: Celery, qstash_mock: respx.MockRouter) -> None:
    with pytest.raises(UnsupportedOption) as info:
        chain(send_welcome.s(1), send_welcome.si(2)).apply_async()
    assert info.value.option == "chain"
    assert qstash_mock.calls.call_count == 0


# --- ignored options ---------------------------------------------------------------------

IGNORED = {
    "priority": 5,
    "routing_key": "emails",
    "exchange": "default",
    "compression": "zlib",
    "producer": object(),
    "connection": object(),
    "add_to_parent": True,
}


@pytest.mark.parametrize("option", sorted(IGNORED))
def test_ignored_option_published_with_one_warning_per_process(
    app: Celery, qstash_mock: respx.MockRouter, recorded: list[warnings.WarningMessage], option: str
) -> None:
    send_welcome.apply_async((1,), **{option: IGNORED[option]})
    send_welcome.apply_async((2,), **{option: IGNORED[option]})
    assert qstash_mock.calls.call_count == 2
    about = [m for m in ours(recorded) if m.startswith(f"celery-qstash: {option}: ")]
    assert len(about) == 1
    assert "ignored" in about[0]


def test_each_ignored_option_warns_separately(
    app: Celery, qstash_mock: respx.MockRouter, recorded: list[warnings.WarningMessage]
) -> None:
    send_welcome.apply_async((1,), **IGNORED)
    send_welcome.apply_async((1,), **IGNORED)
    assert qstash_mock.calls.call_count == 2
    warned = sorted(m.split(": ")[1] for m in ours(recorded))
    assert warned == sorted(IGNORED)


def test_ignored_option_does_not_change_the_request(app: Celery, qstash_mock: respx.MockRouter) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CeleryQStashWarning)
        plain = send_welcome.apply_async((1,), task_id="same")
        fancy = send_welcome.apply_async((1,), task_id="same", priority=9, routing_key="x", exchange="y")
    assert plain.id == fancy.id
    first, second = (c.request for c in qstash_mock.calls)
    assert first.url == second.url
    assert first.content == second.content
    assert dict(first.headers) == dict(second.headers)


# --- serializer / unknown options --------------------------------------------------------


def test_json_serializer_accepted(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, serializer="json")
    assert request.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("serializer", ["pickle", "yaml", "msgpack"])
def test_non_json_serializer_rejected(app: Celery, qstash_mock: respx.MockRouter, serializer: str) -> None:
    with pytest.raises(UnsupportedOption) as info:
        send_welcome.apply_async((1,), serializer=serializer)
    assert info.value.option == "serializer"
    assert qstash_mock.calls.call_count == 0


def test_app_level_non_json_serializer_rejected(app: Celery, qstash_mock: respx.MockRouter) -> None:
    app.conf.task_serializer = "pickle"
    with pytest.raises(UnsupportedOption) as info:
        send_welcome.delay(1)
    assert info.value.option == "serializer"
    assert qstash_mock.calls.call_count == 0


def test_unknown_option_rejected(app: Celery, qstash_mock: respx.MockRouter) -> None:
    with pytest.raises(UnsupportedOption) as info:
        send_welcome.apply_async((1,), cuontdown=10)
    assert info.value.option == "cuontdown"
    assert "headers=" in str(info.value)
    assert qstash_mock.calls.call_count == 0


def test_internal_canvas_options_accepted_silently(
    app: Celery, qstash_mock: respx.MockRouter, recorded: list[warnings.WarningMessage]
) -> None:
    request, _ = publish(
        qstash_mock, group_id="g1", group_index=0, root_id="r", parent_id="p", reply_to="x", retries=0, origin="o"
    )
    assert request.url.path == SEND_PATH
    assert ours(recorded) == []


def test_shadow_is_the_display_name(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, shadow="welcome-email")
    assert request.headers["Upstash-Forward-X-Celery-Task"] == "welcome-email"


def test_ignore_result_option(app: Celery, qstash_mock: respx.MockRouter) -> None:
    _, result = publish(qstash_mock, ignore_result=True)
    assert result.ignored is True
    assert result.get() is None


def test_time_limit_option_is_upstash_timeout(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, time_limit=12.5)
    assert request.headers["Upstash-Timeout"] == "13s"


@pytest.mark.parametrize("value", [0, -1, "10"])
def test_bad_time_limit_rejected(app: Celery, qstash_mock: respx.MockRouter, value: Any) -> None:
    with pytest.raises(UnsupportedOption) as info:
        send_welcome.apply_async((1,), time_limit=value)
    assert info.value.option == "time_limit"
    assert qstash_mock.calls.call_count == 0


def test_soft_time_limit_is_ignored_with_warning(
    app: Celery, qstash_mock: respx.MockRouter, recorded: list[warnings.WarningMessage]
) -> None:
    request, _ = publish(qstash_mock, soft_time_limit=5)
    assert "Upstash-Timeout" not in request.headers
    assert any(m.startswith("celery-qstash: soft_time_limit: ") for m in ours(recorded))


def test_retry_and_retry_policy_do_not_reach_qstash_headers(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, retry=True, retry_policy={"max_retries": 1})
    assert request.headers["Upstash-Retries"] == "3"  # the task's, not the publish policy's


# --- task attributes -----------------------------------------------------------------------


def test_max_retries_is_upstash_retries(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, send_seven_retries)
    assert request.headers["Upstash-Retries"] == "7"


def test_max_retries_zero(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, send_no_retries)
    assert request.headers["Upstash-Retries"] == "0"


def test_max_retries_none_leaves_qstash_default_and_warns(
    app: Celery, qstash_mock: respx.MockRouter, recorded: list[warnings.WarningMessage]
) -> None:
    request, _ = publish(qstash_mock, send_retry_forever)
    assert "Upstash-Retries" not in request.headers
    assert any(m.startswith("celery-qstash: max_retries: ") for m in ours(recorded))


def test_default_retry_delay_is_constant_ms(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, send_delay_30)
    assert request.headers["Upstash-Retry-Delay"] == "30000"


def test_retry_backoff_true(
    app: Celery, qstash_mock: respx.MockRouter, recorded: list[warnings.WarningMessage]
) -> None:
    request, _ = publish(qstash_mock, send_backoff_true)
    assert request.headers["Upstash-Retry-Delay"] == "min(600000, 1000 * pow(2, retried))"
    # retry_jitter defaults to True and cannot be expressed: said once
    assert len([m for m in ours(recorded) if m.startswith("celery-qstash: retry_jitter: ")]) == 1


def test_retry_backoff_factor_5(
    app: Celery, qstash_mock: respx.MockRouter, recorded: list[warnings.WarningMessage]
) -> None:
    request, _ = publish(qstash_mock, send_backoff_5)
    assert request.headers["Upstash-Retry-Delay"] == "min(600000, 5000 * pow(2, retried))"
    assert ours(recorded) == []  # retry_jitter=False: nothing to warn about


def test_retry_backoff_max(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, send_backoff_max_60)
    assert request.headers["Upstash-Retry-Delay"] == "min(60000, 2000 * pow(2, retried))"


def test_retry_jitter_warns_once_per_process(
    app: Celery, qstash_mock: respx.MockRouter, recorded: list[warnings.WarningMessage]
) -> None:
    send_backoff_true.delay(1)
    send_backoff_true.delay(2)
    assert qstash_mock.calls.call_count == 2
    assert len([m for m in ours(recorded) if "retry_jitter" in m]) == 1


def test_default_autosend_flow_control(app: Celery, qstash_mock: respx.MockRouter, autosend_api_key: str) -> None:
    request, _ = publish(qstash_mock)
    key = request.headers["Upstash-Flow-Control-Key"]
    assert key == f"autosend.{fingerprint(autosend_api_key)}"
    assert autosend_api_key not in key
    assert request.headers["Upstash-Flow-Control-Value"] == "rate=1, period=2s"


def test_flow_control_key_differs_per_api_key(app: Celery, qstash_mock: respx.MockRouter) -> None:
    send_welcome.delay(1)
    app.conf.autosend_api_key = "another-autosend-key-0000"
    send_welcome.delay(1)
    first, second = (c.request.headers["Upstash-Flow-Control-Key"] for c in qstash_mock.calls)
    assert first != second
    assert first.startswith("autosend.") and second.startswith("autosend.")


@pytest.mark.parametrize("off", ["off", False, "none", "0"])
def test_default_flow_control_switched_off(app: Celery, qstash_mock: respx.MockRouter, off: Any) -> None:
    app.conf.autosend_rate_limit = off
    request, _ = publish(qstash_mock)
    assert "Upstash-Flow-Control-Key" not in request.headers
    assert "Upstash-Flow-Control-Value" not in request.headers


def test_default_flow_control_rate_configurable(app: Celery, qstash_mock: respx.MockRouter) -> None:
    app.conf.autosend_rate_limit = "10/s"
    request, _ = publish(qstash_mock)
    assert request.headers["Upstash-Flow-Control-Value"] == "rate=10, period=1s"


def test_default_flow_control_from_environment(
    app: Celery, qstash_mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOSEND_RATE_LIMIT", "off")
    request, _ = publish(qstash_mock)
    assert "Upstash-Flow-Control-Key" not in request.headers


def test_rate_limit_per_minute(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, send_rate_50m)
    assert request.headers["Upstash-Flow-Control-Key"] == "celery.test_options.send_rate_50m"
    assert request.headers["Upstash-Flow-Control-Value"] == "rate=50, period=60s"


def test_rate_limit_per_second(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, send_rate_10s)
    assert request.headers["Upstash-Flow-Control-Value"] == "rate=10, period=1s"


def test_rate_limit_replaces_default_even_when_default_is_off(app: Celery, qstash_mock: respx.MockRouter) -> None:
    app.conf.autosend_rate_limit = "off"
    request, _ = publish(qstash_mock, send_rate_50m)
    assert request.headers["Upstash-Flow-Control-Key"] == "celery.test_options.send_rate_50m"


def test_task_time_limit_is_upstash_timeout(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, send_time_limit_45)
    assert request.headers["Upstash-Timeout"] == "45s"


def test_call_time_limit_overrides_task_time_limit(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, send_time_limit_45, time_limit=10)
    assert request.headers["Upstash-Timeout"] == "10s"


# --- the tables themselves -----------------------------------------------------------------


def test_every_apply_async_row_is_covered_here() -> None:
    """A row added to the table without a test here fails this test."""
    tested_by_value = {
        "countdown", "eta", "expires", "queue", "task_id", "headers", "link", "link_error",
        "time_limit", "retry", "retry_policy", "ignore_result", "serializer", "shadow",
        "chain", "chord", "soft_time_limit", *IGNORED,
    }
    mapped_or_rejected = {
        name for name, rule in APPLY_ASYNC_OPTIONS.items() if rule.outcome in (Outcome.MAPPED, Outcome.REJECTED)
    }
    assert mapped_or_rejected <= tested_by_value
    ignored = {name for name, rule in APPLY_ASYNC_OPTIONS.items() if rule.outcome is Outcome.IGNORED}
    assert ignored >= set(IGNORED)
    assert set(TASK_ATTRIBUTES) == {
        "max_retries", "default_retry_delay", "retry_backoff", "retry_backoff_max",
        "retry_jitter", "rate_limit", "time_limit", "retry_kwargs", "autoretry_for", "acks_late",
    }


def test_retry_kwargs_map_like_celerys_autoretry(
    app: Celery, qstash_mock: respx.MockRouter, recorded: list[warnings.WarningMessage]
) -> None:
    request, _ = publish(qstash_mock, send_autoretry)
    assert request.headers["Upstash-Retries"] == "6"
    assert request.headers["Upstash-Retry-Delay"] == "30000"
    assert any("autoretry_for" in m for m in ours(recorded))


def test_retry_backoff_wins_over_retry_kwargs_countdown(app: Celery, qstash_mock: respx.MockRouter) -> None:
    request, _ = publish(qstash_mock, send_kwargs_and_backoff)
    assert request.headers["Upstash-Retries"] == "2"
    assert request.headers["Upstash-Retry-Delay"] == "min(600000, 3000 * pow(2, retried))"


def test_retry_kwargs_without_a_qstash_meaning_are_rejected(app: Celery, qstash_mock: respx.MockRouter) -> None:
    with pytest.raises(UnsupportedOption, match="retry_kwargs") as info:
        send_bad_retry_kwargs.delay(1)
    assert "exc" in str(info.value)
    assert qstash_mock.calls.call_count == 0


def test_acks_late_is_accepted_with_one_warning(
    app: Celery, qstash_mock: respx.MockRouter, recorded: list[warnings.WarningMessage]
) -> None:
    send_acks_late.delay(1)
    send_acks_late.delay(2)
    assert qstash_mock["publish"].call_count == 2
    assert sum("acks_late" in m for m in ours(recorded)) == 1


@pytest.mark.parametrize("task_id", ["has space", "a,b", "caf\u00e9", "x" * 257, "a\r\nX-Evil: 1"])
def test_a_task_id_that_cannot_be_a_header_or_label_is_rejected(
    app: Celery, qstash_mock: respx.MockRouter, task_id: str
) -> None:
    with pytest.raises(UnsupportedOption, match="task_id"):
        send_welcome.apply_async((1,), task_id=task_id)
    assert qstash_mock.calls.call_count == 0


@pytest.mark.parametrize("name", ["Upstash-Forward-Idempotency-Key", "upstash-forward-authorization", "Upstash-Delay"])
def test_forwarded_headers_cannot_smuggle_upstash_names(
    app: Celery, qstash_mock: respx.MockRouter, name: str
) -> None:
    with pytest.raises(UnsupportedOption, match="headers"):
        send_welcome.apply_async((1,), headers={name: "x"})
    assert qstash_mock.calls.call_count == 0


@pytest.mark.parametrize(
    "option",
    sorted(n for n, r in APPLY_ASYNC_OPTIONS.items() if r.outcome is Outcome.IGNORED and n not in IGNORED),
)
def test_other_ignored_rows_publish_and_warn(
    app: Celery, qstash_mock: respx.MockRouter, recorded: list[warnings.WarningMessage], option: str
) -> None:
    send_welcome.apply_async((1,), **{option: 1})
    assert qstash_mock.calls.call_count == 1
    assert [m for m in ours(recorded) if m.startswith(f"celery-qstash: {option}: ")]


@pytest.mark.parametrize("rule", [*APPLY_ASYNC_OPTIONS.values(), *TASK_ATTRIBUTES.values()])
def test_every_row_is_documented(rule: Any) -> None:
    assert rule.note.strip()
    assert rule.qstash.strip()
    if rule.outcome is Outcome.MAPPED and rule in APPLY_ASYNC_OPTIONS.values():
        assert rule.apply is not None



def test_retry_errors_in_the_retry_policy_warn_once(
    app: Celery, qstash_mock: respx.MockRouter, recorded: list[warnings.WarningMessage]
) -> None:
    send_welcome.apply_async((1,), retry_policy={"retry_errors": (OSError,)})
    send_welcome.apply_async((2,), retry_policy={"retry_errors": (OSError,)})
    assert qstash_mock["publish"].call_count == 2
    assert sum("retry_errors" in m for m in ours(recorded)) == 1


@pytest.mark.parametrize("url", ["https://a.example/\r\nX: y", "https://a.example/ x",
                                 "https://ä.example/", "https://", "https://[::1"])
def test_a_callback_url_that_cannot_be_a_header_is_refused_at_the_call_site(
    app: Celery, qstash_mock: respx.MockRouter, url: str
) -> None:
    # Found by tests/test_properties.py: a CR LF in link= reached Upstash-Callback (h11
    # refuses it only when sending; a mock, or a laxer client, sent the split header).
    with pytest.raises(UnsupportedOption, match=r"^link: "):
        send_welcome.apply_async((1,), link=url)
    assert qstash_mock["publish"].call_count == 0
    from celery_qstash.config import load_settings

    with pytest.raises(ConfigurationError, match="qstash_callback_url"):
        load_settings({"qstash_callback_url": url})


def test_a_refused_url_shows_no_credentials(app: Celery, qstash_mock: respx.MockRouter) -> None:
    with pytest.raises(UnsupportedOption) as refused:
        send_welcome.apply_async((1,), link="ftp://user:pw@x.example/?api_key=s3cret")
    assert "s3cret" not in str(refused.value) and "pw" not in str(refused.value)
