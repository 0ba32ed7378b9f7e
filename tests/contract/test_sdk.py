"""The official qstash SDK (sync and async) against the emulator, endpoint group by group.

Deliveries are triggered with ``POST /_emulator/tick`` and every one that reaches
the recording target is verified with the SDK's own ``Receiver``.
"""

from __future__ import annotations

import json

import httpx
import pytest
from emulator.conftest import Client, Received, Reply, Target
from qstash import AsyncQStash, QStash, Receiver
from qstash.log import LogState

from celery_qstash.local.emulator import EmulatorServer

pytestmark = pytest.mark.local_only(
    "delivers with POST /_emulator/tick, resets between tests and checks what a "
    "recording destination on loopback received")


def tick(server: EmulatorServer) -> int:
    response = httpx.post(f"{server.url}/_emulator/tick", trust_env=False)
    response.raise_for_status()
    return int(response.json()["attempts"])


def verify(server: EmulatorServer, request: Received, url: str) -> None:
    Receiver(server.current_signing_key, server.next_signing_key).verify(
        signature=request.headers["upstash-signature"], body=request.body.decode(), url=url
    )


def verify_all(server: EmulatorServer, target: Target) -> None:
    assert target.requests, "nothing was delivered"
    for request in target.requests:
        url = target.url + request.path + (f"?{request.query}" if request.query else "")
        verify(server, request, url)


@pytest.fixture
def client(sdk: Client) -> QStash:
    return QStash(sdk.server.token, base_url=sdk.server.url, retry=False)


@pytest.fixture
def aclient(sdk: Client) -> AsyncQStash:
    return AsyncQStash(sdk.server.token, base_url=sdk.server.url, retry=False)


def test_publish_json_delivers_a_verifiable_message(client: QStash, sdk: Client,
                                                    target: Target) -> None:
    result = client.message.publish_json(
        url=f"{target.url}/hook?v=1", body={"hello": "world"}, headers={"X-Api": "k"},
        retries=2, retry_delay="1000 * retried", timeout="30s", label="mail",
        callback=f"{target.url}/cb", failure_callback=f"{target.url}/fail",
        flow_control={"key": "fc", "parallelism": 3, "rate": 10, "period": "1m"},
    )
    message = client.message.get(result.message_id)
    assert message.message_id == result.message_id
    assert message.url == f"{target.url}/hook?v=1"
    assert message.method == "POST"
    assert message.max_retries == 2
    assert message.retry_delay_expression == "1000 * retried"
    assert message.callback == f"{target.url}/cb"
    assert message.failure_callback == f"{target.url}/fail"
    assert message.label == "mail"
    assert message.flow_control is not None and message.flow_control.key == "fc"
    assert message.flow_control.parallelism == 3 and message.flow_control.rate == 10
    assert message.flow_control.period == 60
    assert json.loads(message.body or "") == {"hello": "world"}
    assert message.headers is not None and message.headers["X-Api"] == ["k"]
    assert message.created_at <= message.not_before

    assert tick(sdk.server) == 1
    [got] = target.at("/hook")
    assert json.loads(got.body) == {"hello": "world"} and got.headers["x-api"] == "k"
    assert tick(sdk.server) == 1  # the callback
    verify_all(sdk.server, target)


def test_routed_delivery_verifies_against_the_original_url(client: QStash, sdk: Client,
                                                           target: Target) -> None:
    sdk.emulator.routes["https://api.autosend.example"] = target.url
    client.message.publish(url="https://api.autosend.example/v1/mails", body="{}",
                           content_type="application/json")
    tick(sdk.server)
    [got] = target.at("/v1/mails")
    verify(sdk.server, got, "https://api.autosend.example/v1/mails")


