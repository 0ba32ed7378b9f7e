"""QStash misbehaving between the caller and the emulator: what ``.delay()`` tells the
caller, and that the inbox ends with every email exactly once (calling again with
the same ``task_id`` is the recovery, and never sends twice)."""

from __future__ import annotations

import json

import pytest
from celery import Celery

from celery_qstash import PublishError
from celery_qstash.local.faultproxy import Fault

from .conftest import PUBLISH_TIMEOUT, Stack, wait_until, welcome_task

PUBLISH = "/v2/publish/"


def test_qstash_down_is_a_network_error_and_a_later_call_sends_once(
    app: Celery, stack: Stack
) -> None:
    send = welcome_task(app)
    stack.qstash.down()
    try:
        with pytest.raises(PublishError) as caught:
            send.apply_async((1,), task_id="down-1")
    finally:
        stack.qstash.up()

    assert caught.value.status is None
    assert not caught.value.outcome_unknown  # nothing listened: it was certainly not stored
    assert f"network error talking to {stack.qstash.url}" in str(caught.value)
    assert stack.events(label="down-1") == []

    result = send.apply_async((1,), task_id="down-1")
    assert "emailId" in result.get(timeout=20)
    assert stack.wait_for_inbox("down-1") == {"down-1": 1}


def test_qstash_5xx_is_retried_within_the_call(app: Celery, stack: Stack) -> None:
    send = welcome_task(app)
    stack.qstash.add(Fault.respond(503, '{"error":"busy"}', match=PUBLISH), times=2)

    result = send.apply_async((2,), task_id="5xx-1")

    assert stack.qstash.counts(PUBLISH) == {"respond": 2, "pass": 1}
    result.get(timeout=20)
    assert stack.wait_for_inbox("5xx-1") == {"5xx-1": 1}


def test_qstash_5xx_to_the_end_raises_with_its_status_and_sends_nothing(
    app: Celery, stack: Stack
) -> None:
    send = welcome_task(app)
    stack.qstash.add(Fault.respond(500, '{"error":"internal"}', match=PUBLISH), times=100)

    with pytest.raises(PublishError) as caught:
        send.apply_async((3,), task_id="5xx-2", retry_policy={"max_retries": 2})

    assert caught.value.status == 500
    assert caught.value.error == "internal"
    # A 5xx may come from a proxy after QStash stored it: calling again is the way out.
    assert caught.value.outcome_unknown
    assert "Calling again with the same task_id (5xx-2) is safe" in str(caught.value)
    assert stack.qstash.counts(PUBLISH) == {"respond": 3}  # the first try + 2 retries
    stack.qstash.clear()
    send.apply_async((3,), task_id="5xx-2").get(timeout=20)
    assert stack.wait_for_inbox("5xx-2") == {"5xx-2": 1}


def test_qstash_429_is_not_retried_and_a_later_call_sends_once(
    app: Celery, stack: Stack
) -> None:
    send = welcome_task(app)
    body = json.dumps({"error": "Too many requests"})
    stack.qstash.add(Fault.respond(429, body, headers={"Retry-After": "1"}, match=PUBLISH))

    with pytest.raises(PublishError) as caught:
        send.apply_async((4,), task_id="429-1")

    assert caught.value.status == 429
    assert not caught.value.outcome_unknown
    assert stack.qstash.counts(PUBLISH) == {"respond": 1}
    send.apply_async((4,), task_id="429-1").get(timeout=20)
    assert stack.wait_for_inbox("429-1") == {"429-1": 1}


def test_a_wrong_token_is_a_401_naming_nothing_secret(app: Celery, stack: Stack) -> None:
    send = welcome_task(app)
    wrong = "qstash-token-that-is-wrong-5f2c"
    app.conf.qstash_token = wrong

    with pytest.raises(PublishError) as caught:
        send.apply_async((5,), task_id="401-1")

    assert caught.value.status == 401
    assert not caught.value.outcome_unknown
    assert "check qstash_token / QSTASH_TOKEN" in str(caught.value)  # says what to fix
    assert wrong not in str(caught.value) and wrong not in repr(caught.value.__dict__)
    assert stack.qstash.counts(PUBLISH) == {"pass": 1}  # an auth error is not retried
    assert stack.inbox() == {}


