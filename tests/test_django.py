"""``delay_on_commit`` / ``apply_async_on_commit`` wait for Django's transaction, as DjangoTask's do."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import respx
from celery import Celery

from celery_qstash import Email, QStashTask


@pytest.fixture
def django_db(django_settings: None) -> None:
    """Django configured (tests/conftest.py); the tests run inside its transactions."""


@pytest.fixture
def publishes() -> Iterator[respx.Route]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock.post(url__startswith="http://qstash.django.test/v2/publish/").mock(
            return_value=httpx.Response(200, json={"messageId": "msg_django"})
        )


@pytest.fixture
def send_welcome(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    for name in ("QSTASH_TOKEN", "QSTASH_URL", "QSTASH_DEV", "AUTOSEND_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    app = Celery("django_tests", set_as_current=True)
    app.conf.update(qstash_token="tok", qstash_url="http://qstash.django.test", autosend_api_key="AS_k")

    @app.task(base=QStashTask, name="dj.send_welcome", shared=False)
    def task(user_id: int) -> Email:
        return Email(to=f"u{user_id}@example.com", from_="hi@acme.example", subject="Hi", text="Hi")

    return task


def test_delay_on_commit_publishes_after_commit(django_db: None, publishes: respx.Route, send_welcome) -> None:  # type: ignore[no-untyped-def]
    from django.db import transaction

    with transaction.atomic():
        send_welcome.delay_on_commit(1)
        assert publishes.call_count == 0
    assert publishes.call_count == 1


def test_nothing_is_published_on_rollback(django_db: None, publishes: respx.Route, send_welcome) -> None:  # type: ignore[no-untyped-def]
    from django.db import transaction

    with pytest.raises(RuntimeError), transaction.atomic():
        send_welcome.apply_async_on_commit((2,), countdown=5)
        raise RuntimeError("rollback")
    assert publishes.call_count == 0


def test_apply_async_on_commit_keeps_options(django_db: None, publishes: respx.Route, send_welcome) -> None:  # type: ignore[no-untyped-def]
    from django.db import transaction

    with transaction.atomic():
        send_welcome.apply_async_on_commit((3,), countdown=5)
    assert publishes.calls.last.request.headers["Upstash-Delay"] == "5s"
