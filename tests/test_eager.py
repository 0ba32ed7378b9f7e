"""Eager mode (``task_always_eager``): validated like production, recorded in the outbox, no network."""

from __future__ import annotations

import re
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import respx
from celery import Celery, Task, group, states
from celery.exceptions import TaskRevokedError
from celery.result import EagerResult

from celery_qstash import (
    BulkEmail,
    CeleryQStashWarning,
    Email,
    EmailValidationError,
    QStashTask,
    UnsupportedOption,
    autosend_task,
)
from celery_qstash.testing import Outbox, SentEmail, outbox


@autosend_task
def send_welcome(user_id: int, to: str = "jane@example.com") -> Email:
    return Email(
        to=to, cc="boss@example.com", from_="Shop <shop@example.com>", subject=f"Welcome #{user_id}", html="<p>Hi</p>"
    )


@autosend_task
def send_newsletter(addresses: list[str]) -> BulkEmail:
    return BulkEmail(recipients=addresses, from_="news@example.com", subject="News", text="News")


seen_ids: list[str] = []


@autosend_task(bind=True, max_retries=5)
def send_bound(self: Task, user_id: int) -> dict[str, Any]:
    seen_ids.append(self.request.id)
    return {"to": "jane@example.com", "from": "shop@example.com", "templateId": "tpl"}


@pytest.fixture
def eager(app: Celery) -> Celery:
    app.conf.task_always_eager = True
    return app


@pytest.fixture
def no_network() -> Iterator[respx.MockRouter]:
    """respx with no routes: any HTTP request made through httpx fails the test."""
    seen_ids.clear()
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mock:
        yield mock
    assert mock.calls.call_count == 0


# --- the happy path ------------------------------------------------------------------------


def test_delay_fills_the_outbox_and_sends_nothing(eager: Celery, no_network: respx.MockRouter, autosend_api_key: str) -> None:
    result = send_welcome.delay(3)
    assert isinstance(result, EagerResult)
    assert result.state == states.SUCCESS
    assert no_network.calls.call_count == 0
    assert len(outbox) == 1
    sent = outbox.last
    assert isinstance(sent, SentEmail)
    assert sent.to == ["jane@example.com"]
    assert sent.subject == "Welcome #3"
    assert sent.task_id == result.id
    request = sent.request
    assert request.url == "https://api.autosend.com/v1/mails/send"
    assert request.body == {
        "to": {"email": "jane@example.com"},
        "cc": [{"email": "boss@example.com"}],
        "from": {"email": "shop@example.com", "name": "Shop"},
        "subject": "Welcome #3",
        "html": "<p>Hi</p>",
    }
    assert request.headers == {"Idempotency-Key": result.id, "X-Celery-Task": "test_eager.send_welcome"}
    assert request.authorization == f"Bearer {autosend_api_key}"
    assert request.deduplication_id == request.label == result.id
    assert request.redact_headers == ("Authorization",)
    assert isinstance(sent.email, Email)
    assert sent.email.subject == "Welcome #3"


def test_result_is_autosend_shaped(eager: Celery, no_network: respx.MockRouter) -> None:
    result = send_welcome.delay(1)
    value = result.get()
    assert value is result.result
    assert re.fullmatch(r"[0-9a-f]{24}", value["emailId"])
    assert value["status"] == "queued"
    assert value["totalRecipients"] == 2  # to + cc
    assert value["queuedAt"].endswith("Z")
    assert outbox.last.response == value


def test_email_ids_differ(eager: Celery, no_network: respx.MockRouter) -> None:
    first, second = send_welcome.delay(1).get(), send_welcome.delay(1).get()
    assert first["emailId"] != second["emailId"]


def test_bulk_result_has_batch_id(eager: Celery, no_network: respx.MockRouter) -> None:
    value = send_newsletter.delay(["a@example.com", "b@example.com", "c@example.com"]).get()
    uuid.UUID(value["batchId"])  # a UUID
    assert value["totalRecipients"] == 3
    assert value["successCount"] == 3
    assert value["failedCount"] == 0
    assert "emailId" not in value
    sent = outbox.last
    assert sent.request.url == "https://api.autosend.com/v1/mails/bulk"
    assert sent.to == ["a@example.com", "b@example.com", "c@example.com"]


