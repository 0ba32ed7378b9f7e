"""AutoSend misbehaving between the emulator and the sandbox: the caller's publish
succeeds, the result tells what happened, QStash's retries follow the documented
delays (moved through the emulator's clock), and the inbox ends with exactly one
email per task: AutoSend's ``Idempotency-Key`` turns a redelivery into a replay."""

from __future__ import annotations

import pytest
from celery import Celery

from celery_qstash import DeliveryFailed

from .conftest import Stack, wait_until, welcome_task

#: QStash's default backoff before the first retry: e ** 2.5 seconds.
FIRST_BACKOFF_MS = 12182


def _retry(stack: Stack, task_id: str, count: int = 1) -> dict[str, object]:
    """The task's ``count``-th RETRY event, once logged."""
    events = stack.wait_for_state(task_id, "RETRY", count)
    return [e for e in reversed(events) if e["state"] == "RETRY"][count - 1]


def test_destination_down_then_back_is_delivered_once(app: Celery, stack: Stack) -> None:
    send = welcome_task(app)
    stack.autosend.down()
    try:
        result = send.apply_async((1,), task_id="dest-down-1")
        retry = _retry(stack, "dest-down-1")
    finally:
        stack.autosend.up()
    assert result.state == "RETRY"
    assert retry["nextDeliveryTime"] - retry["time"] == FIRST_BACKOFF_MS
    assert stack.inbox() == {}

    stack.advance(FIRST_BACKOFF_MS / 1000)

    assert "emailId" in result.get(timeout=20)
    assert result.retries == 1
    assert stack.inbox() == {"dest-down-1": 1}


def test_destination_down_to_the_end_fails_then_a_dlq_retry_sends_once(
    app: Celery, stack: Stack
) -> None:
    send = welcome_task(app, max_retries=1)
    stack.autosend.down()
    try:
        result = send.apply_async((2,), task_id="dest-down-2")
        _retry(stack, "dest-down-2")
        stack.advance(FIRST_BACKOFF_MS / 1000)
        stack.wait_for_state("dest-down-2", "FAILED")
    finally:
        stack.autosend.up()

    with pytest.raises(DeliveryFailed) as caught:
        result.get(timeout=20)
    assert caught.value.status is None
    assert "cannot reach api.autosend.com" in caught.value.message
    [dead] = stack.dlq()
    assert dead["messageId"] == result.message_id

    # The operator's resend from the DLQ: delivered once.
    stack.http.post(f"{stack.emulator.url}/v2/dlq/retry/{dead['dlqId']}",
                    headers=stack.auth).raise_for_status()
    assert stack.wait_for_inbox("dest-down-2") == {"dest-down-2": 1}
    assert stack.dlq() == []


def test_destination_slower_than_upstash_timeout_is_retried_and_replayed_once(
    app: Celery, stack: Stack
) -> None:
    """AutoSend takes the email but answers after QStash gave up: the retry carries
    the same Idempotency-Key, so AutoSend replays its first answer."""
    send = welcome_task(app, time_limit=1, default_retry_delay=5)
    stack.chaos(fail_next=1, status=None, delay_ms=2500)

    result = send.apply_async((3,), task_id="dest-slow-1")

    [error] = [e for e in stack.wait_for_state("dest-slow-1", "ERROR") if e["state"] == "ERROR"]
    assert "timeout after 1000 ms" in error["error"]
    # The slow AutoSend still captured the email once it woke.
    assert stack.wait_for_inbox("dest-slow-1") == {"dest-slow-1": 1}
    stack.advance(5)
    assert "emailId" in result.get(timeout=20)
    assert result.retries == 1
    assert stack.stats()["replayed"] == 1
    assert stack.inbox() == {"dest-slow-1": 1}


def test_destination_5xx_is_retried_until_it_succeeds(app: Celery, stack: Stack) -> None:
    send = welcome_task(app, default_retry_delay=7)
    stack.chaos(fail_next=2, status=502)

    result = send.apply_async((4,), task_id="dest-5xx-1")
    for count in (1, 2):
        retry = _retry(stack, "dest-5xx-1", count)
        assert retry["nextDeliveryTime"] - retry["time"] == 7000
        assert result.state == "RETRY"
        stack.advance(7)

    assert "emailId" in result.get(timeout=20)
    assert result.retries == 2
    assert stack.stats()["rejected"] == {"502": 2}
    assert stack.inbox() == {"dest-5xx-1": 1}


def test_destination_5xx_past_the_retries_is_a_failure_with_autosends_words(
    app: Celery, stack: Stack
) -> None:
    send = welcome_task(app, max_retries=0)
    stack.chaos(fail_next=1, status=503)

    result = send.apply_async((5,), task_id="dest-5xx-2")

    with pytest.raises(DeliveryFailed) as caught:
        result.get(timeout=20)
    assert caught.value.status == 503
    assert "Service unavailable" in str(caught.value)
    assert stack.inbox() == {}


def test_destination_429_with_retry_after_waits_what_it_says(app: Celery, stack: Stack) -> None:
    send = welcome_task(app, default_retry_delay=5)
    stack.chaos(fail_next=1, status=429, retry_after=30)

    result = send.apply_async((6,), task_id="dest-429-1")
    retry = _retry(stack, "dest-429-1")

    # Retry-After (30 s) wins over the task's own retry delay (5 s).
    assert retry["nextDeliveryTime"] - retry["time"] == 30_000
    stack.advance(29)
    assert stack.inbox() == {} and result.state == "RETRY"
    stack.advance(1)
    assert "emailId" in result.get(timeout=20)
    assert stack.inbox() == {"dest-429-1": 1}


def test_destination_429_without_retry_after_uses_the_tasks_delay(
    app: Celery, stack: Stack
) -> None:
    send = welcome_task(app, default_retry_delay=5)
    stack.chaos(fail_next=1, status=429)

    result = send.apply_async((7,), task_id="dest-429-2")
    retry = _retry(stack, "dest-429-2")

    assert retry["nextDeliveryTime"] - retry["time"] == 5000
    stack.advance(5)
    assert "emailId" in result.get(timeout=20)
    assert result.retries == 1
    assert stack.inbox() == {"dest-429-2": 1}


def test_destination_429_without_retry_after_or_task_delay_uses_qstash_backoff(
    app: Celery, stack: Stack
) -> None:
    send = welcome_task(app)
    stack.chaos(fail_next=1, status=429)

    result = send.apply_async((8,), task_id="dest-429-3")
    retry = _retry(stack, "dest-429-3")

    assert retry["nextDeliveryTime"] - retry["time"] == FIRST_BACKOFF_MS
    stack.advance(FIRST_BACKOFF_MS / 1000)
    wait_until(lambda: result.state == "SUCCESS", what="delivery after the backoff")
    assert stack.inbox() == {"dest-429-3": 1}
