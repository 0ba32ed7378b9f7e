"""Every filter matches exactly (issue 23, item 2): ``_`` and ``%`` are characters, case
counts, and a bulk delete, retry or cancel takes exactly what a list with the same
filter shows.

The finding: with dead letters labelled ``job_bae6``, ``jobXbae6`` and ``JOB_bae6``,
``DELETE /v2/dlq?label=job_bae6`` deleted all three (SQL ``LIKE``), and ``label=%``
matched every entry. Each field is replayed with three look-alike values.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from celery_qstash.devserver import DEV_TOKEN, DEV_USERS
from celery_qstash.local.emulator.publish import parse_publish_headers

from .conftest import Client

DEAD = "http://127.0.0.1:9"  # nothing listens: every attempt fails, retries 0 -> the DLQ
#: One value, a look-alike where ``_`` would match any character, and another case.
VARIANTS = ("a_1", "aX1", "A_1")
#: Filter values that must match nothing but themselves.
WILDCARDS = ("%", "a%", "_", "a_%", "%_1")


def _make(client: Client, field: str, value: str) -> None:
    """One message whose ``field`` is ``value``, published and left to fail."""
    emulator = client.emulator
    fail = {"Upstash-Retries": "0"}
    if field == "label":
        client.publish(f"{DEAD}/x", b"x", **{**fail, "Upstash-Label": value})
    elif field == "url":
        client.publish(f"{DEAD}/{value}", b"x", **fail)
    elif field == "path":
        client.publish(f"{DEAD}/p/{value}", b"x", **fail)
    elif field == "flowControlKey":
        client.publish(f"{DEAD}/x", b"x", **{**fail, "Upstash-Flow-Control-Key": value,
                                               "Upstash-Flow-Control-Value": "parallelism=5"})
    elif field == "topicName":
        client.http.post(f"/v2/topics/{value}/endpoints",
                         json={"endpoints": [{"url": f"{DEAD}/t"}]}).raise_for_status()
        client.publish(value, b"x", **fail).raise_for_status()
    elif field == "queueName":
        client.http.post(f"/v2/enqueue/{value}/{DEAD}/q", content=b"x",
                         headers=fail).raise_for_status()
    elif field == "scheduleId":
        client.http.post(f"/v2/schedules/{DEAD}/s", content=b"x", headers={
            **fail, "Upstash-Cron": "* * * * *", "Upstash-Schedule-Id": value,
        }).raise_for_status()
    elif field == "callerIp":
        emulator.store.publish(DEV_USERS[DEV_TOKEN][0], f"{DEAD}/c", parse_publish_headers(
            list(fail.items()), b"x"), caller_ip=value)
    else:
        raise AssertionError(field)


#: The DLQ's filter fields; the logs also take ``path``.
FIELDS = ["label", "url", "flowControlKey", "topicName", "queueName", "scheduleId",
          "callerIp"]


def _value(field: str, variant: str) -> str:
    if field == "url":
        return f"{DEAD}/{variant}"
    if field == "path":
        return f"/p/{variant}"
    return variant


def _dead_letters(client: Client, field: str) -> None:
    for variant in VARIANTS:
        _make(client, field, variant)
    client.advance(60)  # schedules fire
    for _ in range(4):
        client.tick()
    assert len(client.http.get("/v2/dlq").json()["messages"]) == len(VARIANTS)


def _listed(client: Client, path: str, field: str, value: str) -> set[str]:
    answer = client.http.get(path, params={field: value})
    assert answer.status_code == 200, answer.text
    key = "messages" if path == "/v2/dlq" else "events"
    if path == "/v2/logs":
        key = "events" if "events" in answer.json() else "logs"
    return {entry.get("dlqId") or entry["messageId"] for entry in answer.json()[key]}


@pytest.mark.parametrize("field", FIELDS)
def test_a_dlq_filter_lists_and_deletes_exactly_the_same_entries(fake: Client,
                                                                 field: str) -> None:
    _dead_letters(fake, field)
    for wildcard in WILDCARDS:
        assert _listed(fake, "/v2/dlq", field, _value(field, wildcard)) == set()
        assert fake.http.delete("/v2/dlq", params={field: _value(field, wildcard)}
                                ).json()["deleted"] == 0
    for variant in VARIANTS:
        value = _value(field, variant)
        shown = _listed(fake, "/v2/dlq", field, value)
        assert len(shown) == 1, (variant, shown)
        before = {e["dlqId"] for e in fake.http.get("/v2/dlq").json()["messages"]}
        assert fake.http.delete("/v2/dlq", params={field: value}).json()["deleted"] == 1
        after = {e["dlqId"] for e in fake.http.get("/v2/dlq").json()["messages"]}
        assert before - after == shown  # what the list showed, and nothing else


@pytest.mark.parametrize("field", [*FIELDS, "path"])
def test_the_logs_and_a_dlq_retry_match_exactly(fake: Client, field: str) -> None:
    _dead_letters(fake, field)
    value = _value(field, VARIANTS[0])
    logged = _listed(fake, "/v2/logs", field, value)
    for wildcard in WILDCARDS:
        assert _listed(fake, "/v2/logs", field, _value(field, wildcard)) == set()
    assert logged and all(
        _listed(fake, "/v2/logs", field, _value(field, v)).isdisjoint(logged)
        for v in VARIANTS[1:])
    if field == "path":
        return
    shown = _listed(fake, "/v2/dlq", field, value)
    retried = fake.http.post("/v2/dlq/retry", params={field: value})
    assert retried.status_code == 201, retried.text
    assert len(retried.json()["responses"]) == len(shown) == 1
    assert len(fake.http.get("/v2/dlq").json()["messages"]) == len(VARIANTS) - 1


CANCELLABLE: dict[str, Callable[[Client, str], None]] = {
    "label": lambda c, v: c.publish(f"{DEAD}/x", b"x", Upstash_Delay="1h",
                                    Upstash_Label=v).raise_for_status(),
    "url": lambda c, v: c.publish(f"{DEAD}/{v}", b"x", Upstash_Delay="1h").raise_for_status(),
    "flowControlKey": lambda c, v: c.publish(
        f"{DEAD}/x", b"x", Upstash_Delay="1h", Upstash_Flow_Control_Key=v,
        Upstash_Flow_Control_Value="parallelism=5").raise_for_status(),
}


@pytest.mark.parametrize("field", sorted(CANCELLABLE))
def test_a_bulk_cancel_cancels_exactly_what_matches(fake: Client, field: str) -> None:
    for variant in VARIANTS:
        CANCELLABLE[field](fake, variant)
    for wildcard in WILDCARDS:
        assert fake.http.delete("/v2/messages", params={field: _value(field, wildcard)}
                                ).json()["cancelled"] == 0
    assert fake.http.delete("/v2/messages", params={field: _value(field, VARIANTS[0])}
                            ).json()["cancelled"] == 1
    assert fake.http.delete("/v2/messages", params={field: _value(field, VARIANTS[2])}
                            ).json()["cancelled"] == 1