def test_signature_and_apply_async_work(eager: Celery, no_network: respx.MockRouter) -> None:
    send_welcome.s(1).delay()
    send_welcome.apply_async((2,), {"to": "joe@example.com"}, countdown=30, task_id="eager-id")
    assert [s.subject for s in outbox] == ["Welcome #1", "Welcome #2"]
    assert outbox[1].task_id == "eager-id"
    assert outbox[1].to == ["joe@example.com"]
    # validated and planned as in production: the delay is on the recorded request
    assert outbox[1].request.delay == 30


def test_task_attributes_on_the_recorded_request(eager: Celery, no_network: respx.MockRouter) -> None:
    result = send_bound.delay(1)
    assert seen_ids == [result.id]
    assert outbox.last.request.retries == 5
    assert outbox.last.request.body["templateId"] == "tpl"


def test_passed_task_id_honoured(eager: Celery, no_network: respx.MockRouter) -> None:
    result = send_bound.apply_async((1,), task_id="fixed-id")
    assert result.id == "fixed-id"
    assert seen_ids == ["fixed-id"]
    assert outbox.last.request.deduplication_id == "fixed-id"


def test_eager_needs_no_qstash_at_all(eager: Celery, no_network: respx.MockRouter) -> None:
    eager.conf.qstash_url = "http://unreachable.invalid"
    assert send_welcome.delay(1).state == states.SUCCESS
    assert len(outbox) == 1


# --- validation as in production ---------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"link": "signature"},
        {"chain": "signature"},
        {"serializer": "pickle"},
        {"bogus_option": 1},
        {"headers": {"Authorization": "Bearer x"}},
        {"queue": "not a queue"},
    ],
)
def test_bad_option_raises_at_the_call_site(eager: Celery, no_network: respx.MockRouter, options: dict[str, Any]) -> None:
    resolved = {k: ([send_welcome.s(2)] if v == "signature" else v) for k, v in options.items()}
    with pytest.raises(UnsupportedOption) as info:
        send_welcome.apply_async((1,), **resolved)
    assert info.value.option == next(iter(options))
    assert len(outbox) == 0


def test_ignored_option_warns_in_eager_mode_too(eager: Celery, no_network: respx.MockRouter) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = send_welcome.apply_async((1,), priority=3)
        send_welcome.apply_async((1,), priority=3)
    assert result.state == states.SUCCESS
    ours = [str(w.message) for w in caught if issubclass(w.category, CeleryQStashWarning)]
    assert len([m for m in ours if ": priority: " in m]) == 1
    assert len(outbox) == 2


@pytest.mark.parametrize("propagates", [False, True])
def test_bad_email_raises_at_the_call_site_as_in_production(
    eager: Celery, no_network: respx.MockRouter, propagates: bool
) -> None:
    # Production validates in the caller and raises; eager mode must too, whatever
    # task_eager_propagates says, or a green eager suite would hide a production error.
    eager.conf.task_eager_propagates = propagates
    with pytest.raises(EmailValidationError) as info:
        send_welcome.delay(1, to="not-an-address")
    assert info.value.field == "to.email"
    assert info.value.errors[0]["field"] == "to.email"
    assert len(outbox) == 0


def test_body_exception_raises_at_the_call_site_as_in_production(
    eager: Celery, no_network: respx.MockRouter
) -> None:
    @eager.task(base=QStashTask, name="test_eager.missing_user", shared=False)
    def missing_user(user_id: int) -> Email:
        raise LookupError(f"no user {user_id}")

    eager.conf.task_eager_propagates = False
    with pytest.raises(LookupError, match="no user 7"):
        missing_user.delay(7)
    with pytest.raises(LookupError, match="no user 8"):
        missing_user.apply(args=(8,))
    assert len(outbox) == 0


def test_eager_mode_needs_no_credentials(eager: Celery, no_network: respx.MockRouter) -> None:
    # Like Django's locmem backend: tests send nothing, so they need no keys.
    eager.conf.autosend_api_key = None
    eager.conf.qstash_token = None
    result = send_welcome.delay(1)
    assert result.state == states.SUCCESS
    assert outbox.last.request.authorization == "Bearer eager-mode"
    assert no_network.calls.call_count == 0