def test_publish_options_delay_not_before_dedup(client: QStash, target: Target) -> None:
    delayed = client.message.publish(url=f"{target.url}/d", body="x", delay=90)
    message = client.message.get(delayed.message_id)
    assert message.not_before - message.created_at == 90_000
    not_before = client.message.get(client.message.publish(
        url=f"{target.url}/d", body="x", not_before=1_900_000_000).message_id)
    assert not_before.not_before == 1_900_000_000_000
    first = client.message.publish(url=f"{target.url}/d", body="x", deduplication_id="d1")
    second = client.message.publish(url=f"{target.url}/d", body="y", deduplication_id="d1")
    assert second.deduplicated and second.message_id == first.message_id
    a = client.message.publish(url=f"{target.url}/c", body="z", content_based_deduplication=True)
    b = client.message.publish(url=f"{target.url}/c", body="z", content_based_deduplication=True)
    assert b.deduplicated and a.message_id == b.message_id


def test_cancel_cancel_many_cancel_all(client: QStash, sdk: Client, target: Target) -> None:
    ids = [client.message.publish(url=f"{target.url}/x", body="b", delay="1h").message_id
           for _ in range(5)]
    client.message.cancel(ids[0])
    assert client.message.cancel_many([ids[1], ids[2]]) == 2
    assert client.message.cancel_all() == 2
    tick(sdk.server)
    logs = client.log.list(filter={"state": LogState.CANCELED}).logs
    assert sorted(log.message_id for log in logs) == sorted(ids)


def test_enqueue_and_queue_api(client: QStash, sdk: Client, target: Target) -> None:
    client.queue.upsert("emails", parallelism=2)
    first = client.message.enqueue(queue="emails", url=f"{target.url}/q", body="1")
    client.message.enqueue_json(queue="emails", url=f"{target.url}/q", body={"n": 2})
    assert client.message.get(first.message_id).queue == "emails"
    queue = client.queue.get("emails")
    assert (queue.name, queue.parallelism, queue.lag, queue.paused) == ("emails", 2, 2, False)
    assert [q.name for q in client.queue.list()] == ["emails"]
    client.queue.pause("emails")
    assert client.queue.get("emails").paused
    assert tick(sdk.server) == 0
    client.queue.resume("emails")
    assert tick(sdk.server) == 2
    # parallelism=2: both are delivered at once, so their arrival order is not defined.
    assert sorted(r.body for r in target.at("/q")) == [b"1", b'{"n": 2}']
    client.queue.upsert("emails", parallelism=1, paused=True)
    assert client.queue.get("emails").paused
    client.queue.delete("emails")
    assert client.queue.list() == []
    verify_all(sdk.server, target)


def test_batch_and_batch_json(client: QStash, sdk: Client, target: Target) -> None:
    client.url_group.upsert_endpoints(url_group="g", endpoints=[{"url": f"{target.url}/g1"},
                                                                {"url": f"{target.url}/g2"}])
    results = client.message.batch([
        {"url": f"{target.url}/b1", "body": "one", "retries": 0},
        {"url_group": "g", "body": "two"},
        {"url": f"{target.url}/b3", "queue": "batchq", "body": "three"},
    ])
    assert len(results) == 3 and isinstance(results[1], list) and len(results[1]) == 2
    json_results = client.message.batch_json([{"url": f"{target.url}/j", "body": {"k": 1}}])
    assert len(json_results) == 1
    assert tick(sdk.server) == 5
    assert sorted(r.path for r in target.requests) == ["/b1", "/b3", "/g1", "/g2", "/j"]
    assert json.loads(target.at("/j")[0].body) == {"k": 1}
    verify_all(sdk.server, target)


