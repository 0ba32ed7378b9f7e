"""Fidelity with QStash where the emulator used to differ (issue 9, items 1-3 and 5-7).

Each test names the document or SDK test it follows: upstash/docs ``qstash/openapi.yaml``
(OAS below) and upstash/qstash-js ``src/client/*.test.ts``.
"""

from __future__ import annotations

from typing import Any

from .conftest import START, Client, Reply, Target


def dead(fake: Client, target: Target, path: str, status: int = 500, **headers: str) -> str:
    """Publish to ``path`` (answering ``status``) with no retries; tick it into the DLQ."""
    target.reply(path, Reply(status))
    response = fake.publish(f"{target.url}{path}", b"x", Upstash_Retries="0", **headers)
    assert response.status_code == 200, response.text
    fake.tick()
    return str(response.json()["messageId"])


def dlq_ids(fake: Client, **params: Any) -> list[str]:
    response = fake.http.get("/v2/dlq", params=params)
    assert response.status_code == 200, response.text
    return sorted(m["messageId"] for m in response.json()["messages"])


# -- 1. multi-value filters ------------------------------------------------------------


def test_dlq_filters_take_repeated_and_comma_separated_values(fake: Client,
                                                              target: Target) -> None:
    # OAS /v2/dlq: "Multiple values can be passed either by repeating the query parameter
    # (`label=label_1&label=label_2`) or as a single comma-separated value"; url,
    # responseStatus, flowControlKey are arrays (OR within a filter, AND across filters).
    a = dead(fake, target, "/a", 500)
    b = dead(fake, target, "/b", 489)
    c = dead(fake, target, "/c", 503)
    assert dlq_ids(fake, url=[f"{target.url}/a", f"{target.url}/b"]) == sorted([a, b])
    assert dlq_ids(fake, responseStatus="489,500") == sorted([a, b])
    assert dlq_ids(fake, responseStatus=["503", "500"]) == sorted([a, c])
    assert dlq_ids(fake, responseStatus="489,500", url=f"{target.url}/a") == [a]


def test_bulk_cancel_filters_by_several_paths_and_flow_keys(fake: Client, target: Target) -> None:
    # OAS DELETE /v2/messages: url, host, path, flowControlKey "Support multiple values";
    # qstash-js src/client/messages.test.ts cancels by filter the same way.
    def later(path: str, key: str) -> str:
        response = fake.publish(f"{target.url}{path}", b"x", Upstash_Delay="1h",
                                Upstash_Flow_Control_Key=key,
                                Upstash_Flow_Control_Value="parallelism=1")
        return str(response.json()["messageId"])

    later("/p1", "k1")
    later("/p2", "k2")
    kept = later("/p3", "k3")
    response = fake.http.delete("/v2/messages", params={"path": ["/p1", "/p2"]})
    assert response.json()["cancelled"] == 2
    later("/p4", "k4")
    later("/p5", "k5")
    response = fake.http.delete("/v2/messages", params={"flowControlKey": "k4,k5"})
    assert response.json()["cancelled"] == 2
    fake.advance(3600)
    fake.tick()
    assert [r.path for r in target.requests] == ["/p3"]
    assert "DELIVERED" in fake.states(kept)


def test_logs_filters_take_several_urls_and_queues(fake: Client, target: Target) -> None:
    # qstash-js src/client/logs.test.ts filters logs; OAS lists url/queueName per filter,
    # and the JS SDK repeats a parameter for each value.
    one = fake.publish(f"{target.url}/l1", b"x").json()["messageId"]
    two = fake.publish(f"{target.url}/l2", b"x").json()["messageId"]
    fake.publish(f"{target.url}/l3", b"x")
    events = fake.events(url=[f"{target.url}/l1", f"{target.url}/l2"])
    assert {e["messageId"] for e in events} == {one, two}
    events = fake.events(url=f"{target.url}/l1,{target.url}/l3", state="CREATED")
    assert len(events) == 2


# -- 2. an unknown filter field is an error ----------------------------------------------