def test_eager_group_goes_to_the_outbox(eager: Celery, no_network: respx.MockRouter) -> None:
    # Celery's eager group calls Task.apply directly, bypassing apply_async.
    results = group(send_welcome.s(i) for i in (1, 2, 3)).apply_async()
    assert [r.state for r in results.results] == [states.SUCCESS] * 3
    assert sorted(e.task_id for e in outbox) == sorted(r.id for r in results.results)
    assert all("emailId" in r.result for r in results.results)


def test_task_apply_goes_to_the_outbox(eager: Celery, no_network: respx.MockRouter) -> None:
    result = send_welcome.apply((4,))
    assert "emailId" in result.get()
    assert outbox.last.task_id == result.id


@pytest.mark.parametrize("propagate", [False, True])
def test_wrong_arguments_raise_type_error(eager: Celery, no_network: respx.MockRouter, propagate: bool) -> None:
    eager.conf.task_eager_propagates = propagate
    with pytest.raises(TypeError):
        send_welcome.delay(1, "a@example.com", "extra")
    with pytest.raises(TypeError):
        send_welcome.delay(unknown=1)
    assert len(outbox) == 0


def test_expired_message_is_revoked_and_not_recorded(eager: Celery, no_network: respx.MockRouter) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CeleryQStashWarning)
        result = send_welcome.apply_async((1,), countdown=60, expires=10)
    assert isinstance(result, EagerResult)
    assert result.state == states.REVOKED
    assert isinstance(result.result, TaskRevokedError)
    assert len(outbox) == 0


def test_ignore_result(eager: Celery, no_network: respx.MockRouter) -> None:
    send_welcome.apply_async((1,), ignore_result=True)
    assert len(outbox) == 1


# --- the outbox ------------------------------------------------------------------------------


def test_outbox_clear(eager: Celery, no_network: respx.MockRouter) -> None:
    send_welcome.delay(1)
    send_welcome.delay(2)
    assert len(outbox) == 2
    assert bool(outbox) is True
    outbox.clear()
    assert len(outbox) == 0
    assert bool(outbox) is False
    assert list(outbox) == []
    with pytest.raises(IndexError):
        _ = outbox.last


def test_outbox_is_list_like(eager: Celery, no_network: respx.MockRouter) -> None:
    send_welcome.delay(1, to="a@example.com")
    send_welcome.delay(2, to="b@example.com")
    send_newsletter.delay(["b@example.com", "c@example.com"])
    assert [s.subject for s in outbox] == ["Welcome #1", "Welcome #2", "News"]
    assert outbox[0].to == ["a@example.com"]
    assert [s.subject for s in outbox[1:]] == ["Welcome #2", "News"]
    assert [s.subject for s in outbox.filter(to="b@example.com")] == ["Welcome #2", "News"]
    assert [s.subject for s in outbox.filter(subject="News")] == ["News"]
    assert repr(outbox) == "<Outbox 3 email(s)>"


def test_outbox_is_the_shared_instance() -> None:
    from celery_qstash.publish.transports import outbox as transport_outbox

    assert outbox is transport_outbox
    assert isinstance(outbox, Outbox)


def test_outbox_repr_has_no_secret(eager: Celery, no_network: respx.MockRouter, autosend_api_key: str) -> None:
    send_welcome.delay(1)
    assert autosend_api_key not in repr(outbox.last)
    assert autosend_api_key not in repr(list(outbox))


# --- task.apply() and the eager canvas validate what production's apply_async does ---------


def _call_both(app: Celery, call: Any) -> tuple[str, str]:
    """The error ``call(app)`` meets in production (respx QStash) and in eager mode."""
    outcomes = []
    for eager_on in (False, True):
        app.conf.task_always_eager = eager_on
        try:
            with respx.mock(assert_all_mocked=True, assert_all_called=False) as mock:
                mock.post(url__regex=r".*/v2/(publish|enqueue)/.+").respond(
                    200, json={"messageId": "msg_1"})
                call(app)
            outcomes.append("accepted")
        except Exception as exc:  # the comparison is the point
            outcomes.append(f"{type(exc).__name__}: {exc}")
    return outcomes[0], outcomes[1]


