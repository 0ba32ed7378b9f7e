"""The differences from QStash that the oracles of issue 19 found, each closed.

Every test is named after the oracle it comes from: an official SDK test
(upstash/qstash-py ``tests/``, upstash/qstash-js ``src/client/*.test.ts``, both run
unmodified against the emulator) or an operation of Upstash's OpenAPI document
(upstash/docs ``qstash/openapi.yaml``, OAS below) that schemathesis fuzzed. Where the
document and the SDKs disagree, the SDKs' wire behaviour wins and the test says so.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from celery_qstash.clock import FakeClock
from celery_qstash.local.emulator import EmulatorServer
from celery_qstash.local.emulator.store.db import DB_FILENAME

from .conftest import START, Client, Reply, Target


def later(fake: Client, target: Target, label: str = "") -> str:
    headers = {"Upstash_Delay": "10d"} | ({"Upstash_Label": label} if label else {})
    response = fake.publish(f"{target.url}/later", b"x", **headers)
    assert response.status_code == 200, response.text
    return str(response.json()["messageId"])


# -- qstash-py --------------------------------------------------------------------------


def test_qstash_py_test_batch_with_flow_control_reads_period_1(fake: Client,
                                                                target: Target) -> None:
    # qstash-py tests/test_message.py test_batch_with_flow_control (and its asyncio twin):
    # a key with parallelism only reads back ``period: 1`` and no rate, as QStash answers.
    response = fake.http.post("/v2/batch", json=[
        {"destination": f"{target.url}/a", "body": "{}",
         "headers": {"Upstash-Flow-Control-Key": "k3",
                     "Upstash-Flow-Control-Value": "parallelism=5"}},
        {"destination": f"{target.url}/b", "body": "{}",
         "headers": {"Upstash-Flow-Control-Key": "k2",
                     "Upstash-Flow-Control-Value": "rate=23,period=1h30m3s"}},
    ])
    first, second = (item["messageId"] for item in response.json())
    parallel = fake.http.get(f"/v2/messages/{first}").json()
    assert (parallel["parallelism"], parallel["period"]) == (5, 1)
    assert "rate" not in parallel
    rated = fake.http.get(f"/v2/messages/{second}").json()
    assert (rated["rate"], rated["period"]) == (23, 5403) and "parallelism" not in rated


# -- qstash-js --------------------------------------------------------------------------


def test_qstash_js_messages_should_respect_count_1_with_all_true(fake: Client,
                                                                 target: Target) -> None:
    # qstash-js src/client/messages.test.ts "should respect count: 1 with all: true";
    # OAS DELETE /v2/messages count: "Maximum number of messages to delete".
    ids = [later(fake, target) for _ in range(2)]
    response = fake.http.delete("/v2/messages", params={"count": "1"})
    assert response.status_code == 200 and response.json() == {"cancelled": 1}
    # The oldest goes first; the other is still pending, and cancelled by the next call.
    assert fake.states(ids[0])[-1] == "CANCEL_REQUESTED"
    assert fake.states(ids[1]) == ["CREATED"]
    assert fake.http.delete("/v2/messages").json() == {"cancelled": 1}


def test_qstash_js_messages_should_respect_count_1_with_filter(fake: Client,
                                                               target: Target) -> None:
    # qstash-js src/client/messages.test.ts "should respect count: 1 with filter".
    later(fake, target, "other")
    labelled = [later(fake, target, "lab") for _ in range(2)]
    response = fake.http.delete("/v2/messages", params={"label": "lab", "count": "1"})
    assert response.json() == {"cancelled": 1}
    assert fake.http.delete("/v2/messages", params={"label": "lab"}).json() == {"cancelled": 1}
    assert all(fake.states(i)[-1] == "CANCEL_REQUESTED" for i in labelled)


# -- OpenAPI document: what schemathesis found ------------------------------------------


@pytest.mark.parametrize("count", ["abc", "0", "-1", "1.5"])
def test_oas_delete_v2_messages_count_must_be_an_integer_from_1(fake: Client, target: Target,
                                                                count: str) -> None:
    # OAS DELETE /v2/messages: count "type: integer, minimum: 1, maximum: 500"; a bad
    # count used to be ignored, and the call cancelled every message.
    kept = later(fake, target)
    response = fake.http.delete("/v2/messages", params={"count": count})
    assert response.status_code == 400 and "count" in response.json()["error"]
    assert fake.states(kept) == ["CREATED"]


def test_oas_delete_v2_messages_answers_200_with_cancelled(fake: Client, target: Target) -> None:
    # Issue 19 carried over "bulk cancel answers 200 where the document says 202". The
    # document at upstash/docs ef0ce43 lists only ``'200'`` for DELETE /v2/messages (and
    # for DELETE /v2/messages/{messageId}), with ``{"cancelled": integer}``; qstash-py
    # ``cancel_many``/``cancel_all`` and qstash-js ``messages.cancel`` read that body.
    # 202 is only the deduplicated publish's status (the "Deduplication" page).
    later(fake, target)
    response = fake.http.delete("/v2/messages", params={"count": "600"})  # over 500: 500
    assert response.status_code == 200 and response.json() == {"cancelled": 1}


def test_oas_get_v2_dlq_count_maximum_is_100(fake: Client, target: Target) -> None:
    # OAS GET /v2/dlq count: "default: 100, maximum: 100" (GET /v2/logs says the same):
    # count=500 used to return all 101 in one page.
    target.reply("/dead", Reply(500))
    for _ in range(101):
        fake.publish(f"{target.url}/dead", b"x", Upstash_Retries="0")
    fake.tick()
    first = fake.http.get("/v2/dlq", params={"count": "500"}).json()
    assert len(first["messages"]) == 100 and first["cursor"]
    rest = fake.http.get("/v2/dlq", params={"cursor": first["cursor"]}).json()
    assert len(rest["messages"]) == 1 and "cursor" not in rest
    logs = fake.http.get("/v2/logs", params={"count": "500"}).json()
    assert len(logs["logs"]) == 100 and logs["cursor"]


@pytest.mark.parametrize("queue", [{}, False, 5, [], ""])
def test_oas_post_v2_batch_queue_must_be_a_queue_name(fake: Client, target: Target,
                                                      queue: object) -> None:
    # OAS POST /v2/batch: ``queue`` is "type: string"; ``{}`` and ``false`` used to be
    # read as "no queue" (published at once) while ``5`` was refused.
    response = fake.http.post("/v2/batch", json=[
        {"destination": f"{target.url}/q", "queue": queue},
        {"destination": f"{target.url}/ok", "queue": "emails"},
    ])
    bad, good = response.json()
    assert "queue" in bad["error"]
    assert good["messageId"].startswith("msg_")
    assert fake.http.get(f"/v2/messages/{good['messageId']}").json()["queueName"] == "emails"


@pytest.mark.parametrize("item", [{"body": 5}, {"body": {"a": 1}}, {"headers": {"X-A": 1}},
                                  {"headers": ["X-A"]}])
def test_oas_post_v2_batch_body_and_headers_are_strings(fake: Client, target: Target,
                                                        item: dict[str, object]) -> None:
    # OAS POST /v2/batch: ``body`` "type: string", ``headers`` "additionalProperties:
    # type: string". A body of another type used to be dropped silently (sent empty).
    [answer] = fake.http.post("/v2/batch", json=[
        {"destination": f"{target.url}/x", **item}]).json()
    assert "error" in answer and ("body" in answer["error"] or "headers" in answer["error"])


@pytest.mark.parametrize("prefix", ["/v2/publish/", "/v2/enqueue/q/"])
def test_oas_post_v2_publish_destination_with_an_encoded_newline(fake: Client, target: Target,
                                                                 prefix: str) -> None:
    # OAS POST /v2/publish/{destination}: a destination whose path holds ``%0A`` used to
    # miss every route (the router's bare 404). It is a URL like any other: published,
    # and delivered with the escape kept.
    response = fake.http.post(f"{prefix}{target.url}/a%0Ab", content=b"x")
    assert response.status_code == 200, response.text
    assert response.json()["url"] == f"{target.url}/a%0Ab"
    fake.tick()
    [got] = target.requests
    assert got.path == "/a\nb"  # the recording server decodes the path it was sent
    # A newline in the host is no URL: a 400 naming the destination, not a 404.
    bad = fake.http.post(f"{prefix}https://exa%0Ample.com/", content=b"x")
    assert bad.status_code == 400 and "destination" in bad.json()["error"]


def test_oas_post_v2_schedules_destination_with_an_encoded_newline(fake: Client,
                                                                   target: Target) -> None:
    # OAS POST /v2/schedules/{destination}: the same destination used to get a 405 (the
    # ``/v2/schedules/{scheduleId}`` routes matched the path, none for POST).
    response = fake.http.post(f"/v2/schedules/{target.url}/a%0Ab", content=b"x",
                              headers={"Upstash-Cron": "* * * * *"})
    assert response.status_code == 200, response.text
    schedule_id = response.json()["scheduleId"]
    assert fake.http.get(f"/v2/schedules/{schedule_id}").json()["destination"] == \
        f"{target.url}/a%0Ab"


@pytest.mark.parametrize("damage", ["data = 'not json'", "data = json_set(data, '$.opts', 'x')"])
def test_oas_get_v2_messages_id_of_a_damaged_row_is_a_404(tmp_path: Path, target: Target,
                                                           damage: str) -> None:
    # OAS GET /v2/messages/{messageId} lists 200 and 404; a damaged stored row (a
    # hand-edited database) used to be a 500. It is a 404 naming the message.
    server = EmulatorServer(tmp_path, clock=FakeClock(START), start_delivery=False).start()
    try:
        client = Client(server)
        message_id = client.publish(f"{target.url}/x", b"x", Upstash_Delay="1h").json()[
            "messageId"]
        with sqlite3.connect(tmp_path / DB_FILENAME) as con:
            con.execute(f"UPDATE messages SET {damage} WHERE id = ?", (message_id,))
        response = client.http.get(f"/v2/messages/{message_id}")
        assert response.status_code == 404
        assert message_id in response.json()["error"] and "damaged" in response.json()["error"]
        client.http.close()
    finally:
        server.stop()