def test_a_mistyped_filter_field_is_a_400_naming_it(fake: Client, target: Target) -> None:
    # QStash refuses unknown filter fields (issue 9 item 2); a typo must never widen a
    # destructive call to "everything".
    dead(fake, target, "/t", 500, Upstash_Label="x")
    response = fake.http.delete("/v2/dlq", params={"labeel": "x"})
    assert response.status_code == 400
    assert "labeel" in response.json()["error"]
    assert len(dlq_ids(fake)) == 1
    pending = fake.publish(f"{target.url}/later", b"x", Upstash_Delay="1h").json()["messageId"]
    response = fake.http.delete("/v2/messages", params={"messageId": pending})
    assert response.status_code == 400
    assert "messageId" in response.json()["error"]
    assert fake.states(pending) == ["CREATED"]
    assert fake.http.get("/v2/events", params={"stat": "FAILED"}).status_code == 400
    assert fake.http.post("/v2/dlq/retry", params={"urll": "x"}).status_code == 400


# -- 3. logs host and path filters ---------------------------------------------------------


def test_logs_filter_by_host_and_path(fake: Client, target: Target) -> None:
    # The JS SDK sends host and path on /v2/logs (qstash-api.md §1.4); they used to be ignored.
    one = fake.publish(f"{target.url}/h1", b"x").json()["messageId"]
    fake.publish(f"{target.url}/h2", b"x")
    assert {e["messageId"] for e in fake.events(path="/h1")} == {one}
    host = target.url.split("://", 1)[1].split(":")[0]
    assert len(fake.events(host=host)) == 2
    assert fake.events(host="elsewhere.example") == []


# -- 5. DLQ bulk delete and retry paginate -------------------------------------------------


def test_dlq_bulk_delete_and_retry_take_100_at_a_time_with_a_cursor(fake: Client,
                                                                   target: Target) -> None:
    # OAS DELETE /v2/dlq and POST /v2/dlq/retry: count "default: 100, maximum: 100", and
    # "A cursor which you can use in subsequent requests ... If no cursor is returned, you
    # have reached the end"; qstash-js src/client/dlq.test.ts deletes by filter.
    target.reply("/many", Reply(500))
    for _ in range(103):
        fake.publish(f"{target.url}/many", b"x", Upstash_Retries="0")
    fake.tick()
    response = fake.http.delete("/v2/dlq", params={"count": "500"})
    body = response.json()
    assert body["deleted"] == 100 and body["cursor"]
    response = fake.http.delete("/v2/dlq", params={"cursor": body["cursor"]})
    assert response.json() == {"deleted": 3}
    for _ in range(102):
        fake.publish(f"{target.url}/many", b"x", Upstash_Retries="0")
    fake.tick()
    response = fake.http.post("/v2/dlq/retry")
    assert response.status_code == 201
    assert len(response.json()["responses"]) == 100 and response.json()["cursor"]
    response = fake.http.post("/v2/dlq/retry", params={"cursor": response.json()["cursor"]})
    assert len(response.json()["responses"]) == 2 and "cursor" not in response.json()


# -- 6. deleting what does not exist -------------------------------------------------------


def test_deleting_or_pausing_unknown_names_answers_200_as_the_openapi_says(fake: Client) -> None:
    # OAS: DELETE /v2/topics/{name}, DELETE /v2/queues/{name}, POST /v2/queues/{name}/pause
    # and /resume, POST /v2/schedules/{id}/pause list only 200 (and 400); qstash-js
    # src/client/url-groups.test.ts deletes the group before creating it.
    for method, path in (("DELETE", "/v2/topics/nope"), ("DELETE", "/v2/queues/nope"),
                         ("POST", "/v2/queues/nope/pause"), ("POST", "/v2/queues/nope/resume"),
                         ("DELETE", "/v2/schedules/nope"), ("POST", "/v2/schedules/nope/pause"),
                         ("POST", "/v2/schedules/nope/resume")):
        assert fake.http.request(method, path).status_code == 200, path
    # Reading one that does not exist is still a 404 (OAS GET /v2/topics/{name}).
    assert fake.http.get("/v2/topics/nope").status_code == 404
    assert fake.http.get("/v2/queues/nope").status_code == 404


# -- 7. flow control as QStash reports it --------------------------------------------------


