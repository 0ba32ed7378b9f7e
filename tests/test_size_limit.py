"""An email over QStash's message size limit is refused before publishing, with the
same typed error in production and in eager mode."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator

import pytest
import respx
from celery import Celery

from celery_qstash import ConfigurationError, Email, EmailValidationError, autosend_task
from celery_qstash.config import DEFAULT_MAX_MESSAGE_BYTES, load_settings
from celery_qstash.errors import MessageTooLarge
from celery_qstash.testing import outbox

MB = 1024 * 1024


@autosend_task
def send_big(size: int) -> Email:
    return Email(to="jane@example.com", from_="shop@example.com", subject="Big", html="x" * size)


def test_default_limit_is_qstashs_one_megabyte() -> None:
    assert DEFAULT_MAX_MESSAGE_BYTES == MB
    assert load_settings({}).max_message_bytes == MB


def test_a_20_mb_email_is_refused_before_publishing(app: Celery, qstash_mock: respx.MockRouter) -> None:
    with pytest.raises(MessageTooLarge) as info:
        send_big.delay(20 * MB)
    exc = info.value
    assert isinstance(exc, EmailValidationError)  # caught where bad emails are caught
    assert exc.limit == MB
    assert exc.size > 20 * MB
    assert f"{exc.size:,} bytes" in str(exc) and f"{MB:,} bytes" in str(exc)
    assert "qstash_max_message_bytes" in str(exc)
    assert exc.field == "email"
    assert qstash_mock.calls.call_count == 0


def test_just_under_the_limit_is_published_and_the_size_is_what_qstash_receives(
    app: Celery, qstash_mock: respx.MockRouter
) -> None:
    send_big.delay(1000)
    sent = qstash_mock.calls.last.request.content
    overhead = len(sent) - 1000
    send_big.delay(MB - overhead)  # exactly the limit: accepted
    assert len(qstash_mock.calls.last.request.content) == MB
    with pytest.raises(MessageTooLarge) as info:
        send_big.delay(MB - overhead + 1)
    assert info.value.size == MB + 1
    assert qstash_mock.calls.call_count == 2  # the refused one was never sent


def test_the_limit_is_a_setting_for_larger_plans(app: Celery, qstash_mock: respx.MockRouter) -> None:
    app.conf.qstash_max_message_bytes = 10 * MB
    send_big.delay(2 * MB)
    assert qstash_mock.calls.call_count == 1
    assert len(json.loads(qstash_mock.calls.last.request.content)["html"]) == 2 * MB


def test_the_limit_from_the_environment(app: Celery, qstash_mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QSTASH_MAX_MESSAGE_BYTES", "2000")
    with pytest.raises(MessageTooLarge) as info:
        send_big.delay(3000)
    assert info.value.limit == 2000


@pytest.mark.parametrize("value", ["lots", "0", "-5", True])
def test_a_bad_limit_is_a_configuration_error(value: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings({"qstash_max_message_bytes": value})
    assert info.value.setting == "qstash_max_message_bytes"


@pytest.fixture
def eager(app: Celery) -> Iterator[Celery]:
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield app


def test_eager_mode_refuses_it_alike(eager: Celery) -> None:
    with respx.mock(assert_all_mocked=True) as mock:
        with pytest.raises(MessageTooLarge) as info:
            send_big.delay(20 * MB)
        assert mock.calls.call_count == 0
    assert info.value.limit == MB
    assert len(outbox) == 0
    send_big.delay(1000)
    assert len(outbox) == 1


def test_the_error_pickles_whole() -> None:
    back = pickle.loads(pickle.dumps(MessageTooLarge(2_000_000, MB)))
    assert (back.size, back.limit, str(back)) == (2_000_000, MB, str(MessageTooLarge(2_000_000, MB)))