def test_slow_qstash_times_out_then_the_same_task_id_is_safe_to_send_again(
    app: Celery, stack: Stack
) -> None:
    """QStash stores the message after the caller gave up: calling again is deduplicated."""
    send = welcome_task(app)
    stack.qstash.add(Fault.delay(PUBLISH_TIMEOUT * 2, match=PUBLISH))

    with pytest.raises(PublishError) as caught:
        send.apply_async((6,), task_id="slow-1")
    assert caught.value.status is None  # a timeout: QStash never answered in time
    assert caught.value.outcome_unknown
    assert caught.value.task_id == "slow-1"

    # The slow QStash still stored it, and delivers it.
    assert stack.wait_for_inbox("slow-1") == {"slow-1": 1}
    again = send.apply_async((6,), task_id="slow-1")
    again.get(timeout=20)
    wait_until(lambda: stack.qstash.counts(PUBLISH)["pass"] == 1, what="the second publish")
    assert stack.inbox() == {"slow-1": 1}


def test_a_lost_answer_is_retried_and_deduplicated_into_one_email(
    app: Celery, stack: Stack
) -> None:
    """QStash stored the message but the answer never came back: the shim's retry is
    answered as a duplicate, and the call succeeds."""
    send = welcome_task(app)
    stack.qstash.add(Fault.drop_response(match=PUBLISH))

    result = send.apply_async((7,), task_id="lost-1")

    assert [e.status for e in stack.qstash.events] == [200, 202]  # stored, then duplicate
    assert result.message_id.startswith("msg_")
    assert "emailId" in result.get(timeout=20)
    assert stack.wait_for_inbox("lost-1") == {"lost-1": 1}
    assert len([e for e in stack.events(label="lost-1") if e["state"] == "CREATED"]) == 1


def test_a_request_cut_before_qstash_saw_it_is_retried(app: Celery, stack: Stack) -> None:
    send = welcome_task(app)
    stack.qstash.add(Fault.drop_request(match=PUBLISH))

    send.apply_async((8,), task_id="cut-1").get(timeout=20)

    assert stack.qstash.counts(PUBLISH) == {"drop_request": 1, "pass": 1}
    assert stack.wait_for_inbox("cut-1") == {"cut-1": 1}


def test_every_answer_lost_is_outcome_unknown_and_calling_again_sends_once(
    app: Celery, stack: Stack
) -> None:
    send = welcome_task(app)
    stack.qstash.add(Fault.drop_response(match=PUBLISH), times=100)

    with pytest.raises(PublishError) as caught:
        send.apply_async((9,), task_id="lost-2")

    assert caught.value.outcome_unknown
    assert "may or may not have stored task lost-2" in str(caught.value)
    stack.qstash.clear()
    # The first attempt was stored and is delivered; the call again is deduplicated.
    again = send.apply_async((9,), task_id="lost-2")
    assert again.get(timeout=20)["emailId"]
    assert stack.wait_for_inbox("lost-2") == {"lost-2": 1}
    publishes = [e for e in stack.qstash.events if e.path.startswith(PUBLISH)]
    assert publishes[-1].status == 202  # the call again: a duplicate


def test_trickling_qstash_is_cut_at_the_deadline_and_sent_once(
    app: Celery, stack: Stack
) -> None:
    """The answer arrives a byte every 50 ms (about 12 s in all); per-read timeouts
    never fire, the call's wall-clock deadline does."""
    send = welcome_task(app)
    stack.qstash.add(Fault.trickle(0.05, match=PUBLISH))

    with pytest.raises(PublishError) as caught:
        send.apply_async((10,), task_id="trickle-1", retry=False)

    assert caught.value.outcome_unknown  # the request reached QStash
    assert stack.qstash.events[0].status == 200  # and QStash stored it
    send.apply_async((10,), task_id="trickle-1").get(timeout=20)
    assert stack.wait_for_inbox("trickle-1") == {"trickle-1": 1}


@pytest.mark.parametrize("body", ["<html>Bad gateway page</html>", "{}", '{"messageId": 7}'])
def test_a_200_that_is_not_qstashs_answer_is_a_publish_error(
    app: Celery, stack: Stack, body: str
) -> None:
    send = welcome_task(app)
    stack.qstash.add(Fault.respond(200, body, headers={"Content-Type": "text/html"},
                                   match=PUBLISH))

    with pytest.raises(PublishError) as caught:
        send.apply_async((11,), task_id="malformed-1")

    assert "does not look like QStash" in str(caught.value)
    assert f"the server at {stack.qstash.url}" in str(caught.value)
    assert stack.qstash.counts(PUBLISH) == {"respond": 1}  # not retried
    send.apply_async((11,), task_id="malformed-1").get(timeout=20)
    assert stack.wait_for_inbox("malformed-1") == {"malformed-1": 1}