def test_flow_control_reports_period_one_second_and_seconds_for_period_start(
        fake: Client, target: Target) -> None:
    # OAS FlowControlKey: "ratePeriod: The length of the rate period in seconds",
    # "ratePeriodStart: Unix timestamp (seconds)", "waitListSize: The number of messages
    # waiting due to flow control configuration"; qstash-js src/client/flow-control.test.ts.
    fake.publish(f"{target.url}/f", b"x", Upstash_Flow_Control_Key="par",
                 Upstash_Flow_Control_Value="parallelism=1")
    info = fake.http.get("/v2/flowControl/par").json()
    assert info["ratePeriod"] == 1
    for _ in range(3):
        fake.publish(f"{target.url}/f", b"x", Upstash_Flow_Control_Key="rate",
                     Upstash_Flow_Control_Value="rate=1")
    fake.publish(f"{target.url}/f", b"x", Upstash_Delay="1h", Upstash_Flow_Control_Key="rate",
                 Upstash_Flow_Control_Value="rate=1")
    fake.tick()
    info = fake.http.get("/v2/flowControl/rate").json()
    assert info["ratePeriod"] == 1
    assert info["rateCount"] == 1
    assert info["ratePeriodStart"] == int(START)
    # Two wait because of the rate; the delayed one waits for its time, not for the key.
    assert info["waitListSize"] == 2
    # OAS pin: "Pinning a configuration resets the current state (rate count and period)".
    assert fake.http.post("/v2/flowControl/rate/pin", params={"rate": "5"}).status_code == 200
    info = fake.http.get("/v2/flowControl/rate").json()
    assert info["rateCount"] == 0 and info["ratePeriodStart"] == 0


# -- 8. callback delays are refused ------------------------------------------------------


def test_callback_delays_are_refused_at_publish(fake: Client, target: Target) -> None:
    # OAS Upstash-Callback-* / Upstash-Failure-Callback-* list only Method, Timeout, Retries
    # and Retry-Delay: QStash dropped callback delays in March 2025 (changelog).
    for header in ("Upstash-Callback-Delay", "Upstash-Failure-Callback-Delay"):
        response = fake.http.post(
            f"/v2/publish/{target.url}/x", content=b"x",
            headers={"Upstash-Callback": f"{target.url}/cb",
                     "Upstash-Failure-Callback": f"{target.url}/fcb", header: "10s"})
        assert response.status_code == 400
        assert header in response.json()["error"]
    assert fake.events() == []


# -- 11. a schedule without a body -------------------------------------------------------


def test_a_schedule_overwritten_without_a_body_lists_no_body(fake: Client,
                                                             target: Target) -> None:
    # OAS Schedule.body is optional; QStash omits it for a schedule without one.
    url = f"/v2/schedules/{target.url}/s"
    fake.http.post(url, content=b"first", headers={"Upstash-Cron": "* * * * *",
                                                  "Upstash-Schedule-Id": "same"})
    assert fake.http.get("/v2/schedules/same").json()["body"] == "first"
    fake.http.post(url, headers={"Upstash-Cron": "* * * * *", "Upstash-Schedule-Id": "same"})
    [listed] = fake.http.get("/v2/schedules").json()
    assert "body" not in listed and "bodyBase64" not in listed


# -- 12. the smaller differences ---------------------------------------------------------


def test_bulk_retry_of_an_unknown_dlq_id_is_404(fake: Client, target: Target) -> None:
    # OAS POST /v2/dlq/retry: '404: Some messages were not found in the DLQ'.
    dead(fake, target, "/r")
    [known] = [m["dlqId"] for m in fake.http.get("/v2/dlq").json()["messages"]]
    response = fake.http.post("/v2/dlq/retry", json={"dlqIds": [known, "1-0"]})
    assert response.status_code == 404
    assert "not found" in response.json()["error"]
    assert len(dlq_ids(fake)) == 1  # nothing was retried


