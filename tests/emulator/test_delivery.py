"""Delivery semantics (qstash-api.md §3) on a FakeClock: publish over HTTP, move time, tick()."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from typing import Any

import httpx
import jwt
import pytest

from celery_qstash.clock import FakeClock
from celery_qstash.devserver import DEV_CURRENT_SIGNING_KEY, DEV_TOKEN
from celery_qstash.local.emulator import Emulator

from .conftest import START, Client, Reply, Target


def claims(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(
        token, DEV_CURRENT_SIGNING_KEY, algorithms=["HS256"], issuer="Upstash",
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )
    return decoded


def sha(value: str | bytes) -> str:
    raw = value.encode() if isinstance(value, str) else value
    return "REDACTED:" + hashlib.sha256(raw).hexdigest()


def test_publish_delivers_body_headers_and_a_valid_signature(fake: Client, target: Target) -> None:
    url = f"{target.url}/hook?a=1&b=2"
    response = fake.http.post(
        f"/v2/publish/{url}", content=b'{"x": 1}',
        headers={"Content-Type": "application/json", "Upstash-Forward-X-Custom": "yes",
                 "Upstash-Method": "PUT"},
    )
    assert response.status_code == 200
    message_id = response.json()["messageId"]
    assert response.json()["url"] == url

    assert fake.tick() == 1

    [got] = target.at("/hook")
    assert got.method == "PUT"
    assert got.query == "a=1&b=2"
    assert got.body == b'{"x": 1}'
    assert got.headers["content-type"] == "application/json"
    assert got.headers["x-custom"] == "yes"
    assert got.headers["user-agent"] == "Upstash-QStash"
    assert got.headers["upstash-message-id"] == message_id
    assert got.headers["upstash-retried"] == "0"
    token = claims(got.headers["upstash-signature"])
    assert token["sub"] == url
    assert token["iat"] == int(START)
    assert token["body"].rstrip("=") == base64.urlsafe_b64encode(
        hashlib.sha256(b'{"x": 1}').digest()).decode().rstrip("=")
    assert fake.states(message_id) == ["CREATED", "ACTIVE", "DELIVERED"]
    assert fake.http.get(f"/v2/messages/{message_id}").status_code == 404
    assert fake.tick() == 0


def test_delay_and_not_before(fake: Client, target: Target) -> None:
    delayed = fake.publish(f"{target.url}/d", upstash_delay="1m").json()["messageId"]
    # Not-Before wins over Delay.
    fake.publish(f"{target.url}/nb", upstash_delay="1d",
                 upstash_not_before=str(int(START) + 30))
    message = fake.http.get(f"/v2/messages/{delayed}").json()
    assert message["notBefore"] == int(START * 1000) + 60_000

    assert fake.tick() == 0
    fake.advance(30)
    assert fake.tick() == 1
    assert [r.path for r in target.requests] == ["/nb"]
    fake.advance(29)
    assert fake.tick() == 0
    fake.advance(1)
    assert fake.tick() == 1
    assert [r.path for r in target.requests] == ["/nb", "/d"]


def test_retries_follow_the_retry_delay_expression_then_dlq(fake: Client, target: Target) -> None:
    target.reply("/fail", Reply(500, {"X-Why": "broken"}, b"nope"))
    message_id = fake.publish(f"{target.url}/fail", b"payload", upstash_retries="2",
                              upstash_retry_delay="1000 * (1 + retried)").json()["messageId"]
    assert fake.tick() == 1
    retry = fake.events(messageId=message_id, state="RETRY")[0]
    assert retry["nextDeliveryTime"] == int(START * 1000) + 1000
    error = fake.events(messageId=message_id, state="ERROR")[0]
    assert error["responseStatus"] == 500
    assert base64.b64decode(error["responseBody"]) == b"nope"
    # Go-style canonical names, as QStash shows them.
    assert error["responseHeader"]["X-Why"] == ["broken"]
    assert error["responseHeader"]["Content-Length"] == ["4"]

    fake.advance(0.999)
    assert fake.tick() == 0
    fake.advance(0.001)
    assert fake.tick() == 1  # retried=1 now; the next delay is 2000 ms
    fake.advance(1.999)
    assert fake.tick() == 0
    fake.advance(0.001)
    assert fake.tick() == 1
    assert [r.headers["upstash-retried"] for r in target.at("/fail")] == ["0", "1", "2"]
    assert fake.states(message_id) == [
        "CREATED", "ACTIVE", "ERROR", "RETRY", "ACTIVE", "ERROR", "RETRY", "ACTIVE", "ERROR",
        "FAILED",
    ]
    [dead] = fake.http.get("/v2/dlq").json()["messages"]
    assert dead["messageId"] == message_id
    assert dead["responseStatus"] == 500
    assert dead["responseBody"] == "nope"
    assert dead["body"] == "payload"
    assert dead["maxRetries"] == 2
    assert fake.tick() == 0


def test_default_backoff_and_retry_after(fake: Client, target: Target) -> None:
    target.reply("/plain", Reply(503))
    target.reply("/later", Reply(429, {"Retry-After": "7"}))
    plain = fake.publish(f"{target.url}/plain").json()["messageId"]
    later = fake.publish(f"{target.url}/later", upstash_retry_delay="100").json()["messageId"]
    assert fake.tick() == 2
    now_ms = int(START * 1000)
    # e ** 2.5 seconds before the first retry.
    assert fake.events(messageId=plain, state="RETRY")[0]["nextDeliveryTime"] == now_ms + 12182
    # Retry-After overrides both the expression and the backoff.
    assert fake.events(messageId=later, state="RETRY")[0]["nextDeliveryTime"] == now_ms + 7000


def test_489_with_non_retryable_header_fails_at_once(fake: Client, target: Target) -> None:
    target.reply("/stop", Reply(489, {"Upstash-NonRetryable-Error": "true"}, b"bad input"))
    target.reply("/soft", Reply(489))
    stop = fake.publish(f"{target.url}/stop", upstash_retries="3").json()["messageId"]
    soft = fake.publish(f"{target.url}/soft", upstash_retries="3").json()["messageId"]
    fake.tick()
    assert fake.states(stop)[-1] == "FAILED"
    assert fake.states(soft)[-1] == "RETRY"  # 489 without the header is an ordinary failure
    [dead] = fake.http.get("/v2/dlq").json()["messages"]
    assert dead["messageId"] == stop and dead["responseStatus"] == 489


def test_timeout_counts_as_a_failed_attempt() -> None:
    seen: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"]["read"])
        raise httpx.ReadTimeout("too slow", request=request)

    emulator = Emulator(clock=FakeClock(START),
                        http_client_factory=lambda: httpx.Client(transport=httpx.MockTransport(
                            handler)))
    [published] = emulator.store.publish("defaultUser", "https://slow.example/x",
                                         _options(timeout="2s", retries="0"))
    assert emulator.tick() == 1
    assert seen == [2.0]
    [dead], _ = emulator.store.list_dlq("defaultUser", _filter(), None, 10)
    assert dead["message"]["id"] == published.message_id
    assert "timeout" in dead["error"]
    emulator.close()


def test_callback_after_each_attempt_and_failure_callback_with_dlq_id(
    fake: Client, target: Target
) -> None:
    target.reply("/flaky", Reply(500, body=b"first"), Reply(500, body=b"second"))
    message_id = fake.publish(
        f"{target.url}/flaky", b"source", upstash_retries="1", upstash_retry_delay="0",
        upstash_callback=f"{target.url}/cb", upstash_callback_forward_x_token="cbtoken",
        upstash_failure_callback=f"{target.url}/fcb",
    ).json()["messageId"]
    assert fake.tick() == 1  # attempt 1 fails, callback message created
    assert fake.tick() == 2  # attempt 2 (retry after 0 ms) + callback for attempt 1
    assert fake.tick() == 2  # callback for attempt 2 + failure callback
    first, second = target.at("/cb")
    body = first.json()
    assert first.headers["x-token"] == "cbtoken"
    assert first.headers["content-type"] == "application/json"
    assert body["status"] == 500
    assert base64.b64decode(body["body"]) == b"first"
    assert body["retried"] == 0 and second.json()["retried"] == 1
    assert body["maxRetries"] == 1
    assert body["sourceMessageId"] == message_id
    assert body["url"] == f"{target.url}/flaky"
    assert body["method"] == "POST"
    assert base64.b64decode(body["sourceBody"]) == b"source"
    assert body["createdAt"] == str(int(START * 1000))
    assert body["notBefore"] == str(int(START * 1000))
    [failure] = target.at("/fcb")
    dlq = fake.http.get("/v2/dlq").json()["messages"]
    assert [m["messageId"] for m in dlq] == [message_id]
    assert failure.json()["dlqId"] == dlq[0]["dlqId"]
    assert failure.json()["status"] == 500
    # Callbacks are signed deliveries to their own URL.
    assert claims(failure.headers["upstash-signature"])["sub"] == f"{target.url}/fcb"


def test_deduplication_by_id_and_by_content(fake: Client, target: Target) -> None:
    first = fake.publish(f"{target.url}/a", b"1", upstash_deduplication_id="task-1")
    again = fake.publish(f"{target.url}/a", b"2", upstash_deduplication_id="task-1")
    assert first.status_code == 200 and again.status_code == 202
    assert again.json() == {"messageId": first.json()["messageId"], "url": f"{target.url}/a",
                            "deduplicated": True}
    c1 = fake.publish(f"{target.url}/c", b"same", upstash_content_based_deduplication="True")
    c2 = fake.publish(f"{target.url}/c", b"same", upstash_content_based_deduplication="true")
    c3 = fake.publish(f"{target.url}/c", b"other", upstash_content_based_deduplication="true")
    assert c2.json()["messageId"] == c1.json()["messageId"]
    assert c3.json()["messageId"] != c1.json()["messageId"]
    fake.advance(10 * 60 + 1)  # the window is 10 minutes
    later = fake.publish(f"{target.url}/a", b"3", upstash_deduplication_id="task-1")
    assert later.status_code == 200 and later.json()["messageId"] != first.json()["messageId"]


def test_cancel_logs_requested_then_canceled_at_the_next_tick(fake: Client, target: Target) -> None:
    ids = [fake.publish(f"{target.url}/x", upstash_delay="1h").json()["messageId"]
           for _ in range(4)]
    assert fake.http.delete(f"/v2/messages/{ids[0]}").json() == {"cancelled": 1}
    assert fake.http.delete(f"/v2/messages/{ids[0]}").status_code == 404
    assert fake.states(ids[0]) == ["CREATED", "CANCEL_REQUESTED"]
    # The SDK's cancel_many sends a JSON body; the REST API also takes query params.
    body = fake.http.request("DELETE", "/v2/messages", json={"messageIds": [ids[1]]})
    assert body.json() == {"cancelled": 1}
    query = fake.http.delete("/v2/messages", params={"messageIds": ids[2]})
    assert query.json() == {"cancelled": 1}
    assert fake.http.delete("/v2/messages").json() == {"cancelled": 1}  # everything left
    assert fake.tick() == 0
    for message_id in ids:
        assert fake.states(message_id) == ["CREATED", "CANCEL_REQUESTED", "CANCELED"]
        assert fake.http.get(f"/v2/messages/{message_id}").status_code == 404
    fake.advance(3600)
    assert fake.tick() == 0
    assert target.requests == []


def test_flow_control_rate_per_period(fake: Client, target: Target) -> None:
    for _ in range(5):
        fake.publish(f"{target.url}/r", upstash_flow_control_key="k",
                     upstash_flow_control_value="rate=2, period=1m")
    assert fake.tick() == 2
    assert fake.tick() == 0
    info = fake.http.get("/v2/flowControl/k").json()
    assert info["rateMax"] == 2 and info["rateCount"] == 2 and info["waitListSize"] == 3
    fake.advance(59)
    assert fake.tick() == 0
    fake.advance(1)
    assert fake.tick() == 2
    fake.advance(60)
    assert fake.tick() == 1


def test_flow_control_parallelism_and_pause(fake: Client, target: Target) -> None:
    for _ in range(5):
        fake.publish(f"{target.url}/p", upstash_flow_control_key="par",
                     upstash_flow_control_value="parallelism=2")
    assert fake.tick() == 2
    assert fake.http.post("/v2/flowControl/par/pause").status_code == 200
    assert fake.tick() == 0
    assert fake.http.get("/v2/flowControl/par").json()["isPaused"] is True
    fake.http.post("/v2/flowControl/par/resume")
    assert fake.tick() == 2
    assert fake.tick() == 1
    assert len(target.at("/p")) == 5


def test_queue_is_fifo_waits_for_retries_and_honours_pause(fake: Client, target: Target) -> None:
    target.reply("/q1", Reply(500), Reply(200))
    ids = []
    for name in ("q1", "q2", "q3"):
        response = fake.http.post(f"/v2/enqueue/jobs/{target.url}/{name}",
                                  headers={"Upstash-Retry-Delay": "1000"})
        ids.append(response.json()["messageId"])
    assert fake.tick() == 1  # only the head; it fails
    fake.advance(0.5)
    assert fake.tick() == 0  # the head's retry blocks the queue
    fake.advance(0.5)
    assert fake.tick() == 1  # head delivered
    assert fake.tick() == 1
    fake.http.post("/v2/queues/jobs/pause")
    assert fake.tick() == 0
    assert fake.http.get("/v2/queues/jobs").json()["paused"] is True
    fake.http.post("/v2/queues/jobs/resume")
    assert fake.tick() == 1
    assert [r.path for r in target.requests] == ["/q1", "/q1", "/q2", "/q3"]
    # QStash documents no Upstash-Queue-Name delivery header (qstash-api.md §3.2).
    assert all("upstash-queue-name" not in r.headers for r in target.requests)


def test_queue_parallelism(fake: Client, target: Target) -> None:
    fake.http.post("/v2/queues", json={"queueName": "wide", "parallelism": 2})
    for i in range(3):
        fake.http.post(f"/v2/enqueue/wide/{target.url}/w{i}")
    assert fake.http.get("/v2/queues/wide").json()["lag"] == 3
    assert fake.tick() == 2
    assert fake.tick() == 1


def test_routes_rewrite_delivery_but_keep_the_original_url(fake: Client, target: Target) -> None:
    fake.emulator.routes["https://api.autosend.example"] = target.url
    fake.emulator.routes["https://api.autosend.example/v2"] = target.url + "/two"
    original = "https://api.autosend.example/v1/mails?x=1"
    message_id = fake.publish(original, b"{}").json()["messageId"]
    fake.publish("https://api.autosend.example/v2/mails")
    fake.tick()
    [got] = target.at("/v1/mails")
    assert got.query == "x=1"
    assert claims(got.headers["upstash-signature"])["sub"] == original
    assert {e["url"] for e in fake.events(messageId=message_id)} == {original}
    assert len(target.at("/two/mails")) == 1  # the longest prefix wins


def test_unreachable_destination_fails_like_any_host(fake: Client) -> None:
    message_id = fake.publish("http://127.0.0.1:9/x", upstash_retries="0").json()["messageId"]
    fake.tick()
    assert fake.states(message_id)[-2:] == ["ERROR", "FAILED"]
    [error] = fake.events(messageId=message_id, state="ERROR")
    assert "127.0.0.1:9" in error["error"]


def test_redaction_hides_values_in_messages_logs_and_dlq_but_delivers_them(
    fake: Client, target: Target
) -> None:
    target.reply("/secret", Reply(500))
    message_id = fake.publish(
        f"{target.url}/secret", b"private body", upstash_retries="0",
        upstash_forward_authorization="Bearer real-key", upstash_forward_x_visible="shown",
        upstash_redact_fields="body,header[Authorization]", upstash_delay="1s",
    ).json()["messageId"]
    message = fake.http.get(f"/v2/messages/{message_id}").json()
    assert message["body"] == sha("private body")
    assert message["header"]["Authorization"] == [sha("Bearer real-key")]
    assert message["header"]["X-Visible"] == ["shown"]
    fake.advance(1)
    fake.tick()
    [got] = target.at("/secret")
    assert got.headers["authorization"] == "Bearer real-key"
    assert got.body == b"private body"
    for event in fake.events(messageId=message_id):
        assert base64.b64decode(event["body"]).decode() == sha("private body")
        assert event["header"]["Authorization"] == [sha("Bearer real-key")]
    [dead] = fake.http.get("/v2/dlq").json()["messages"]
    assert dead["body"] == sha("private body")
    assert "real-key" not in json.dumps(dead)
    assert "real-key" not in fake.http.get("/v2/events").text


def test_callbacks_inherit_the_source_redaction_but_deliver_real_values(
    fake: Client, target: Target
) -> None:
    secret, body = "Bearer cb-secret", b"top-secret-body"
    target.reply("/src", Reply(500, body=b"nope"))
    target.reply("/fcb", Reply(500))  # the failure callback fails too: it reaches the DLQ
    source_id = fake.publish(
        f"{target.url}/src", body, upstash_retries="0",
        upstash_redact_fields="body,header[Authorization]",
        upstash_forward_authorization=secret,
        upstash_callback=f"{target.url}/cb",
        upstash_callback_forward_authorization=secret,
        upstash_failure_callback=f"{target.url}/fcb",
        upstash_failure_callback_forward_authorization=secret,
        upstash_failure_callback_retries="0",
    ).json()["messageId"]
    assert fake.tick() == 1  # the source fails; a callback and a failure callback wait
    source_b64 = base64.b64encode(body).decode()
    pending = [e for e in fake.events(state="CREATED") if e["messageId"] != source_id]
    assert {e["url"] for e in pending} == {f"{target.url}/cb", f"{target.url}/fcb"}
    for event in pending:
        shown = fake.http.get(f"/v2/messages/{event['messageId']}").json()
        assert shown["header"]["Authorization"] == [sha(secret)]
        payload = json.loads(shown["body"])
        assert payload["sourceBody"] == sha(body)
        assert payload["sourceHeader"]["Authorization"] == [sha(secret)]
        logged = json.loads(base64.b64decode(event["body"]))
        assert logged["sourceBody"] == sha(body)
    assert fake.tick() == 2
    for path in ("/cb", "/fcb"):
        [got] = target.at(path)
        assert got.headers["authorization"] == secret
        assert got.json()["sourceBody"] == source_b64
        # Response headers carry Go-style canonical names, as in QStash.
        assert got.json()["header"]["Content-Length"] == ["4"]
    listings = [fake.http.get(p).text for p in ("/v2/events", "/v2/dlq", "/v2/logs")]
    for text in listings:
        assert "cb-secret" not in text
        assert source_b64 not in text and body.decode() not in text
        for blob in re.findall(r'"body":\s*"([A-Za-z0-9+/=]{40,})"', text):
            inner = base64.b64decode(blob).decode(errors="replace")
            assert "cb-secret" not in inner and source_b64 not in inner
    assert {d["url"] for d in fake.http.get("/v2/dlq").json()["messages"]} == {
        f"{target.url}/src", f"{target.url}/fcb"}


def test_schedules_show_redacted_headers_and_body(fake: Client, target: Target) -> None:
    response = fake.http.post(
        f"/v2/schedules/{target.url}/s", content=b"schedule-secret",
        headers={"Upstash-Cron": "* * * * *", "Upstash-Forward-Authorization": "Bearer sk",
                 "Upstash-Redact-Fields": "body,header[Authorization]",
                 "Upstash-Callback": f"{target.url}/cb",
                 "Upstash-Callback-Forward-Authorization": "Bearer sk"},
    )
    schedule_id = response.json()["scheduleId"]
    shown = fake.http.get(f"/v2/schedules/{schedule_id}").json()
    assert shown["header"]["Authorization"] == [sha("Bearer sk")]
    assert shown["callbackHeader"]["Authorization"] == [sha("Bearer sk")]
    assert shown["body"] == sha("schedule-secret")
    listing = fake.http.get("/v2/schedules").text
    assert "Bearer sk" not in listing and "schedule-secret" not in listing
    fake.advance(60)
    fake.tick()
    [got] = target.at("/s")
    assert got.body == b"schedule-secret" and got.headers["authorization"] == "Bearer sk"


def test_a_flow_slot_freed_by_a_retry_is_refilled_in_order(fake: Client, target: Target) -> None:
    target.reply("/A", Reply(500))
    flow = {"upstash_flow_control_key": "k", "upstash_flow_control_value": "parallelism=1"}
    fake.publish(f"{target.url}/A", upstash_retries="3", upstash_retry_delay="600000", **flow)
    for name in ("B", "C", "D"):
        fake.publish(f"{target.url}/{name}", **flow)
    assert fake.tick() == 1  # A fails and waits 10 minutes for its retry
    assert fake.tick() == 1  # its slot went to B at once
    assert fake.tick() == 1
    assert fake.tick() == 1
    assert [r.path for r in target.requests] == ["/A", "/B", "/C", "/D"]
    fake.advance(600)
    assert fake.tick() == 1
    # A waits for its retry time, not for the key: QStash's waitListSize counts only
    # "messages waiting due to flow control configuration" (OAS FlowControlKey).
    assert fake.http.get("/v2/flowControl/k").json()["waitListSize"] == 0


def test_flow_control_work_per_tick_does_not_grow_with_the_backlog() -> None:
    """Counted in SQL statements, not seconds: a key's backlog is parked in one UPDATE
    and woken a slot (or a rate period) at a time, never re-read row by row."""

    def statements_per_tick(count: int, flow: str) -> list[int]:
        emulator = Emulator(clock=FakeClock(START), http_client_factory=lambda: httpx.Client(
            transport=httpx.MockTransport(lambda request: httpx.Response(200))))
        options = _options(flow_control_key="k", flow_control_value=flow)
        store = emulator.store
        with store._tx() as cur:
            for _ in range(count):
                store._publish(cur, "defaultUser", "https://a.example/x", options, queue=None,
                               schedule_id=None, caller_ip=None, kind="message",
                               now_ms=store.now_ms())
        executed: list[str] = []
        store._db.set_trace_callback(executed.append)
        counts = []
        for second in range(4):
            executed.clear()
            assert emulator.tick(START + second) == 1
            counts.append(len(executed))
        store._db.set_trace_callback(None)
        emulator.close()
        return counts

    for flow in ("parallelism=1", "rate=1,period=1s"):
        assert statements_per_tick(20, flow) == statements_per_tick(300, flow), flow


def test_url_group_fan_out(fake: Client, target: Target) -> None:
    fake.http.post("/v2/topics/team/endpoints", json={"endpoints": [
        {"url": f"{target.url}/one", "name": "one"}, {"url": f"{target.url}/two"}]})
    response = fake.publish("team", b"hi")
    items = response.json()
    assert isinstance(items, list) and len(items) == 2
    assert {i["url"] for i in items} == {f"{target.url}/one", f"{target.url}/two"}
    assert fake.tick() == 2
    assert {r.headers["upstash-topic-name"] for r in target.requests} == {"team"}
    assert fake.events(topicName="team", state="DELIVERED")[0]["topicName"] == "team"


def test_schedule_fires_by_cron(fake: Client, target: Target) -> None:
    response = fake.http.post(f"/v2/schedules/{target.url}/cron", content=b"tick",
                              headers={"Upstash-Cron": "*/5 * * * *"})
    schedule_id = response.json()["scheduleId"]
    assert schedule_id.startswith("scd_")
    schedule = fake.http.get(f"/v2/schedules/{schedule_id}").json()
    next_time = schedule["nextScheduleTime"]
    assert next_time % 300_000 == 0 and next_time > START * 1000
    fake.emulator.clock.set(next_time / 1000 - 1)
    assert fake.tick() == 0
    fake.advance(1)
    assert fake.tick() == 1
    [got] = target.at("/cron")
    assert got.body == b"tick"
    assert got.headers["upstash-schedule-id"] == schedule_id
    schedule = fake.http.get(f"/v2/schedules/{schedule_id}").json()
    assert schedule["lastScheduleTime"] == next_time
    assert schedule["nextScheduleTime"] == next_time + 300_000
    assert list(schedule["lastScheduleStates"].values()) == ["SUCCESS"]
    fake.http.patch(f"/v2/schedules/{schedule_id}/pause")
    fake.advance(3600)
    assert fake.tick() == 0


def test_dlq_retry_republishes_with_header_overrides(fake: Client, target: Target) -> None:
    target.reply("/once", Reply(500), Reply(200))
    fake.publish(f"{target.url}/once", b"again", upstash_retries="0")
    fake.tick()
    [dead] = fake.http.get("/v2/dlq").json()["messages"]
    response = fake.http.post(f"/v2/dlq/retry/{dead['dlqId']}", headers={"Upstash-Retries": "5"})
    assert response.status_code == 201
    new_id = response.json()["messageId"]
    assert fake.http.get(f"/v2/messages/{new_id}").json()["maxRetries"] == 5
    assert fake.http.get("/v2/dlq").json()["messages"] == []
    fake.tick()
    assert [r.body for r in target.at("/once")] == [b"again", b"again"]


def test_logs_filters_and_cursor_pagination(fake: Client, target: Target) -> None:
    ids = [fake.publish(f"{target.url}/l", upstash_label="billing,eu" if i % 2 else "other",
                        upstash_delay="1h").json()["messageId"] for i in range(5)]
    page = fake.http.get("/v2/events", params={"count": 2}).json()
    assert [e["messageId"] for e in page["events"]] == [ids[4], ids[3]]  # newest first
    seen = [e["messageId"] for e in page["events"]]
    while page.get("cursor"):
        page = fake.http.get("/v2/events", params={"count": 2, "cursor": page["cursor"]}).json()
        seen += [e["messageId"] for e in page["events"]]
    assert seen == ids[::-1]
    labelled = fake.http.get("/v2/logs", params={"label": "eu"}).json()["logs"]
    assert {e["messageId"] for e in labelled} == {ids[1], ids[3]}
    assert labelled[0]["labels"] == ["billing", "eu"] and labelled[0]["label"] == "billing"
    fake.advance(3600)
    target.reply("/l", Reply(500))
    fake.tick()
    in_progress = fake.events(state="IN_PROGRESS")
    assert {e["state"] for e in in_progress} == {"ACTIVE", "ERROR", "RETRY"}
    assert len(fake.events(messageIds=f"{ids[0]},{ids[1]}")) == 2 * 4


def _options(**headers: str) -> Any:
    from celery_qstash.local.emulator.publish import parse_publish_headers

    return parse_publish_headers([("Upstash-" + k.replace("_", "-"), v)
                                  for k, v in headers.items()], b"")


def _filter() -> Any:
    from celery_qstash.local.emulator.store import EventFilter

    return EventFilter()


_ = DEV_TOKEN


def test_callbacks_are_made_only_for_the_outcomes_that_have_one() -> None:
    from celery_qstash.local.emulator.publish import parse_publish_headers
    from celery_qstash.local.emulator.store import AttemptResult

    emulator = Emulator(clock=FakeClock(START))
    now_ms = int(START * 1000)

    def message(*headers: tuple[str, str]) -> dict[str, Any]:
        [published] = emulator.store.publish("defaultUser", "https://a.example/x",
                                             parse_publish_headers(list(headers), b"b"))
        [claimed] = [m for m in emulator.store.claim_due(now_ms)
                     if m["id"] == published.message_id]
        return claimed

    plain = message()
    failing = AttemptResult(500, error="status 500")
    for state in ("DELIVERED", "RETRY", "FAILED"):
        assert emulator.loop.callbacks(plain, failing, state, "dlq") == []
    only_failure = message(("Upstash-Failure-Callback", "https://cb.example/f"))
    assert emulator.loop.callbacks(only_failure, failing, "RETRY", None) == []
    [spec] = emulator.loop.callbacks(only_failure, failing, "FAILED", "dlq1")
    assert spec.kind == "failure_callback" and json.loads(spec.options.body)["dlqId"] == "dlq1"
    both = message(("Upstash-Callback", "https://cb.example/c"),
                   ("Upstash-Failure-Callback", "https://cb.example/f"))
    assert [s.kind for s in emulator.loop.callbacks(both, failing, "FAILED", "d")] == [
        "callback", "failure_callback"]
    assert emulator.loop.callbacks(both, failing, "CANCELED", None) == []
    emulator.close()


def test_the_dev_log_names_the_task_before_the_message(
        fake: Client, target: Target, caplog: pytest.LogCaptureFixture) -> None:
    # A user greps the dev log for the task id `status` printed, not QStash's message id.
    message_id = fake.publish(target.url, b"{}", Upstash_Label="welcome-42",
                              Upstash_Forward_X_Celery_Task="app.send_welcome").json()["messageId"]
    with caplog.at_level(logging.INFO, logger="celery_qstash.local.emulator"):
        assert fake.tick() == 1
    [line] = [r.getMessage() for r in caplog.records if message_id in r.getMessage()]
    assert line.startswith(f"task welcome-42 app.send_welcome, message {message_id} -> ")
    assert line.endswith("DELIVERED (200)")