def test_log_list_filters_and_pagination(client: QStash, sdk: Client, target: Target,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    ids = [client.message.publish(url=f"{target.url}/l", body=str(i), label="lab" if i < 2
                                  else "other").message_id for i in range(4)]
    tick(sdk.server)
    page = client.log.list(count=3)
    seen = [log.message_id for log in page.logs]
    while page.cursor:
        page = client.log.list(count=3, cursor=page.cursor)
        seen += [log.message_id for log in page.logs]
    assert len(seen) == 4 * 3  # CREATED, ACTIVE, DELIVERED each
    delivered = client.log.list(filter={"state": LogState.DELIVERED}).logs
    assert sorted(log.message_id for log in delivered) == sorted(ids)
    one = client.log.list(filter={"message_id": ids[0]}).logs
    assert [log.state for log in one] == [LogState.DELIVERED, LogState.ACTIVE, LogState.CREATED]
    assert one[0].url == f"{target.url}/l" and one[0].response_status == 200
    assert one[0].time >= one[-1].time
    labelled = client.log.list(filter={"label": "lab", "state": LogState.CREATED}).logs
    assert sorted(log.message_id for log in labelled) == sorted(ids[:2])
    several = client.log.list(filter={"message_ids": ids[2:]}).logs
    assert {log.message_id for log in several} == set(ids[2:])
    assert client.log.list(filter={"url": "http://nowhere.example/"}).logs == []
    capsys.readouterr()  # the SDK prints raw responses (known quirk)


def test_dlq_list_get_delete_and_rest_retry(client: QStash, sdk: Client, target: Target) -> None:
    target.reply("/bad", Reply(500, body=b"boom"))
    ids = [client.message.publish(url=f"{target.url}/bad", body=str(i), retries=0,
                                  label="x").message_id for i in range(4)]
    tick(sdk.server)
    listing = client.dlq.list()
    assert sorted(m.message_id for m in listing.messages) == sorted(ids)
    first = listing.messages[0]
    assert first.response_status == 500 and first.response_body == "boom"
    assert first.dlq_id and client.dlq.get(first.dlq_id).message_id == first.message_id
    assert len(client.dlq.list(filter={"response_status": 500, "label": "x"}).messages) == 4
    assert len(client.dlq.list(count=2).messages) == 2
    client.dlq.delete(first.dlq_id)
    remaining = [m.dlq_id for m in client.dlq.list().messages]
    assert client.dlq.delete_many([remaining[0]]) == 1
    target.reply("/bad", Reply(200))
    retried = sdk.http.post(f"/v2/dlq/retry/{remaining[1]}")
    assert retried.status_code == 201 and retried.json()["messageId"].startswith("msg_")
    bulk = sdk.http.post("/v2/dlq/retry")
    assert bulk.status_code == 201 and len(bulk.json()["responses"]) == 1
    assert client.dlq.list().messages == []
    assert tick(sdk.server) == 2
    verify_all(sdk.server, target)


def test_url_groups(client: QStash, sdk: Client, target: Target) -> None:
    client.url_group.upsert_endpoints(url_group="team", endpoints=[
        {"url": f"{target.url}/a", "name": "a"}, {"url": f"{target.url}/b"}])
    group = client.url_group.get("team")
    assert group.name == "team" and {e.url for e in group.endpoints} == {f"{target.url}/a",
                                                                          f"{target.url}/b"}
    assert [g.name for g in client.url_group.list()] == ["team"]
    results = client.message.publish_json(url_group="team", body={"to": "all"})
    assert isinstance(results, list) and len(results) == 2
    tick(sdk.server)
    assert {r.headers["upstash-topic-name"] for r in target.requests} == {"team"}
    client.url_group.remove_endpoints(url_group="team", endpoints=[{"name": "a"}])
    assert [e.url for e in client.url_group.get("team").endpoints] == [f"{target.url}/b"]
    client.url_group.delete("team")
    assert client.url_group.list() == []
    verify_all(sdk.server, target)


def test_signing_keys_get_and_rotate(client: QStash, sdk: Client, target: Target) -> None:
    keys = client.signing_key.get()
    assert (keys.current, keys.next) == (sdk.server.current_signing_key,
                                          sdk.server.next_signing_key)
    rotated = client.signing_key.rotate()
    assert rotated.current == keys.next and rotated.next != keys.next
    client.message.publish(url=f"{target.url}/k", body="signed")
    tick(sdk.server)
    [got] = target.requests
    Receiver(rotated.current, rotated.next).verify(
        signature=got.headers["upstash-signature"], body="signed", url=f"{target.url}/k")


def test_flow_control_api(client: QStash, sdk: Client, target: Target) -> None:
    client.message.publish(url=f"{target.url}/f", body="x", delay="1h",
                           flow_control={"key": "mykey", "parallelism": 2})
    info = client.flow_control.get("mykey")
    assert info.key == "mykey" and info.parallelism_max == 2
    # Delayed, not held back by the key (OAS FlowControlKey.waitListSize).
    assert info.wait_list_size == 0
    client.flow_control.pause("mykey")
    assert client.flow_control.get("mykey").is_paused
    client.flow_control.resume("mykey")
    client.flow_control.pin("mykey", {"parallelism": 5, "rate": 7, "period": 60})
    pinned = client.flow_control.get("mykey")
    assert pinned.is_pinned_parallelism and pinned.is_pinned_rate
    assert (pinned.parallelism_max, pinned.rate_max, pinned.rate_period) == (5, 7, 60)
    client.flow_control.unpin("mykey", {"parallelism": True, "rate": True})
    assert not client.flow_control.get("mykey").is_pinned_rate
    client.flow_control.reset_rate("mykey")
    assert client.flow_control.get_global_parallelism().parallelism_count == 0
    listed = sdk.http.get("/v2/flowControl", params={"search": "myk"}).json()
    assert [f["flowControlKey"] for f in listed] == ["mykey"]


def test_schedules(client: QStash, sdk: Client, target: Target) -> None:
    schedule_id = client.schedule.create(destination=f"{target.url}/s", cron="*/5 * * * *",
                                         body="b", retries=1, label="nightly")
    json_id = client.schedule.create_json(destination=f"{target.url}/s", cron="0 0 * * *",
                                          body={"a": 1}, schedule_id="my-schedule")
    assert json_id == "my-schedule"
    schedule = client.schedule.get(schedule_id)
    assert schedule.cron == "*/5 * * * *" and schedule.destination == f"{target.url}/s"
    assert schedule.retries == 1 and not schedule.paused and schedule.next_schedule_time
    assert sorted(s.schedule_id for s in client.schedule.list()) == sorted(
        [schedule_id, "my-schedule"])
    client.schedule.pause(schedule_id)
    assert client.schedule.get(schedule_id).paused
    client.schedule.resume(schedule_id)
    assert not client.schedule.get(schedule_id).paused
    # Upsert by id keeps one schedule.
    client.schedule.create(destination=f"{target.url}/s", cron="1 1 * * *",
                           schedule_id="my-schedule")
    assert client.schedule.get("my-schedule").cron == "1 1 * * *"
    client.schedule.delete(schedule_id)
    assert [s.schedule_id for s in client.schedule.list()] == ["my-schedule"]


async def test_async_client(aclient: AsyncQStash, sdk: Client, target: Target) -> None:
    result = await aclient.message.publish_json(url=f"{target.url}/async", body={"a": 1},
                                                retries=0)
    assert (await aclient.message.get(result.message_id)).max_retries == 0
    await aclient.queue.upsert("aq", parallelism=1)
    await aclient.message.enqueue(queue="aq", url=f"{target.url}/async", body="q")
    assert [q.name for q in await aclient.queue.list()] == ["aq"]
    keys = await aclient.signing_key.get()
    assert keys.current == sdk.server.current_signing_key
    schedule_id = await aclient.schedule.create(destination=f"{target.url}/s", cron="* * * * *")
    await aclient.schedule.pause(schedule_id)
    assert (await aclient.schedule.get(schedule_id)).paused
    await aclient.url_group.upsert_endpoints(url_group="ag", endpoints=[{"url": target.url}])
    assert (await aclient.url_group.get("ag")).name == "ag"
    tick(sdk.server)
    logs = await aclient.log.list(filter={"message_id": result.message_id})
    assert logs.logs[0].state == LogState.DELIVERED
    assert (await aclient.dlq.list()).messages == []
    assert (await aclient.message.cancel_all()) == 0
    await aclient.flow_control.get_global_parallelism()
    verify_all(sdk.server, target)


def test_background_delivery_on_the_system_clock(live: Client, target: Target) -> None:
    """The background loop wakes on publish (no tick call); poll the target with a deadline."""
    import time

    client = QStash(live.server.token, base_url=live.server.url, retry=False)
    client.message.publish(url=f"{target.url}/bg", body="now")
    deadline = time.monotonic() + 10
    while not target.at("/bg") and time.monotonic() < deadline:
        time.sleep(0.02)
    [got] = target.at("/bg")
    verify(live.server, got, f"{target.url}/bg")