def test_a_unix_ms_cursor_pages_the_events(fake: Client, target: Target) -> None:
    # qstash-js src/client/logs.test.ts pages with the cursor QStash returns: a unix-ms time.
    fake.publish(f"{target.url}/a", b"x")
    fake.advance(1)
    newer = fake.publish(f"{target.url}/b", b"x").json()["messageId"]
    cursor = str(int(START * 1000) + 1000)
    response = fake.http.get("/v2/events", params={"cursor": cursor})
    assert response.status_code == 200
    assert newer not in {e["messageId"] for e in response.json()["events"]}
    assert len(response.json()["events"]) == 1


def test_deliveries_carry_the_documented_headers_only(fake: Client, target: Target) -> None:
    # qstash-api.md §3.2 (QStash docs "receiving"): Upstash-Topic-Name, Upstash-Schedule-Id,
    # no Upstash-Endpoint-Name or Upstash-Queue-Name.
    fake.http.post("/v2/topics/g/endpoints",
                   json={"endpoints": [{"name": "one", "url": f"{target.url}/g"}]})
    fake.publish("g", b"x")
    fake.http.post(f"/v2/enqueue/q/{target.url}/q", content=b"x")
    fake.tick()
    [group, queued] = sorted(target.requests, key=lambda r: r.path)
    assert group.headers["upstash-topic-name"] == "g"
    assert "upstash-endpoint-name" not in group.headers
    assert "upstash-queue-name" not in queued.headers


def test_a_batch_item_with_a_queue_ignores_its_delay_as_enqueue_does(fake: Client,
                                                                     target: Target) -> None:
    # The OAS lists no Upstash-Delay for /v2/enqueue; a batch item with a queue is the
    # same publish, so it is delivered in queue order at once either way.
    fake.http.post(f"/v2/enqueue/q/{target.url}/e", content=b"x",
                   headers={"Upstash-Delay": "1h"})
    fake.http.post("/v2/batch", json=[{"destination": f"{target.url}/b", "queue": "q",
                                       "headers": {"Upstash-Delay": "1h"}}])
    fake.tick()
    fake.tick()
    assert sorted(r.path for r in target.requests) == ["/b", "/e"]


def test_delay_and_timeout_take_only_value_unit_syntax(fake: Client, target: Target) -> None:
    # OAS Upstash-Delay / Upstash-Timeout: "The format of this header is <value><unit>",
    # units s, m, h (and d for the delay).
    for header, value in (("Upstash-Delay", "10"), ("Upstash-Delay", "500ms"),
                          ("Upstash-Timeout", "30")):
        response = fake.http.post(f"/v2/publish/{target.url}/d", content=b"x",
                                  headers={header: value})
        assert response.status_code == 400, (header, value)
        assert header in response.json()["error"]
    ok = fake.http.post(f"/v2/publish/{target.url}/d", content=b"x",
                        headers={"Upstash-Delay": "1d10h30m", "Upstash-Timeout": "30s"})
    assert ok.status_code == 200


def test_retries_above_the_highest_plan_maximum_are_refused(fake: Client,
                                                            target: Target) -> None:
    # QStash pricing "Max Retry Count": Free 3, pay-as-you-go 5, Pro/Enterprise 20.
    assert fake.publish(f"{target.url}/r", b"x", Upstash_Retries="20").status_code == 200
    response = fake.publish(f"{target.url}/r", b"x", Upstash_Retries="21")
    assert response.status_code == 400 and "Upstash-Retries" in response.json()["error"]


def test_patch_topic_sets_headers_every_delivery_to_the_group_carries(
        fake: Client, target: Target) -> None:
    # QStash docs howto/webhook: PATCH /v2/topics/{name} with {"headers": {...}}.
    fake.http.post("/v2/topics/hooks/endpoints", json={"endpoints": [{"url": f"{target.url}/h"}]})
    response = fake.http.patch("/v2/topics/hooks", json={"headers": {"X-Source": "group"}})
    assert response.status_code == 200
    fake.http.post("/v2/publish/hooks", content=b"x",
                   headers={"Upstash-Forward-X-Own": "message"})
    fake.tick()
    [got] = target.requests
    assert (got.headers["x-source"], got.headers["x-own"]) == ("group", "message")
    assert fake.http.patch("/v2/topics/none", json={"headers": {}}).status_code == 404