@pytest.mark.parametrize("how", ["apply", "group"])
def test_eager_apply_refuses_what_task_routes_make_production_refuse(app: Celery, how: str) -> None:
    # rate_limit is flow control, which QStash's enqueue (a routed queue) does not take.
    app.conf.task_routes = {"tests.routed_rate": {"queue": "emails"}}

    @app.task(base=QStashTask, name="tests.routed_rate", rate_limit="10/m", shared=False)
    def routed_rate() -> Email:
        return Email(to="a@example.com", from_="b@example.com", subject="s", text="t")

    def call(_: Celery) -> None:
        if how == "apply":
            routed_rate.apply()
        else:
            group(routed_rate.s()).apply_async()

    production, eager_mode = _call_both(app, call)
    assert production.startswith("UnsupportedOption: rate_limit")
    assert eager_mode == production


def test_eager_apply_refuses_the_serializer_production_refuses(app: Celery) -> None:
    @app.task(base=QStashTask, name="tests.pickled", serializer="pickle", shared=False)
    def pickled() -> Email:
        return Email(to="a@example.com", from_="b@example.com", subject="s", text="t")

    production, eager_mode = _call_both(app, lambda _: pickled.apply())
    assert production.startswith("UnsupportedOption: serializer")
    assert eager_mode == production


def test_eager_apply_refuses_arguments_production_cannot_serialize(app: Celery) -> None:
    production, eager_mode = _call_both(app, lambda _: send_welcome.apply(args=(object(),)))
    assert production != "accepted"
    assert eager_mode == production


def test_eager_apply_checks_the_call_as_production_does(app: Celery) -> None:
    production, eager_mode = _call_both(app, lambda _: send_welcome.apply(args="42"))
    assert production == "TypeError: task args must be a list or tuple"
    assert eager_mode == production


# --- the eager tracer, kept between calls ---------------------------------------------------


def test_signal_receivers_connected_between_eager_calls_are_called(eager: Celery, no_network: respx.MockRouter) -> None:
    from celery import signals

    send_welcome.delay(1)  # a tracer is built (and kept) with no receivers
    seen: list[str] = []

    def prerun(**kwargs: Any) -> None:
        seen.append("prerun")

    def success(**kwargs: Any) -> None:
        seen.append("success")

    def postrun(**kwargs: Any) -> None:
        seen.append("postrun")

    for signal, receiver in ((signals.task_prerun, prerun), (signals.task_success, success),
                             (signals.task_postrun, postrun)):
        signal.connect(receiver, weak=False)
    try:
        send_welcome.delay(2)
    finally:
        signals.task_prerun.disconnect(prerun)
        signals.task_success.disconnect(success)
        signals.task_postrun.disconnect(postrun)
    assert seen == ["prerun", "success", "postrun"]
    send_welcome.delay(3)  # disconnected: not called again
    assert seen == ["prerun", "success", "postrun"]


def test_a_receiver_connected_after_dead_ones_are_dropped_is_called(eager: Celery, no_network: respx.MockRouter) -> None:
    """A kept tracer reads the receiver lists as they are now, after Celery dropped a
    dead weak receiver from them."""
    import gc

    from celery import signals

    class Holder:
        def success(self, **kwargs: Any) -> None:
            pass

    holder = Holder()
    signals.task_success.connect(holder.success)  # weak: dies with holder
    send_welcome.delay(1)
    del holder
    gc.collect()
    seen: list[str] = []

    def success(**kwargs: Any) -> None:
        seen.append(kwargs["sender"].name)

    signals.task_success.connect(success, weak=False)
    try:
        send_welcome.delay(2)
    finally:
        signals.task_success.disconnect(success)
    assert seen == [send_welcome.name]


def test_the_success_log_line_follows_the_logging_level(eager: Celery, no_network: respx.MockRouter,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="celery.app.trace")
    send_welcome.delay(1)
    assert not [r for r in caplog.records if "succeeded" in r.getMessage()]
    caplog.set_level("INFO", logger="celery.app.trace")
    result = send_welcome.delay(2)
    assert [r for r in caplog.records if "succeeded" in r.getMessage() and result.id in r.getMessage()]


