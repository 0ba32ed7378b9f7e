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
