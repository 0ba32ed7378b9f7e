"""Deferred tasks without servers: the message, the plan's request, the receiver's
keys and answers (the end-to-end path is tests/integration/test_deferred.py)."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from celery import Celery, chord

from celery_qstash import ConfigurationError, DeferredTask, UnsupportedOption, qstash_task
from celery_qstash.clock import FakeClock
from celery_qstash.config import load_settings
from celery_qstash.local.emulator.signing import sign
from celery_qstash.publish.message import MESSAGE_KIND, json_arguments, task_message
from celery_qstash.publish.plan import plan_publish
from celery_qstash.publish.request import TaskAttrs
from celery_qstash.receiver import CallbackReceiver, MemoryLedger, ReceivedRequest
from celery_qstash.receiver.core import delivery_key

URL = "https://app.example/qstash/receive"
KEY = "sig_" + "k" * 40


@pytest.mark.parametrize(
    ("args", "kwargs", "where"),
    [
        ((1, {2}), {}, r"args\[1\]: t: set"),
        ((), {"blob": b"x"}, r"kwargs\['blob'\]: t: bytes"),
        ((object(),), {}, r"args\[0\]: t: object"),
        (({1: "a"},), {}, r"args\[0\]: t: dict does not survive JSON"),
        ((float("nan"),), {}, r"args\[0\]: t: float"),
    ],
)
def test_arguments_json_cannot_carry_are_named(args: Any, kwargs: Any, where: str) -> None:
    with pytest.raises(UnsupportedOption, match=where):
        json_arguments("t", args, kwargs)


def test_plain_arguments_pass() -> None:
    json_arguments("t", (1, "a", [1, (2, 3)], {"k": None}, 2.5, True), {"x": {"y": [1]}})


def test_each_retry_has_its_own_deduplication_id_and_the_task_id_as_label() -> None:
    settings = load_settings(None)
    plan = plan_publish(task=TaskAttrs(name="t", max_retries=3), task_id="tid",
                        options={"countdown": 5}, settings=settings, now=0.0)
    message = task_message("t", "tid", [1], {}, retries=0)
    first = plan.task_request(message, URL, settings, attempt=0)
    retry = plan.task_request(message, URL, settings, attempt=2)
    assert (first.deduplication_id, retry.deduplication_id) == ("tid", "tid.retry2")
    assert first.label == retry.label == "tid"
    # QStash retries what is left of max_retries: every attempt counts once.
    assert (first.retries, retry.retries) == (3, 1)
    assert first.body["retry_budget"] == 3 and first.authorization is None
    assert "Authorization" not in first.sent_headers
    assert first.delay == 5 and first.url == URL


def test_a_replacement_has_a_deduplication_id_of_its_own() -> None:
    # Task.replace() publishes under the replaced task's id: under the same deduplication
    # id QStash would drop it; so would a retry of the replacement under the original's.
    settings = load_settings(None)
    plan = plan_publish(task=TaskAttrs(name="u.t", max_retries=3), task_id="T", options={},
                        settings=settings, now=0.0)
    ids = {(replaced, attempt): plan.task_request({}, URL, settings, attempt=attempt,
                                                  replaced=replaced).deduplication_id
           for replaced in (0, 1, 2) for attempt in (0, 1)}
    assert ids[(0, 0)] == "T" and ids[(1, 0)] == "T.replaced1" and ids[(1, 1)] == "T.replaced1.retry1"
    assert len(set(ids.values())) == len(ids)


def test_the_ledger_key_comes_from_the_signed_body() -> None:
    message = task_message("t", "tid", [], {})
    again = task_message("t", "tid", [], {})
    assert delivery_key("task.run", message) != delivery_key("task.run", again)
    assert delivery_key("task.run", {**message, "delivery": 5}) is None


def test_the_receiver_url_is_required_to_publish() -> None:
    app = Celery("no-receiver", set_as_current=False)
    app.conf.qstash_token = "t"

    @app.task(base=DeferredTask, name="nr.t", shared=False)
    def t() -> None: ...

    with pytest.raises(ConfigurationError, match="qstash_receiver_url") as refused:
        t.delay()
    assert "celery-qstash dev" not in str(refused.value)
    # In dev mode the refusal says which command hosts a receiver and prints its URL.
    app.conf.qstash_dev = True
    with pytest.raises(ConfigurationError, match="celery-qstash dev --app module:app"):
        t.delay()


def test_qstash_task_refuses_a_base_that_is_not_deferred() -> None:
    from celery import Task

    with pytest.raises(TypeError, match="DeferredTask"):
        qstash_task(base=Task)


class _Busy(MemoryLedger):
    """A ledger where another process holds every lease."""

    def begin(self, key: str, now: float, lease: float) -> Any:
        return "busy"


def _signed(body: dict[str, Any], at: float | None = None) -> ReceivedRequest:
    """The request QStash would send, signed at ``at`` (the receiver's clock's now, for
    a receiver on a FakeClock), else now."""
    raw = json.dumps(body).encode()
    return ReceivedRequest("POST", URL, {
        "Upstash-Signature": sign(KEY, URL, raw, time.time() if at is None else at),
        "Upstash-Message-Id": "msg_1", "Upstash-Retried": "0"}, raw)


@pytest.fixture
def app() -> Celery:
    app = Celery("deferred-unit", set_as_current=False)
    app.conf.update(qstash_current_signing_key=KEY, qstash_next_signing_key=KEY,
                    qstash_receiver_url=URL, qstash_token="t")
    return app


def test_a_concurrent_duplicate_is_not_answered_2xx(app: Celery) -> None:
    ran: list[int] = []

    @app.task(base=DeferredTask, name="u.work", shared=False)
    def work() -> None:
        ran.append(1)

    body = {"kind": MESSAGE_KIND, "task": "u.work", "id": "a", "args": [], "kwargs": {},
            "retries": 0, "delivery": "n1"}
    answer = CallbackReceiver(app, ledger=_Busy()).handle(_signed(body))
    assert answer.status == 409 and answer.headers["Retry-After"]
    assert ran == []


def test_a_failed_body_leaves_the_key_for_qstashs_retry(app: Celery) -> None:
    attempts: list[int] = []

    @app.task(base=DeferredTask, name="u.flaky", shared=False, bind=True)
    def flaky(self: Any) -> str:
        attempts.append(self.request.retries)
        if len(attempts) == 1:
            raise OSError("down")
        return "ok"

    clock = FakeClock(time.time())
    receiver = CallbackReceiver(app, ledger=MemoryLedger(), clock=clock)
    body = {"kind": MESSAGE_KIND, "task": "u.flaky", "id": "b", "args": [], "kwargs": {},
            "retries": 0, "delivery": "n2", "retry_budget": 3}
    first = receiver.handle(_signed(body, at=clock.now()))
    assert first.status == 500 and first.payload["status"] == "RETRY"
    assert "down" in first.payload["exc_message"][0]
    retried = receiver.handle(_signed(body, at=clock.now()))
    assert retried.status == 200 and retried.payload["result"] == "ok"
    again = receiver.handle(_signed(body, at=clock.now()))
    assert again.payload["outcome"] == "duplicate"
    assert attempts == [0, 0]


def test_reject_is_non_retryable_and_ignore_is_done(app: Celery) -> None:
    from celery.exceptions import Ignore, Reject

    @app.task(base=DeferredTask, name="u.reject", shared=False)
    def reject() -> None:
        raise Reject("bad message", requeue=False)

    @app.task(base=DeferredTask, name="u.ignore", shared=False)
    def ignore() -> None:
        raise Ignore()

    receiver = CallbackReceiver(app, ledger=MemoryLedger())
    base = {"kind": MESSAGE_KIND, "id": "c", "args": [], "kwargs": {}, "retries": 0}
    rejected = receiver.handle(_signed({**base, "task": "u.reject", "delivery": "n3"}))
    assert rejected.status == 489 and rejected.headers["Upstash-NonRetryable-Error"] == "true"
    ignored = receiver.handle(_signed({**base, "task": "u.ignore", "delivery": "n4"}))
    assert ignored.status == 200 and ignored.payload["status"] == "IGNORED"


@pytest.mark.parametrize(
    "field",
    [{"id": 5}, {"args": "x"}, {"kwargs": []}, {"retries": "0"}, {"chain": [1]}],
)
def test_a_malformed_message_is_a_400_and_runs_nothing(app: Celery, field: Any) -> None:
    ran: list[int] = []

    @app.task(base=DeferredTask, name="u.m", shared=False)
    def m() -> None:
        ran.append(1)

    body = {"kind": MESSAGE_KIND, "task": "u.m", "id": "d", "args": [], "kwargs": {},
            "retries": 0, "delivery": "n5", **field}
    assert CallbackReceiver(app, ledger=MemoryLedger()).handle(_signed(body)).status == 400
    assert ran == []


def test_the_signature_is_checked_on_the_receivers_clock(app: Celery) -> None:
    """Time moved past the token's 5 minutes (as the ledger's window moves with the same
    clock): the token is no longer valid, whatever the wall clock says."""
    ran: list[int] = []

    @app.task(base=DeferredTask, name="u.clock", shared=False)
    def clocked() -> None:
        ran.append(1)

    clock = FakeClock(time.time())
    receiver = CallbackReceiver(app, ledger=MemoryLedger(window=60), clock=clock)
    body = {"kind": MESSAGE_KIND, "task": "u.clock", "id": "e", "args": [], "kwargs": {},
            "retries": 0, "delivery": "n6"}
    request = _signed(body, at=clock.now())
    assert receiver.handle(request).status == 200
    clock.advance(301)  # past the ledger's window and the token's exp alike
    assert receiver.handle(request).status == 401
    assert ran == [1]


@pytest.mark.parametrize("claims", [{"body": 5}, {"sub": 7}, {"nbf": "soon"}, {"body": None}])
def test_a_signed_token_with_odd_claims_is_a_401(app: Celery, claims: dict[str, Any]) -> None:
    import jwt

    raw = b"{}"
    now = int(time.time())
    token = jwt.encode({"iss": "Upstash", "sub": URL, "exp": now + 300, "nbf": now,
                        "iat": now, "jti": "j", "body": "x", **claims}, KEY, algorithm="HS256")
    request = ReceivedRequest("POST", URL, {"Upstash-Signature": token,
                                            "Upstash-Message-Id": "m"}, raw)
    assert CallbackReceiver(app, ledger=MemoryLedger()).handle(request).status == 401


class _Down(MemoryLedger):
    """A shared ledger that cannot be reached (Redis down)."""

    def begin(self, key: str, now: float, lease: float) -> Any:
        raise ConnectionError("redis is down")


def test_a_ledger_that_cannot_be_reached_is_a_503_and_runs_nothing(app: Celery) -> None:
    ran: list[int] = []

    @app.task(base=DeferredTask, name="u.down", shared=False)
    def down() -> None:
        ran.append(1)

    body = {"kind": MESSAGE_KIND, "task": "u.down", "id": "f", "args": [], "kwargs": {},
            "retries": 0, "delivery": "n7"}
    answer = CallbackReceiver(app, ledger=_Down()).handle(_signed(body))
    assert answer.status == 503 and answer.headers["Retry-After"]
    assert ran == []


def test_a_bad_ledger_setting_is_a_503_naming_nothing_secret(app: Celery) -> None:
    app.conf.qstash_ledger_url = "memcached://user:hunter2@cache"
    body = {"kind": MESSAGE_KIND, "task": "u.none", "id": "g", "args": [], "kwargs": {},
            "retries": 0, "delivery": "n8"}
    answer = CallbackReceiver(app).handle(_signed(body))
    assert answer.status == 503
    assert "hunter2" not in answer.content.decode()


def test_an_app_wide_pickle_serializer_is_refused_at_the_call_site(app: Celery) -> None:
    app.conf.task_serializer = "pickle"

    @app.task(base=DeferredTask, name="u.pickled", shared=False)
    def pickled() -> None: ...

    with pytest.raises(UnsupportedOption, match="serializer"):
        pickled.delay()


def test_an_expired_message_is_revoked_and_its_body_never_runs(app: Celery) -> None:
    """Celery's worker checks ``expires`` before running (Request.revoked): so does the
    receiver, on its clock."""
    from celery.signals import task_revoked

    ran: list[int] = []
    revoked: list[str] = []

    @app.task(base=DeferredTask, name="u.late", shared=False)
    def late() -> None:
        ran.append(1)

    def on_revoked(sender: Any = None, request: Any = None, **kwargs: Any) -> None:
        revoked.append(kwargs.get("expired"))

    clock = FakeClock(time.time())
    body = {"kind": MESSAGE_KIND, "task": "u.late", "id": "h", "args": [], "kwargs": {},
            "retries": 0, "delivery": "n9",
            "expires": "2000-01-01T00:00:00+00:00"}
    task_revoked.connect(on_revoked, weak=False)
    try:
        answer = CallbackReceiver(app, ledger=MemoryLedger(), clock=clock).handle(
            _signed(body, at=clock.now()))
    finally:
        task_revoked.disconnect(on_revoked)
    assert answer.status == 200 and answer.payload["status"] == "REVOKED"
    assert ran == []
    assert revoked == [True]


@pytest.mark.parametrize(("backend", "said"), [
    ("qstash://", "qstash:// cannot"), (None, "none is set"),
    ("rpc://", "RPCBackend cannot"),
])
def test_a_chord_is_refused_in_eager_mode_where_production_refuses_it(
    app: Celery, backend: str | None, said: str
) -> None:
    # Eager mode is production without the network: the same refusal, the same words.
    app.conf.update(task_always_eager=True, result_backend=backend)
    ran: list[int] = []

    @app.task(base=DeferredTask, name="u.double", shared=False)
    def double(x: int) -> int:
        ran.append(x)
        return 2 * x

    @app.task(base=DeferredTask, name="u.total", shared=False)
    def total(xs: list[int]) -> int:
        return sum(xs)

    with pytest.raises(UnsupportedOption, match=re.escape(f"({said})")) as refused:
        chord([double.s(1), double.s(2)])(total.s())
    assert refused.value.option == "chord" and "redis://" in str(refused.value)
    assert ran == []


def test_a_chord_runs_in_eager_mode_on_a_backend_that_counts_parts(app: Celery) -> None:
    app.conf.update(task_always_eager=True, result_backend="cache+memory://")

    @app.task(base=DeferredTask, name="u.double", shared=False)
    def double(x: int) -> int:
        return 2 * x

    @app.task(base=DeferredTask, name="u.total", shared=False)
    def total(xs: list[int]) -> int:
        return sum(xs)

    assert chord([double.s(1), double.s(2)])(total.s()).get() == 6


def test_joins_chords_knows_which_backends_count_parts() -> None:
    from celery_qstash.tasks.deferred import joins_chords

    def backend(url: str | None) -> Any:
        app = Celery("backends", set_as_current=False)
        app.conf.result_backend = url
        return app.backend

    assert joins_chords(backend("cache+memory://")) and joins_chords(backend("redis://"))
    assert not joins_chords(backend("qstash://")) and not joins_chords(backend(None))
    assert not joins_chords(backend("rpc://"))  # Celery's chord_unlock: a broker's task


def test_the_body_sees_its_own_app_as_current_app_in_any_thread(app: Celery) -> None:
    # As on a worker: Celery code that looks the app up (Celery 5.3's Redis chord join
    # restores the group through current_app) must find the task's app, not a fallback
    # app without a result backend, in whatever thread the receiver runs the body.
    import threading

    from celery import current_app

    @app.task(base=DeferredTask, name="u.whose", shared=False)
    def whose() -> str:
        return str(current_app.main)

    body = {"kind": MESSAGE_KIND, "task": "u.whose", "id": "w1", "args": [], "kwargs": {},
            "retries": 0, "delivery": "n-whose"}
    answers: list[Any] = []
    thread = threading.Thread(
        target=lambda: answers.append(CallbackReceiver(app).handle(_signed(body))))
    thread.start()
    thread.join(10)
    assert answers[0].payload["result"] == "deferred-unit"
