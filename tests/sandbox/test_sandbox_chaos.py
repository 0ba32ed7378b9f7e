"""Chaos rules: scripted failures and delays on the mail endpoints, visible in the stats."""

from __future__ import annotations

import pytest

from celery_qstash.clock import FakeClock
from celery_qstash.local.sandbox import Sandbox

from .helpers import AUTH, TestClient, email


def test_fail_next_n_with_status_then_success(client: TestClient) -> None:
    # Given two injected 503s
    rules = client.post("/api/v1/chaos", json={"fail_next": 2, "status": 503}, headers=AUTH).json()
    assert rules["remaining"] == 2

    # When the client tries three times
    first = client.post("/v1/mails/send", json=email(), headers=AUTH)
    assert client.get("/api/v1/chaos").json()["remaining"] == 1
    second = client.post("/v1/mails/send", json=email(), headers=AUTH)
    third = client.post("/v1/mails/send", json=email(), headers=AUTH)

    # Then two failures in AutoSend's error shape, then the email goes through
    assert (first.status_code, second.status_code, third.status_code) == (503, 503, 200)
    assert first.json() == {
        "success": False,
        "message": "Service unavailable",
        "error": {"message": "Service unavailable", "code": "SERVICE_UNAVAILABLE"},
    }
    assert client.get("/api/v1/messages").json()["total"] == 1
    assert client.get("/api/v1/chaos").json() == {"rules": [], "remaining": 0, "bounces": []}
    # and the stats show that a retry happened
    stats = client.get("/api/v1/stats").json()
    assert stats["received"] == 3
    assert stats["accepted"] == 1
    assert stats["rejected"] == {"503": 2}


def test_default_rule_is_one_500(client: TestClient) -> None:
    client.post("/api/v1/chaos", json={}, headers=AUTH)
    response = client.post("/v1/mails/send", json=email(), headers=AUTH)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "SERVER_ERROR"
    assert client.post("/v1/mails/send", json=email(), headers=AUTH).status_code == 200


def test_rules_queue_up_in_order(client: TestClient) -> None:
    client.post("/api/v1/chaos", json={"fail_next": 1, "status": 500}, headers=AUTH)
    client.post("/api/v1/chaos", json={"failNext": 1, "status": 429, "retryAfter": 7}, headers=AUTH)
    pending = client.get("/api/v1/chaos").json()
    assert [r["status"] for r in pending["rules"]] == [500, 429]

    assert client.post("/v1/mails/send", json=email(), headers=AUTH).status_code == 500
    limited = client.post("/v1/mails/send", json=email(), headers=AUTH)
    assert limited.status_code == 429
    # The wait is in the body only, as AutoSend documents it (the header is opt-in).
    assert "retry-after" not in limited.headers
    assert limited.json()["retryAfter"] == 7
    assert limited.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert client.post("/v1/mails/send", json=email(), headers=AUTH).status_code == 200


def test_custom_body_is_returned_verbatim(client: TestClient) -> None:
    client.post("/api/v1/chaos", json={"status": 502, "body": {"oops": True}}, headers=AUTH)
    response = client.post("/v1/mails/bulk", json={}, headers=AUTH)
    assert response.status_code == 502
    assert response.json() == {"oops": True}


def test_delete_clears_the_rules(client: TestClient) -> None:
    client.post("/api/v1/chaos", json={"fail_next": 5}, headers=AUTH)
    assert client.delete("/api/v1/chaos", headers=AUTH).json() == {"rules": [], "remaining": 0,
                                                                  "bounces": []}
    assert client.post("/v1/mails/send", json=email(), headers=AUTH).status_code == 200


def test_delay_only_rule_waits_then_handles_the_request(
    client: TestClient, sandbox: Sandbox
) -> None:
    waited: list[float] = []

    async def record(seconds: float) -> None:
        waited.append(seconds)

    sandbox.api.sleep = record
    client.post("/api/v1/chaos", json={"fail_next": 1, "status": None, "delay_ms": 1500}, headers=AUTH)
    response = client.post("/v1/mails/send", json=email(), headers=AUTH)
    assert response.status_code == 200
    assert waited == [1.5]


def test_delay_then_failure(client: TestClient, sandbox: Sandbox) -> None:
    waited: list[float] = []

    async def record(seconds: float) -> None:
        waited.append(seconds)

    sandbox.api.sleep = record
    client.post("/api/v1/chaos", json={"status": 504, "delay_ms": 250}, headers=AUTH)
    assert client.post("/v1/mails/send", json=email(), headers=AUTH).status_code == 504
    assert waited == [0.25]


def test_chaos_needs_authentication_first(client: TestClient) -> None:
    client.post("/api/v1/chaos", json={"fail_next": 1}, headers=AUTH)
    assert client.post("/v1/mails/send", json=email()).status_code == 401
    # the rule is still there for the authenticated request
    assert client.post("/v1/mails/send", json=email(), headers=AUTH).status_code == 500


def test_injected_failures_do_not_use_up_the_rate_limit(clock: FakeClock) -> None:
    sandbox = Sandbox(clock=clock, rate_per_minute=None)  # 2 per second only
    with sandbox, TestClient(sandbox.app) as tc:
        tc.post("/api/v1/chaos", json={"fail_next": 2}, headers=AUTH)
        failed = [tc.post("/v1/mails/send", json=email(), headers=AUTH) for _ in range(2)]
        assert [r.status_code for r in failed] == [500, 500]
        # reported, not consumed; the headers describe the 2/s limit that applies
        assert failed[0].headers["x-ratelimit-remaining"] == "2"
        ok = [tc.post("/v1/mails/send", json=email(), headers=AUTH) for _ in range(2)]
        assert [r.status_code for r in ok] == [200, 200]


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"fail_next": 0}, "fail_next"),
        ({"fail_next": "2"}, "fail_next"),
        ({"fail_next": True}, "fail_next"),
        ({"status": 99}, "status"),
        ({"status": 600}, "status"),
        ({"delay_ms": -1}, "delay_ms"),
        ({"retry_after": 1.5}, "retry_after"),
        ({"p500": 0.1}, "p500"),
    ],
)
def test_invalid_rules_are_rejected(
    client: TestClient, rule: dict[str, object], field: str
) -> None:
    response = client.post("/api/v1/chaos", json=rule, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == field
    assert client.get("/api/v1/chaos").json()["remaining"] == 0


def test_chaos_body_must_be_a_json_object(client: TestClient) -> None:
    headers = {"Content-Type": "application/json", **AUTH}
    assert client.post("/api/v1/chaos", content=b"[1]", headers=headers).status_code == 400
    assert client.post("/api/v1/chaos", content=b"{", headers=headers).status_code == 400
