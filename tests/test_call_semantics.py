"""What a ported task's body and call site can do, production (respx QStash) and eager alike.

``apply()`` outside eager mode, ``self.retry()``/``Retry``/``Reject``, "nothing to send"
(``None``, ``Ignore``), strict eager canvas, and diagnostics that point at the caller.
Each test here failed before issue 7.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import respx
from celery import Celery, Task, chain, chord, group, shared_task, states
from celery.exceptions import Ignore, Reject, Retry
from celery.result import EagerResult

from celery_qstash import (
    CeleryQStashWarning,
    Email,
    EmailValidationError,
    QStashAsyncResult,
    RetryNotSupported,
    UnsupportedOption,
    autosend_task,
)
from celery_qstash.publish.options import canvas_error
from celery_qstash.testing import outbox

calls: list[str] = []


def _email(n: int = 1) -> Email:
    return Email(to="jane@example.com", from_="shop@example.com", subject=f"#{n}", text="hi")


@autosend_task
def send_one(n: int = 1) -> Email:
    calls.append("send_one")
    return _email(n)


@autosend_task(bind=True)
def send_or_retry(self: Task, ready: bool) -> Email:
    calls.append(self.request.id)
    if not ready:
        raise self.retry(exc=RuntimeError("PDF not ready"), countdown=5)
    return _email()


@autosend_task
def raise_celery(kind: str) -> Email:
    calls.append(kind)
    raise {"Retry": Retry(), "Reject": Reject("no", requeue=False), "Ignore": Ignore()}[kind]


@autosend_task
def maybe_send(send: bool) -> Email | None:
    calls.append("maybe_send")
    return _email() if send else None


@autosend_task
def returns_text() -> str:
    return "not an email"


@autosend_task(autoretry_for=(ConnectionError,), max_retries=3)
def flaky() -> Email:
    calls.append("flaky")
    raise ConnectionError("SMTP relay down")


@autosend_task(acks_late=True)
def send_late() -> Email:
    return _email()


@shared_task
def plain(*args: Any) -> int:
    return 1


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    calls.clear()
    yield
    calls.clear()


class Mode:
    def __init__(self, name: str, router: respx.MockRouter) -> None:
        self.name = name
        self.router = router

    def published(self) -> int:
        """Messages that left the caller: QStash publishes (a /v2/batch request counts its
        messages), or eager outbox entries."""
        if self.name == "eager":
            return len(outbox)
        return sum(
            len(json.loads(call.request.content)) if call.request.url.path == "/v2/batch" else 1
            for call in self.router.calls
        )


@pytest.fixture(params=["production", "eager"])
def mode(request: pytest.FixtureRequest, app: Celery) -> Iterator[Mode]:
    """Both ways of running: QStash answered by respx, or task_always_eager (no network)."""
    if request.param == "eager":
        app.conf.task_always_eager = True
        with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
            yield Mode("eager", router)
        assert router.calls.call_count == 0
        return
    yield Mode("production", request.getfixturevalue("qstash_mock"))
    assert len(outbox) == 0  # only eager mode writes to the outbox


# --- 1. apply() outside eager mode publishes for real ---------------------------------------


def test_apply_outside_eager_mode_publishes(app: Celery, qstash_mock: respx.MockRouter) -> None:
    result = send_one.apply((3,), countdown=30)

    assert isinstance(result, QStashAsyncResult)
    assert qstash_mock["publish"].call_count == 1
    request = qstash_mock["publish"].calls.last.request
    assert request.headers["Upstash-Delay"] == "30s"  # mapped as apply_async maps it
    assert request.headers["Upstash-Label"] == result.id
    assert result.message_id == "msg_1"
    assert len(outbox) == 0  # before issue 7: a made-up emailId in the outbox, nothing published


def test_apply_outside_eager_mode_validates_like_apply_async(
    app: Celery, qstash_mock: respx.MockRouter
) -> None:
    with pytest.raises(UnsupportedOption, match="did you mean `countdown`"):
        send_one.apply((1,), countdwn=5)
    with pytest.raises(UnsupportedOption) as info:
        send_one.apply((1,), link=plain.s())
    assert info.value.option == "link"
    assert qstash_mock.calls.call_count == 0


def test_apply_in_eager_mode_still_fills_the_outbox(app: Celery) -> None:
    app.conf.task_always_eager = True
    result = send_one.apply((2,))
    assert isinstance(result, EagerResult)
    assert outbox.last.task_id == result.id
    with pytest.raises(UnsupportedOption) as info:
        send_one.apply((1,), link=plain.s())  # validated as apply_async would
    assert info.value.option == "link"


# --- 2. self.retry(), Retry and Reject ------------------------------------------------------


@pytest.mark.parametrize("propagates", [False, True])
def test_self_retry_is_one_typed_error_and_publishes_nothing(
    mode: Mode, app: Celery, propagates: bool
) -> None:
    app.conf.task_eager_propagates = propagates
    with pytest.raises(RetryNotSupported) as info:
        send_or_retry.delay(False)

    assert isinstance(info.value, UnsupportedOption)
    assert info.value.option == "self.retry()"
    for hint in ("max_retries", "retry_backoff", "retry_kwargs", "QStash retries failed deliveries"):
        assert hint in str(info.value)
    assert len(calls) == 1  # the body ran once: no recursion
    assert mode.published() == 0


@pytest.mark.parametrize("kind", ["Retry", "Reject"])
def test_retry_and_reject_raised_by_the_body(mode: Mode, app: Celery, kind: str) -> None:
    with pytest.raises(RetryNotSupported) as info:
        raise_celery.delay(kind)
    assert info.value.option == kind
    assert str(info.value).startswith(f"{kind}: the task body runs at call time")
    assert calls == [kind]
    assert mode.published() == 0


def test_autoretry_for_lets_the_exception_reach_the_caller(mode: Mode, app: Celery) -> None:
    app.conf.task_eager_propagates = True  # eager: an exception reaches the caller only so
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CeleryQStashWarning)
        with pytest.raises(ConnectionError, match="SMTP relay down"):
            flaky.delay()
    assert calls == ["flaky"]
    assert mode.published() == 0


# --- 3. nothing to send --------------------------------------------------------------------


@pytest.mark.parametrize("how", ["return None", "raise Ignore"])
def test_nothing_to_send_is_ignored(mode: Mode, app: Celery, how: str) -> None:
    app.conf.task_eager_propagates = True
    result = maybe_send.delay(False) if how == "return None" else raise_celery.delay("Ignore")

    assert result.state == states.IGNORED
    assert result.ready()
    assert not result.successful() and not result.failed()
    assert result.get(timeout=1) is None
    assert mode.published() == 0


def test_other_non_email_returns_stay_validation_errors(mode: Mode, app: Celery) -> None:
    app.conf.task_eager_propagates = True
    with pytest.raises(EmailValidationError, match="not str"):
        returns_text.delay()


# --- 4. strict eager mode: what production refuses -------------------------------------------


def _refusal(fn: Any) -> str:
    with pytest.raises(UnsupportedOption) as info:
        fn()
    return f"{type(info.value).__name__}: {info.value}"


CHAIN = f"UnsupportedOption: {canvas_error('chain')}"


@pytest.mark.parametrize(
    "build",
    [
        lambda: chain(send_one.s(1), send_one.si(2)).delay(),
        lambda: (send_one.s(1) | plain.s()).apply_async(),
        lambda: chain(send_one.s(1), send_one.si(2)).apply(),
    ],
    ids=["chain of two", "pipe into a plain task", "chain.apply"],
)
def test_a_chain_starting_with_a_qstash_task_is_refused(mode: Mode, app: Celery, build: Any) -> None:
    assert _refusal(build) == CHAIN
    assert mode.published() == 0


def test_a_qstash_task_as_the_last_step_is_accepted_in_eager_mode(app: Celery) -> None:
    # Production too: the previous step's worker publishes it with an empty chain.
    app.conf.task_always_eager = True
    result = (plain.s() | send_one.si(5)).apply_async()
    assert result.state == states.SUCCESS
    assert [e.subject for e in outbox] == ["#5"]


def test_a_chord_header_of_qstash_tasks_is_refused_in_eager_mode(app: Celery) -> None:
    app.conf.task_always_eager = True
    assert _refusal(lambda: chord([send_one.si(1), send_one.si(2)])(plain.s())) == (
        f"UnsupportedOption: {canvas_error('chord')}"
    )
    assert len(outbox) == 0


@pytest.mark.parametrize("option", ["link", "link_error"])
def test_a_signature_callback_is_refused(mode: Mode, app: Celery, option: str) -> None:
    signature = send_one.s(1).set(**{option: plain.s()})
    with pytest.raises(UnsupportedOption) as info:
        signature.delay()
    assert info.value.option == option
    assert "a Celery signature needs a worker to run it" in str(info.value)


def test_groups_still_work(mode: Mode, app: Celery) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", CeleryQStashWarning)
        result = group(send_one.s(i) for i in range(3)).apply_async()
    assert len(result.results) == 3
    assert mode.published() == 3


# --- 5. diagnostics --------------------------------------------------------------------------


def _ours(caught: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in caught if issubclass(w.category, CeleryQStashWarning)]


def test_option_warnings_point_at_the_callers_line(mode: Mode, app: Celery) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        here = sys._getframe().f_lineno
        send_one.apply_async((1,), priority=5)
        send_one.s(1).apply_async(routing_key="x")
        send_one.s(1).set(compression="zlib").delay()
    ours = _ours(caught)
    assert [str(w.message).split(":")[1].strip() for w in ours] == [
        "priority", "routing_key", "compression"
    ]
    assert [(w.filename, w.lineno) for w in ours] == [
        (__file__, here + 1), (__file__, here + 2), (__file__, here + 3)
    ]


def test_task_attribute_warnings_point_at_the_delay_line(mode: Mode, app: Celery) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1
        send_late.delay()
    [warning] = [w for w in _ours(caught) if ": acks_late: " in str(w.message)]
    assert (warning.filename, warning.lineno) == (__file__, line)


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("countdwn", "countdown"), ("exipres", "expires"), ("task_idd", "task_id"), ("queu", "queue")],
)
def test_a_typo_gets_did_you_mean_before_the_header_hint(
    mode: Mode, app: Celery, typo: str, meant: str
) -> None:
    with pytest.raises(UnsupportedOption) as info:
        send_one.apply_async((1,), **{typo: 5})
    message = str(info.value)
    assert info.value.option == typo
    assert f"did you mean `{meant}`?" in message
    assert message.index("did you mean") < message.index("headers={...}")


def test_a_name_unlike_any_option_gets_only_the_header_hint(mode: Mode, app: Celery) -> None:
    with pytest.raises(UnsupportedOption) as info:
        send_one.apply_async((1,), x_tenant_name="acme")
    assert "did you mean" not in str(info.value)
    assert "headers={...}" in str(info.value)


def test_the_last_chain_step_is_found_on_older_celery_too() -> None:
    # Celery < 5.7's chain.apply loops `for task in self.tasks` without index locals.
    from celery_qstash.tasks.planning import _last_step

    steps = chain(plain.s(), send_one.si(1))
    first, last = steps.tasks
    assert _last_step({"self": steps, "task": last})
    assert not _last_step({"self": steps, "task": first})
    assert _last_step({"index": 1, "last_index": 1})
    assert not _last_step({"index": 0, "last_index": 1})


def test_the_pytest_plugins_forced_eager_mode_is_eager_for_apply_too(
    app: Celery, qstash_mock: respx.MockRouter
) -> None:
    from celery_qstash.publish.transports.eager import force_eager

    force_eager(True)
    try:
        result = send_one.apply((4,))
        with pytest.raises(RetryNotSupported):
            send_or_retry.delay(False)
        nothing = maybe_send.delay(False)
    finally:
        force_eager(False)
    assert isinstance(result, EagerResult)
    assert outbox.last.task_id == result.id
    assert nothing.state == states.IGNORED
    assert qstash_mock.calls.call_count == 0
