"""The official qstash SDK (sync and async), endpoint group by group, through QStash's
public API only: against the emulator by default, against a real QStash with
``scripts/contract`` (see conftest).

A live run cannot see a destination, so deliveries are observed as QStash reports them:
the states in the logs and the DLQ, polled with a deadline (``reach``, ``eventually``).
Destinations are ``qstash.status_url``: a 2xx is delivered, a 5xx fails. Every name,
label and key is unique to the run, and each test cleans up what it made, so a real
account keeps nothing but its logs. What only the emulator can show (what a recording
destination received and its signature, the emulator's routes) or what must not be done
to a real account (rotating its keys, cancelling all its messages) is in
``test_sdk_local.py``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from qstash import AsyncQStash, QStash
from qstash.log import LogState
from qstash.message import PublishResponse

from .conftest import (
    EVENTUALLY_SECONDS,
    Backend,
    dead_letters,
    eventually,
    ids_of,
    reach,
    states,
)


def cancel_by_label(client: QStash, label: str) -> int:
    answer = client.http.request(path="/v2/messages", method="DELETE", params={"label": label})
    return int(answer["cancelled"])


def test_publish_json_options_read_back(client: QStash, qstash: Backend, label: str) -> None:
    key = qstash.unique("fc")
    result = client.message.publish_json(
        url=qstash.status_url(200), body={"hello": "world"}, headers={"X-Api": "k"},
        retries=2, retry_delay="1000 * retried", timeout="30s", label=label, delay="1h",
        callback=qstash.status_url(200), failure_callback=qstash.status_url(201),
        flow_control={"key": key, "parallelism": 3, "rate": 10, "period": "1m"},
    )
    assert isinstance(result, PublishResponse)
    message = client.message.get(result.message_id)
    assert message.message_id == result.message_id
    assert message.url == qstash.status_url(200)
    assert message.method == "POST"
    assert message.max_retries == 2
    assert message.retry_delay_expression == "1000 * retried"
    assert message.callback == qstash.status_url(200)
    assert message.failure_callback == qstash.status_url(201)
    assert message.label == label
    assert message.flow_control is not None and message.flow_control.key == key
    assert message.flow_control.parallelism == 3 and message.flow_control.rate == 10
    assert message.flow_control.period == 60
    assert json.loads(message.body or "") == {"hello": "world"}
    assert message.headers is not None and message.headers["X-Api"] == ["k"]
    assert message.not_before - message.created_at == 3_600_000


def test_publish_is_delivered_and_logged(client: QStash, qstash: Backend, label: str) -> None:
    result = client.message.publish_json(url=qstash.status_url(200), body={"n": 1},
                                         label=label)
    assert isinstance(result, PublishResponse)
    reach(client, "DELIVERED", result.message_id)
    assert states(client, result.message_id) == ["CREATED", "ACTIVE", "DELIVERED"]
    [delivered] = client.log.list(filter={"message_id": result.message_id,
                                          "state": LogState.DELIVERED}).logs
    assert delivered.url == qstash.status_url(200) and delivered.response_status == 200


def test_publish_options_delay_not_before_dedup(client: QStash, qstash: Backend,
                                                label: str) -> None:
    url = qstash.status_url(200)
    delayed = client.message.publish(url=url, body="x", delay=90, label=label)
    message = client.message.get(delayed.message_id)
    assert message.not_before - message.created_at == 90_000
    in_an_hour = int(time.time()) + 3600  # within every plan's longest delay
    not_before = client.message.get(client.message.publish(
        url=url, body="x", not_before=in_an_hour, label=label).message_id)
    assert not_before.not_before == in_an_hour * 1000
    dedup = qstash.unique("dedup")
    first = client.message.publish(url=url, body="x", deduplication_id=dedup, delay="1h",
                                   label=label)
    second = client.message.publish(url=url, body="y", deduplication_id=dedup, delay="1h",
                                    label=label)
    assert second.deduplicated and second.message_id == first.message_id
    body = qstash.unique("body")
    a = client.message.publish(url=url, body=body, content_based_deduplication=True,
                               delay="1h", label=label)
    b = client.message.publish(url=url, body=body, content_based_deduplication=True,
                               delay="1h", label=label)
    assert b.deduplicated and a.message_id == b.message_id


def test_cancel_cancel_many_and_cancel_by_filter(client: QStash, qstash: Backend,
                                                 label: str) -> None:
    ids = [client.message.publish(url=qstash.status_url(200), body="b", delay="1h",
                                  label=label).message_id for _ in range(5)]
    client.message.cancel(ids[0])
    assert client.message.cancel_many([ids[1], ids[2]]) == 2
    assert cancel_by_label(client, label) == 2

    def cancelled() -> None:
        logs = client.log.list(filter={"state": LogState.CANCELED, "label": label}).logs
        assert sorted(log.message_id for log in logs) == sorted(ids)

    eventually(cancelled, "five CANCELED messages")


def test_enqueue_and_queue_api(client: QStash, qstash: Backend, label: str) -> None:
    queue = qstash.unique("queue")
    try:
        client.queue.upsert(queue, parallelism=2, paused=True)
        first = client.message.enqueue(queue=queue, url=qstash.status_url(200), body="1",
                                       label=label)
        second = client.message.enqueue_json(queue=queue, url=qstash.status_url(200),
                                             body={"n": 2}, label=label)
        assert client.message.get(first.message_id).queue == queue

        def two_waiting() -> None:
            got = client.queue.get(queue)
            assert (got.name, got.parallelism, got.lag, got.paused) == (queue, 2, 2, True)

        eventually(two_waiting, "the queue's lag of 2")
        assert queue in [q.name for q in client.queue.list()]
        client.queue.resume(queue)
        assert not client.queue.get(queue).paused
        reach(client, "DELIVERED", first.message_id, second.message_id)
        client.queue.pause(queue)
        assert client.queue.get(queue).paused
    finally:
        client.queue.delete(queue)
    assert queue not in [q.name for q in client.queue.list()]


def test_batch_and_batch_json(client: QStash, qstash: Backend, label: str) -> None:
    group, queue = qstash.unique("group"), qstash.unique("batchq")
    client.url_group.upsert_endpoints(url_group=group, endpoints=[
        {"url": qstash.status_url(200)}, {"url": qstash.status_url(201)}])
    try:
        results = client.message.batch([
            {"url": qstash.status_url(200), "body": "one", "retries": 0, "label": label},
            {"url_group": group, "body": "two", "label": label},
            {"url": qstash.status_url(202), "queue": queue, "body": "three", "label": label},
        ])
        assert len(results) == 3 and isinstance(results[1], list) and len(results[1]) == 2
        assert {r.url for r in results[1]} == {qstash.status_url(200), qstash.status_url(201)}
        json_results = client.message.batch_json([{"url": qstash.status_url(200),
                                                   "body": {"k": 1}, "label": label}])
        assert len(json_results) == 1
        ids = [r.message_id for r in [results[0], *results[1], results[2], *json_results]
               if not isinstance(r, list)]
        assert len(ids) == 5
        reach(client, "DELIVERED", *ids)
    finally:
        client.url_group.delete(group)
        client.queue.delete(queue)


def test_log_list_filters_and_pagination(client: QStash, qstash: Backend,
                                         label: str, capsys: pytest.CaptureFixture[str]) -> None:
    other = qstash.unique("other")
    ids = [client.message.publish(url=qstash.status_url(200), body=str(i),
                                  label=label if i < 2 else other).message_id
           for i in range(4)]
    reach(client, "DELIVERED", *ids)
    page = client.log.list(count=2, filter={"label": label})
    seen = [log.message_id for log in page.logs]
    while page.cursor:
        page = client.log.list(count=2, cursor=page.cursor, filter={"label": label})
        seen += [log.message_id for log in page.logs]
    assert sorted(seen) == sorted(ids[:2] * 3)  # CREATED, ACTIVE, DELIVERED each
    delivered = client.log.list(filter={"state": LogState.DELIVERED, "label": other}).logs
    assert sorted(log.message_id for log in delivered) == sorted(ids[2:])
    one = client.log.list(filter={"message_id": ids[0]}).logs
    assert [log.state for log in one] == [LogState.DELIVERED, LogState.ACTIVE, LogState.CREATED]
    assert one[0].url == qstash.status_url(200) and one[0].response_status == 200
    assert one[0].time >= one[-1].time
    several = client.log.list(filter={"message_ids": ids[1:3]}).logs
    assert {log.message_id for log in several} == set(ids[1:3])
    assert client.log.list(filter={"url": f"{qstash.status_url(200)}/nowhere"}).logs == []
    capsys.readouterr()  # the SDK prints raw responses (known quirk)


def test_dlq_list_get_delete_and_rest_retry(client: QStash, qstash: Backend,
                                            label: str) -> None:
    ids = [client.message.publish(url=qstash.status_url(500), body=str(i), retries=0,
                                  label=label).message_id for i in range(4)]

    def four() -> list[Any]:
        found = dead_letters(client, label)
        assert ids_of(found) == sorted(ids)
        return found

    first = eventually(four, "four dead letters")[0]
    assert first.response_status == 500
    assert first.response_body == "500 Internal Server Error"
    assert first.dlq_id and client.dlq.get(first.dlq_id).message_id == first.message_id
    filtered = client.dlq.list(filter={"response_status": 500, "label": label}).messages
    assert len(filtered) == 4
    assert len(client.dlq.list(count=2, filter={"label": label}).messages) == 2
    client.dlq.delete(first.dlq_id)
    remaining = [m.dlq_id for m in dead_letters(client, label)]
    assert len(remaining) == 3
    assert client.dlq.delete_many([remaining[0]]) == 1
    # The REST API's retries (the SDK has none): 201 and a new message each; both fail
    # again (the destination still answers 500) and are logged FAILED.
    retried = client.http.request(path=f"/v2/dlq/retry/{remaining[1]}", method="POST")
    bulk = client.http.request(path="/v2/dlq/retry", method="POST",
                               params={"dlqIds": remaining[2]})
    assert len(bulk["responses"]) == 1
    again = [retried["messageId"], bulk["responses"][0]["messageId"]]
    assert all(m.startswith("msg_") for m in again) and not set(again) & set(ids)
    assert not {m.dlq_id for m in dead_letters(client, label)} & set(remaining)
    reach(client, "FAILED", *again)


def test_url_groups(client: QStash, qstash: Backend, label: str) -> None:
    group = qstash.unique("team")
    a, b = qstash.status_url(200), qstash.status_url(201)
    client.url_group.upsert_endpoints(url_group=group, endpoints=[{"url": a, "name": "a"},
                                                                  {"url": b}])
    try:
        got = client.url_group.get(group)
        assert got.name == group and {e.url for e in got.endpoints} == {a, b}
        assert group in [g.name for g in client.url_group.list()]
        results = client.message.publish_json(url_group=group, body={"to": "all"},
                                              label=label)
        assert isinstance(results, list) and {r.url for r in results} == {a, b}
        reach(client, "DELIVERED", *(r.message_id for r in results))
        logs = client.log.list(filter={"url_group": group, "state": LogState.DELIVERED}).logs
        assert {log.url_group for log in logs} == {group} and len(logs) == 2
        client.url_group.remove_endpoints(url_group=group, endpoints=[{"name": "a"}])
        assert [e.url for e in client.url_group.get(group).endpoints] == [b]
    finally:
        client.url_group.delete(group)
    assert group not in [g.name for g in client.url_group.list()]


def test_signing_keys_get(client: QStash, qstash: Backend) -> None:
    keys = client.signing_key.get()
    assert (keys.current, keys.next) == (qstash.current_signing_key, qstash.next_signing_key)


def test_flow_control_api(client: QStash, qstash: Backend, label: str) -> None:
    key = qstash.unique("fckey")
    client.message.publish(url=qstash.status_url(200), body="x", delay="1h", label=label,
                           flow_control={"key": key, "parallelism": 2})
    info = client.flow_control.get(key)
    assert info.key == key and info.parallelism_max == 2
    # Delayed, not held back by the key (OAS FlowControlKey.waitListSize).
    assert info.wait_list_size == 0
    client.flow_control.pause(key)
    assert client.flow_control.get(key).is_paused
    client.flow_control.resume(key)
    assert not client.flow_control.get(key).is_paused
    client.flow_control.pin(key, {"parallelism": 5, "rate": 7, "period": 60})
    pinned = client.flow_control.get(key)
    assert pinned.is_pinned_parallelism and pinned.is_pinned_rate
    assert (pinned.parallelism_max, pinned.rate_max, pinned.rate_period) == (5, 7, 60)
    client.flow_control.unpin(key, {"parallelism": True, "rate": True})
    assert not client.flow_control.get(key).is_pinned_rate
    client.flow_control.reset_rate(key)
    assert client.flow_control.get_global_parallelism().parallelism_count >= 0
    listed = client.http.request(path="/v2/flowControl", method="GET",
                                 params={"search": key[:-3]})
    assert key in [f["flowControlKey"] for f in listed]


def test_schedules(client: QStash, qstash: Backend) -> None:
    url, named = qstash.status_url(200), qstash.unique("schedule")
    # Once a year, at midnight on 1 January: nothing fires while the test runs.
    schedule_id = client.schedule.create(destination=url, cron="0 0 1 1 *", body="b",
                                         retries=1, label=qstash.unique("nightly"))
    try:
        assert client.schedule.create_json(destination=url, cron="0 0 1 1 *", body={"a": 1},
                                           schedule_id=named) == named
        schedule = client.schedule.get(schedule_id)
        assert schedule.cron == "0 0 1 1 *" and schedule.destination == url
        assert schedule.retries == 1 and not schedule.paused and schedule.next_schedule_time
        listed = {s.schedule_id for s in client.schedule.list()}
        assert {schedule_id, named} <= listed
        client.schedule.pause(schedule_id)
        assert client.schedule.get(schedule_id).paused
        client.schedule.resume(schedule_id)
        assert not client.schedule.get(schedule_id).paused
        # Upsert by id keeps one schedule.
        client.schedule.create(destination=url, cron="0 0 2 1 *", schedule_id=named)
        assert client.schedule.get(named).cron == "0 0 2 1 *"
        client.schedule.delete(schedule_id)
        assert schedule_id not in {s.schedule_id for s in client.schedule.list()}
    finally:
        client.schedule.delete(schedule_id)
        client.schedule.delete(named)


async def eventually_async(check: object, what: str) -> None:
    deadline = time.monotonic() + EVENTUALLY_SECONDS
    while True:
        try:
            await check()  # type: ignore[operator]
            return
        except AssertionError as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up waiting for {what}: {exc}") from exc
        await asyncio.sleep(0.05)


async def test_async_client(qstash: Backend, label: str) -> None:
    aclient: AsyncQStash = qstash.async_client()
    queue, group = qstash.unique("aq"), qstash.unique("ag")
    result = await aclient.message.publish_json(url=qstash.status_url(200), body={"a": 1},
                                                retries=0, label=label)
    assert isinstance(result, PublishResponse)
    await aclient.queue.upsert(queue, parallelism=1)
    schedule_id = await aclient.schedule.create(destination=qstash.status_url(200),
                                                cron="0 0 1 1 *")
    try:
        await aclient.message.enqueue(queue=queue, url=qstash.status_url(200), body="q",
                                      label=label)
        assert queue in [q.name for q in await aclient.queue.list()]
        keys = await aclient.signing_key.get()
        assert keys.current == qstash.current_signing_key
        await aclient.schedule.pause(schedule_id)
        assert (await aclient.schedule.get(schedule_id)).paused
        await aclient.url_group.upsert_endpoints(url_group=group,
                                                 endpoints=[{"url": qstash.status_url(200)}])
        assert (await aclient.url_group.get(group)).name == group

        async def delivered() -> None:
            logs = await aclient.log.list(filter={"message_id": result.message_id})
            assert logs.logs and logs.logs[0].state == LogState.DELIVERED

        await eventually_async(delivered, "the async publish DELIVERED")
        assert (await aclient.dlq.list(filter={"label": label})).messages == []
        assert (await aclient.message.cancel_many(["msg_never_published"])) == 0
        assert (await aclient.flow_control.get_global_parallelism()).parallelism_count >= 0
    finally:
        await aclient.schedule.delete(schedule_id)
        await aclient.url_group.delete(group)
        await aclient.queue.delete(queue)