def test_task_eager_propagates_is_read_for_each_call(eager: Celery, no_network: respx.MockRouter,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    @autosend_task(name="eager.broken", shared=False)
    def broken() -> Email:
        raise LookupError("no such user")

    eager.conf.task_eager_propagates = False
    with pytest.raises(LookupError):
        broken.delay()
    # Not propagated by the tracer: Celery's tracer logged the failure before we raised it.
    assert [r for r in caplog.records if r.levelname == "ERROR" and "no such user" in r.getMessage()]
    caplog.clear()
    eager.conf.task_eager_propagates = True
    with pytest.raises(LookupError):
        broken.delay()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_a_receiver_list_replaced_from_outside_gets_a_new_tracer(eager: Celery, no_network: respx.MockRouter) -> None:
    from celery import signals

    send_welcome.delay(1)
    seen: list[str] = []
    original = signals.task_success.receivers
    signals.task_success.receivers = list(original)  # e.g. a test helper that swaps it
    try:
        signals.task_success.connect(lambda **kwargs: seen.append("success"), weak=False)
        send_welcome.delay(2)
    finally:
        signals.task_success.receivers = original
        signals.task_success.sender_receivers_cache.clear()
    assert seen == ["success"]


def test_task_store_eager_result_is_read_for_each_call(eager: Celery, no_network: respx.MockRouter) -> None:
    eager.conf.result_backend = "celery_qstash.status.result:QStashBackend"
    first = send_welcome.delay(1)
    send_welcome.store_eager_result = True
    try:
        second = send_welcome.delay(2)
    finally:
        del send_welcome.store_eager_result
    backend = send_welcome.backend
    assert first.id not in backend._eager
    assert backend._eager[second.id]["status"] == states.SUCCESS


# --- the lean success path and its replay ----------------------------------------------------


def test_a_failing_body_runs_once_and_fails_as_celerys_tracer_has_it(eager: Celery, no_network: respx.MockRouter,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    from celery import signals

    runs: list[int] = []
    failures: list[str] = []

    @autosend_task(name="eager.fails_once", shared=False)
    def fails(n: int) -> Email:
        runs.append(n)
        raise LookupError(f"no user {n}")

    def on_failure(**kwargs: Any) -> None:
        failures.append(kwargs["task_id"])

    eager.conf.task_eager_propagates = False
    signals.task_failure.connect(on_failure, weak=False)  # not a reason to leave the lean path
    try:
        with pytest.raises(LookupError, match="no user 1"):
            fails.apply_async((1,), task_id="fail-1")
    finally:
        signals.task_failure.disconnect(on_failure)
    assert runs == [1]
    assert failures == ["fail-1"]  # Celery's tracer handled the failure
    assert [r for r in caplog.records if r.levelname == "ERROR" and "no user 1" in r.getMessage()]
    assert len(outbox) == 0


def test_nothing_to_send_runs_the_body_once_and_reads_ignored(eager: Celery, no_network: respx.MockRouter) -> None:
    runs: list[int] = []

    @autosend_task(name="eager.nothing", shared=False)
    def nothing(n: int) -> None:
        runs.append(n)

    result = nothing.delay(1)
    assert runs == [1]
    assert result.state == states.IGNORED
    assert len(outbox) == 0


def test_a_successful_eager_call_sees_celerys_request(eager: Celery, no_network: respx.MockRouter) -> None:
    seen: list[Any] = []

    @autosend_task(bind=True, name="eager.request", shared=False)
    def look(self: Task, n: int) -> Email:
        request = self.request
        seen.append((request.id, request.is_eager, request.called_directly, request.args,
                     request.delivery_info, request.root_id, request.hostname is not None))
        return Email(to="a@example.com", from_="b@example.com", subject="s", text="t")

    result = look.apply_async((5,), task_id="req-1")
    assert result.state == states.SUCCESS
    assert seen == [("req-1", True, False, [5],
                     {"is_eager": True, "exchange": None, "routing_key": None, "priority": None},
                     "req-1", True)]
