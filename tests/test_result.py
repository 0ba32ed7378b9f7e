"""``QStashAsyncResult`` and ``QStashBackend``: Celery's result API answered by QStash's logs.

QStash is faked with respx (``dashboard.qstash_events.FakeQStash``), so every
logs request is counted: one per state read while the task is unready, none
once the state is final.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import celery
import pytest
from celery import Celery, states
from celery.exceptions import TaskRevokedError, TimeoutError
from dashboard.qstash_events import (
    T0,
    FakeQStash,
    canceled_events,
    delivered_events,
    failed_events,
    fake_qstash,
    pending_events,
)

from celery_qstash.errors import DeliveryFailed
from celery_qstash.status.result import QStashAsyncResult, QStashBackend

QSTASH_URL = "http://qstash.test"  # the ``app`` fixture's QStash (tests/conftest.py)


@pytest.fixture
def qstash() -> Iterator[FakeQStash]:
    with fake_qstash(QSTASH_URL) as fake:
        yield fake


def test_a_delivered_task(app: Celery, qstash: FakeQStash) -> None:
    qstash.events = delivered_events("t1")
    result = QStashAsyncResult("t1", app=app)

    assert result.state == states.SUCCESS
    assert result.ready() and result.successful() and not result.failed()
    assert result.get(timeout=1)["emailId"] == "em_123"
    assert result.result == {"emailId": "em_123", "status": "queued"}
    assert result.retries == 1
    assert result.date_done == datetime.fromtimestamp((T0 + 1500) / 1000, timezone.utc)


def test_one_logs_request_per_state_read_and_none_once_final(
    app: Celery, qstash: FakeQStash
) -> None:
    qstash.events = pending_events("t1")
    result = QStashAsyncResult("t1", app=app)

    assert result.state == states.PENDING
    assert result.state == states.PENDING
    assert qstash.events_route.call_count == 2

    qstash.events = delivered_events("t1")
    assert result.state == states.SUCCESS
    assert qstash.events_route.call_count == 3

    # Final: cached. None of these asks QStash again.
    assert result.state == states.SUCCESS
    assert result.ready()
    assert result.get()["emailId"] == "em_123"
    assert result.date_done is not None
    assert qstash.events_route.call_count == 3


def test_a_failed_task_raises_delivery_failed(app: Celery, qstash: FakeQStash) -> None:
    qstash.events = failed_events("t2")
    result = QStashAsyncResult("t2", app=app)

    assert result.state == states.FAILURE
    assert result.failed() and result.ready() and not result.successful()
    with pytest.raises(DeliveryFailed) as caught:
        result.get(timeout=1)
    assert (caught.value.status, caught.value.message) == (500, "Internal server error")
    returned = result.get(propagate=False)
    assert isinstance(returned, DeliveryFailed) and returned.status == 500
    assert result.retries == 1


def test_a_retrying_task_is_unready_with_the_error_as_result(
    app: Celery, qstash: FakeQStash
) -> None:
    qstash.events = delivered_events("t1")[:4]
    result = QStashAsyncResult("t1", app=app)

    assert result.state == states.RETRY
    assert not result.ready()
    assert isinstance(result.result, DeliveryFailed)
    assert result.date_done is None


def test_a_canceled_task_reads_revoked(app: Celery, qstash: FakeQStash) -> None:
    qstash.events = canceled_events("t3")
    result = QStashAsyncResult("t3", app=app)

    assert result.state == states.REVOKED
    assert result.ready()
    with pytest.raises(TaskRevokedError):
        result.get(timeout=1)


def test_an_unknown_task_is_pending(app: Celery, qstash: FakeQStash) -> None:
    result = QStashAsyncResult("who-knows", app=app)

    assert result.state == states.PENDING
    assert not result.ready()
    assert result.retries == 0


def test_get_polls_until_the_task_is_ready(app: Celery, qstash: FakeQStash) -> None:
    answers = iter([pending_events("t1"), delivered_events("t1")[:3], delivered_events("t1")])

    def next_answer(request):  # type: ignore[no-untyped-def]
        qstash.events = next(answers)
        return qstash._events(request)

    qstash.events_route.side_effect = next_answer

    assert QStashAsyncResult("t1", app=app).get(interval=0)["emailId"] == "em_123"
    assert qstash.events_route.call_count == 3


def test_get_times_out_on_a_pending_task(
    app: Celery, qstash: FakeQStash, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Celery's polling adds up the intervals it slept: no real sleeping needed.
    monkeypatch.setattr("celery.backends.base.time.sleep", lambda seconds: None)
    qstash.events = pending_events("t1")

    with pytest.raises(TimeoutError):
        QStashAsyncResult("t1", app=app).get(timeout=2, interval=1)
    # get()'s own first look, then one per interval until 2 s of intervals have passed
    # (Celery before 5.7 checks the deadline before its look at 2 s, not after it).
    assert qstash.events_route.call_count == (3 if celery.VERSION >= (5, 7) else 2)


def test_revoke_cancels_the_known_message(app: Celery, qstash: FakeQStash) -> None:
    qstash.events = pending_events("t4", "msg_4")
    result = QStashAsyncResult("t4", app=app, message_id="msg_4")

    result.revoke()

    assert qstash.cancelled == ["msg_4"]
    assert qstash.events_route.call_count == 0  # the message id was already known


def test_revoke_finds_the_message_by_task_id(app: Celery, qstash: FakeQStash) -> None:
    qstash.events = pending_events("t4", "msg_4")
    result = QStashAsyncResult("t4", app=app)
    assert result.state == states.PENDING

    result.revoke()

    assert qstash.cancelled == ["msg_4"]
    qstash.events = canceled_events("t4", "msg_4")
    assert result.state == states.REVOKED  # the cache was dropped: state is read again


def test_revoking_a_finished_or_unknown_task_is_a_no_op(app: Celery, qstash: FakeQStash) -> None:
    # Celery's revoke is fire and forget: it never raises for a task that already ran.
    qstash.events = delivered_events("t1")
    QStashAsyncResult("t1", app=app, message_id="msg_gone").revoke()  # QStash: 404
    QStashAsyncResult("nobody", app=app).revoke()  # no such task at all
    assert qstash.cancelled == []
    assert qstash.cancel_route.call_count == 1


def test_a_plain_async_result_revokes_through_qstash(app: Celery, qstash: FakeQStash) -> None:
    # With QStash as the result backend, app.AsyncResult(id).revoke() (which calls
    # app.control.revoke) cancels the message instead of broadcasting to no worker.
    app.conf.result_backend = "celery_qstash.status.result:QStashBackend"
    qstash.events = pending_events("t5", "msg_5")

    plain = app.AsyncResult("t5")
    assert type(plain) is not QStashAsyncResult
    plain.revoke()
    app.control.revoke(["t5"])

    assert qstash.cancelled == ["msg_5", "msg_5"]


def test_an_app_with_another_result_backend_keeps_its_broadcast(app: Celery, qstash: FakeQStash) -> None:
    app.conf.result_backend = "cache+memory://"
    qstash.events = pending_events("t6", "msg_6")
    QStashAsyncResult("t6", app=app).revoke()  # ours still cancels through QStash
    assert qstash.cancelled == ["msg_6"]
    assert not getattr(app.control, "_celery_qstash_revoke", False)


@pytest.mark.parametrize("backend", ["celery_qstash.status.result:QStashBackend", "qstash://"])
def test_async_result_through_the_configured_backend(
    app: Celery, qstash: FakeQStash, backend: str
) -> None:
    app.conf.result_backend = backend
    qstash.events = delivered_events("t1") + failed_events("t2")

    assert isinstance(app.backend, QStashBackend)
    ok, bad = app.AsyncResult("t1"), app.AsyncResult("t2")
    assert ok.state == states.SUCCESS
    assert ok.get(timeout=1)["emailId"] == "em_123"
    assert bad.state == states.FAILURE
    with pytest.raises(DeliveryFailed):
        bad.get(timeout=1)


def test_the_entry_point_resolves_the_qstash_scheme() -> None:
    from celery.app.backends import by_url

    backend_cls, _url = by_url("qstash://")

    assert backend_cls is QStashBackend
