"""``/v2/batch`` stores its messages in one transaction, each item rolled back alone."""

from __future__ import annotations

from typing import Any

import pytest

from celery_qstash.local.emulator.store import EventFilter

from .conftest import Client, Target


def test_a_batch_is_one_commit(fake: Client, target: Target) -> None:
    fake.http.post("/v2/batch", json=[{"destination": f"{target.url}/warm"}])  # signing keys
    statements: list[str] = []
    conn = fake.emulator.store._db
    conn.set_trace_callback(statements.append)
    try:
        response = fake.http.post("/v2/batch", json=[
            {"destination": f"{target.url}/b{i}", "body": str(i)} for i in range(50)
        ])
    finally:
        conn.set_trace_callback(None)
    assert response.status_code == 200
    assert all(item["messageId"] for item in response.json())
    transactions: list[list[str]] = []
    for statement in statements:
        if statement.startswith("BEGIN"):
            transactions.append([])
        elif transactions:
            transactions[-1].append(statement)
    writing = [t for t in transactions if any(s.startswith("INSERT INTO messages") for s in t)]
    assert len(writing) == 1  # every message of the batch in one transaction, one commit
    assert sum(s.startswith("INSERT INTO messages") for s in writing[0]) == 50
    assert fake.tick() == 51


def test_a_batch_with_no_failing_item_takes_no_savepoint(fake: Client, target: Target) -> None:
    fake.http.post("/v2/batch", json=[{"destination": f"{target.url}/warm"}])
    statements: list[str] = []
    conn = fake.emulator.store._db
    conn.set_trace_callback(statements.append)
    try:
        response = fake.http.post("/v2/batch", json=[
            {"destination": f"{target.url}/s{i}", "body": str(i),
             "headers": {"Upstash-Deduplication-Id": f"d{i % 5}"}} for i in range(20)
        ])
    finally:
        conn.set_trace_callback(None)
    # A SAVEPOINT/RELEASE pair per item was a third of a batch's SQLite time.
    assert not [s for s in statements if s.startswith(("SAVEPOINT", "RELEASE", "ROLLBACK"))]
    answers = response.json()
    # Dedup inside one batch still sees the items before it in the same transaction.
    assert [a.get("deduplicated", False) for a in answers] == [False] * 5 + [True] * 15
    assert [a["messageId"] for a in answers[5:]] == [a["messageId"] for a in answers[:5]] * 3
    assert fake.emulator.store.pending_count() == 5 + 1


def test_a_failing_item_rolls_back_the_fast_try_and_nothing_is_stored_twice(
    fake: Client, target: Target
) -> None:
    response = fake.http.post("/v2/batch", json=[
        {"destination": f"{target.url}/one", "body": "1"},
        {"destination": "no-such-url-group", "body": "2"},
        {"destination": f"{target.url}/two", "body": "3",
         "headers": {"Upstash-Deduplication-Id": "two"}},
    ])
    one, missing, two = response.json()
    assert "not found" in missing["error"]
    assert fake.emulator.store.pending_count() == 2
    logged = [e for e in fake.emulator.store.events.page(
        "defaultUser", EventFilter(states=["CREATED"]), None, 100)[0]]
    assert sorted(e["messageId"] for e in logged) == sorted([one["messageId"], two["messageId"]])
    again = fake.http.post("/v2/batch", json=[
        {"destination": f"{target.url}/two", "body": "3",
         "headers": {"Upstash-Deduplication-Id": "two"}}])
    [dup] = again.json()
    assert dup["messageId"] == two["messageId"] and dup["deduplicated"] is True
    assert fake.tick() == 2
    assert sorted(r.path for r in target.requests) == ["/one", "/two"]


def test_an_item_failing_half_way_is_rolled_back_alone(
    fake: Client, target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = fake.emulator.store.messages.flow
    real_touch = flow.touch

    def touch(cur: Any, user: str, key: str, *args: Any, **kwargs: Any) -> Any:
        if key == "boom":  # after the message row was inserted
            raise RuntimeError("unexpected")
        return real_touch(cur, user, key, *args, **kwargs)

    monkeypatch.setattr(flow, "touch", touch)
    response = fake.http.post("/v2/batch", json=[
        {"destination": f"{target.url}/good", "body": "1"},
        {"destination": f"{target.url}/half", "body": "2",
         "headers": {"Upstash-Flow-Control-Key": "boom", "Upstash-Flow-Control-Value": "parallelism=1"}},
        {"destination": f"{target.url}/also-good", "body": "3"},
    ])
    good, half, also = response.json()
    assert good["messageId"] and also["messageId"]
    assert "RuntimeError" in half["error"]
    assert fake.emulator.store.pending_count() == 2  # nothing of the failed item is left
    assert fake.tick() == 2
    assert sorted(r.path for r in target.requests) == ["/also-good", "/good"]


def test_dedup_ids_expire_even_between_sweeps(fake: Client, target: Target) -> None:
    first = fake.publish(f"{target.url}/d", "1", **{"Upstash-Deduplication-Id": "same"})
    again = fake.publish(f"{target.url}/d", "1", **{"Upstash-Deduplication-Id": "same"})
    assert again.json()["messageId"] == first.json()["messageId"]
    fake.emulator.clock.advance(10 * 60 + 0.5)  # past QStash's 10-minute window
    later = fake.publish(f"{target.url}/d", "1", **{"Upstash-Deduplication-Id": "same"})
    assert later.json()["messageId"] != first.json()["messageId"]


def test_delivery_concurrency_is_a_setting() -> None:
    from celery_qstash.local.emulator import Emulator, EmulatorServer
    from celery_qstash.local.emulator.delivery import DEFAULT_CONCURRENCY

    for emulator, workers in ((Emulator(delivery_concurrency=3), 3), (Emulator(), DEFAULT_CONCURRENCY),
                              (EmulatorServer(start_delivery=False, delivery_concurrency=5).emulator, 5)):
        try:
            assert emulator.loop.workers == workers
        finally:
            emulator.close()


def _flow(parallelism: int) -> dict[str, str]:
    return {"Upstash-Flow-Control-Key": "k", "Upstash-Flow-Control-Value": f"parallelism={parallelism}"}


def test_a_batch_writes_a_flow_keys_limits_once_and_the_latest_still_win(
    fake: Client, target: Target
) -> None:
    statements: list[str] = []
    conn = fake.emulator.store._db
    conn.set_trace_callback(statements.append)
    try:
        fake.http.post("/v2/batch", json=[
            {"destination": f"{target.url}/f{i}", "body": str(i), "headers": _flow(2)}
            for i in range(10)
        ])
    finally:
        conn.set_trace_callback(None)
    assert sum(s.startswith("INSERT INTO flow") for s in statements) == 1
    fake.http.post("/v2/batch", json=[
        {"destination": f"{target.url}/g{i}", "body": str(i), "headers": _flow(p)}
        for i, p in enumerate([3, 4, 3])  # the last message's limits define the key
    ])
    assert fake.emulator.store.flow.get("defaultUser", "k")["parallelismMax"] == 3
