"""Idempotency-Key: replay within 24 h, 409 on a different body, scoped to the API key."""

from __future__ import annotations

import json

from celery_qstash.clock import FakeClock
from celery_qstash.local.sandbox import Sandbox

from .helpers import AUTH, TestClient, bulk, email

KEYED = {**AUTH, "Idempotency-Key": "order-42-welcome"}


def test_same_key_and_body_replays_the_first_response(client: TestClient) -> None:
    first = client.post("/v1/mails/send", json=email(), headers=KEYED)
    second = client.post("/v1/mails/send", json=email(), headers=KEYED)

    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()  # same emailId, same queuedAt
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    listing = client.get("/api/v1/messages").json()
    assert listing["total"] == 1
    assert listing["messages"][0]["idempotencyKey"] == "order-42-welcome"
    stats = client.get("/api/v1/stats").json()
    assert (stats["accepted"], stats["replayed"], stats["emails"]) == (2, 1, 1)


def test_same_json_with_other_key_order_or_spacing_is_the_same_body(client: TestClient) -> None:
    headers = {**KEYED, "Content-Type": "application/json"}
    body = email(dynamicData={"a": 1, "b": 2})
    first = client.post("/v1/mails/send", content=json.dumps(body), headers=headers)
    reordered = json.dumps(dict(reversed(list(body.items()))), indent=4)
    second = client.post("/v1/mails/send", content=reordered, headers=headers)
    assert second.headers.get("idempotent-replayed") == "true"
    assert second.json()["data"]["emailId"] == first.json()["data"]["emailId"]


def test_same_key_with_a_different_body_is_409(client: TestClient) -> None:
    client.post("/v1/mails/send", json=email(), headers=KEYED)
    conflict = client.post("/v1/mails/send", json=email(subject="Other"), headers=KEYED)

    assert conflict.status_code == 409
    body = conflict.json()
    assert body["success"] is False
    assert body["message"] == "Idempotency key reused with a different body"
    assert body["error"]["code"] == "IDEMPOTENCY_CONFLICT"
    assert client.get("/api/v1/messages").json()["total"] == 1


def test_same_key_on_the_other_endpoint_is_a_conflict(client: TestClient) -> None:
    client.post("/v1/mails/send", json=email(), headers=KEYED)
    assert client.post("/v1/mails/bulk", json=bulk(), headers=KEYED).status_code == 409


def test_bulk_replay_returns_the_same_batch(client: TestClient) -> None:
    first = client.post("/v1/mails/bulk", json=bulk(), headers=KEYED).json()
    second = client.post("/v1/mails/bulk", json=bulk(), headers=KEYED)
    assert second.json()["data"]["batchId"] == first["data"]["batchId"]
    assert client.get("/api/v1/messages").json()["total"] == 2


def test_keys_are_scoped_to_the_api_key(client: TestClient) -> None:
    other = {"Authorization": "Bearer AS_someone_else", "Idempotency-Key": "order-42-welcome"}
    mine = client.post("/v1/mails/send", json=email(), headers=KEYED).json()
    theirs = client.post("/v1/mails/send", json=email(subject="Theirs"), headers=other)

    assert theirs.status_code == 200  # not a conflict: a different key's namespace
    assert "idempotent-replayed" not in theirs.headers
    assert theirs.json()["data"]["emailId"] != mine["data"]["emailId"]
    assert client.get("/api/v1/messages").json()["total"] == 2


def test_failed_validation_is_not_recorded_under_the_key(client: TestClient) -> None:
    bad = client.post("/v1/mails/send", json=email(to={"email": "x"}), headers=KEYED)
    assert bad.status_code == 400
    good = client.post("/v1/mails/send", json=email(), headers=KEYED)
    assert good.status_code == 200
    assert "idempotent-replayed" not in good.headers
    # and the failed attempt is not replayed either: the retry of the bad body fails again
    again = client.post("/v1/mails/send", json=email(to={"email": "x"}), headers=KEYED)
    assert again.status_code == 409


def test_records_expire_after_24_hours(client: TestClient, clock: FakeClock) -> None:
    first = client.post("/v1/mails/send", json=email(), headers=KEYED).json()
    clock.advance(24 * 3600 - 1)
    assert client.post("/v1/mails/send", json=email(), headers=KEYED).json() == first
    clock.advance(1)
    fresh = client.post("/v1/mails/send", json=email(), headers=KEYED)
    assert "idempotent-replayed" not in fresh.headers
    assert fresh.json()["data"]["emailId"] != first["data"]["emailId"]
    assert client.get("/api/v1/messages").json()["total"] == 2


def test_overlong_key_is_rejected(client: TestClient) -> None:
    headers = {**AUTH, "Idempotency-Key": "k" * 257}
    response = client.post("/v1/mails/send", json=email(), headers=headers)
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "Idempotency-Key"


def test_replay_is_still_rate_limited(clock: FakeClock) -> None:
    sandbox = Sandbox(clock=clock)
    with sandbox, TestClient(sandbox.app) as tc:
        tc.post("/v1/mails/send", json=email(), headers=KEYED)
        tc.post("/v1/mails/send", json=email(), headers=KEYED)
        assert tc.post("/v1/mails/send", json=email(), headers=KEYED).status_code == 429
