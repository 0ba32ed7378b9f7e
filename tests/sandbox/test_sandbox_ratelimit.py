"""429: 2 requests per second and 50 per minute per API key (sliding windows), on a FakeClock."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from celery_qstash.clock import FakeClock
from celery_qstash.local.sandbox import Sandbox
from celery_qstash.local.sandbox.store import RateLimiter

from .helpers import AUTH, START, TestClient, email

OTHER = {"Authorization": "Bearer AS_other_key"}


@pytest.fixture
def limited(clock: FakeClock) -> Iterator[TestClient]:
    # Both windows and the Retry-After header on (the defaults are 2/s only, no header).
    sandbox = Sandbox(clock=clock, rate_per_minute=50, retry_after_header=True)
    with sandbox, TestClient(sandbox.app) as tc:
        yield tc


def send(client: TestClient, headers: dict[str, str] = AUTH) -> httpx.Response:
    return client.post("/v1/mails/send", json=email(), headers=headers)


def assert_rate_limited(response: httpx.Response, retry_after: int, *, header: bool = True) -> None:
    assert response.status_code == 429
    body = response.json()
    assert body["success"] is False
    assert body["message"] == "Rate limit exceeded"
    assert body["retryAfter"] == retry_after
    assert body["error"] == {
        "message": "Rate limit exceeded",
        "code": "RATE_LIMIT_EXCEEDED",
        "retryAfter": retry_after,
    }
    headers = response.headers
    if header:
        assert headers["retry-after"] == str(retry_after)
    else:
        assert "retry-after" not in headers


def test_third_request_within_one_second_is_429(limited: TestClient, clock: FakeClock) -> None:
    assert send(limited).status_code == 200
    clock.advance(0.5)
    assert send(limited).status_code == 200
    clock.advance(0.4)

    third = send(limited)

    # the first request leaves the 1 s window 0.1 s from now: wait 1 (whole seconds, rounded up)
    assert_rate_limited(third, retry_after=1)
    assert limited.get("/api/v1/messages").json()["total"] == 2


def test_recovers_once_the_clock_moves_past_the_window(
    limited: TestClient, clock: FakeClock
) -> None:
    send(limited)
    send(limited)
    assert send(limited).status_code == 429
    clock.advance(0.999)
    assert send(limited).status_code == 429
    clock.advance(0.001)
    assert send(limited).status_code == 200


def test_fifty_first_request_within_a_minute_is_429(limited: TestClient, clock: FakeClock) -> None:
    # 50 requests 0.5 s apart never trip the per-second limit...
    for _ in range(50):
        assert send(limited).status_code == 200
        clock.advance(0.5)
    # ...and the 51st, at t=25 s, trips the per-minute one: the first leaves it at t=60 s
    assert_rate_limited(send(limited), retry_after=35)

    clock.advance(34.5)
    assert send(limited).status_code == 429
    clock.advance(0.5)
    assert send(limited).status_code == 200
    assert limited.get("/api/v1/stats").json()["rejected"] == {"429": 2}


def test_limits_are_per_api_key(limited: TestClient) -> None:
    send(limited)
    send(limited)
    assert send(limited).status_code == 429
    assert send(limited, OTHER).status_code == 200
    assert send(limited, OTHER).status_code == 200
    assert send(limited, OTHER).status_code == 429


def test_rate_limit_headers_on_every_authenticated_response(
    limited: TestClient, clock: FakeClock
) -> None:
    first = send(limited)
    clock.advance(0.5)
    invalid = limited.post("/v1/mails/send", json=email(to=None), headers=AUTH)
    clock.advance(0.1)
    refused = send(limited)

    # they describe the per-minute window; Reset is the epoch second the oldest request leaves it
    for response, remaining in ((first, 49), (invalid, 48), (refused, 48)):
        headers = response.headers
        assert headers["x-ratelimit-limit"] == "50"
        assert headers["x-ratelimit-remaining"] == str(remaining)
        assert headers["x-ratelimit-reset"] == str(int(START) + 60)
    assert invalid.status_code == 400
    assert refused.status_code == 429


def test_retry_after_header_can_be_switched_off(clock: FakeClock) -> None:
    sandbox = Sandbox(clock=clock, retry_after_header=False)
    with sandbox, TestClient(sandbox.app) as tc:
        send(tc)
        send(tc)
        assert_rate_limited(send(tc), retry_after=1, header=False)


def test_limits_are_configurable_and_can_be_disabled(clock: FakeClock) -> None:
    sandbox = Sandbox(clock=clock, rate_per_second=5, rate_per_minute=None)
    with sandbox, TestClient(sandbox.app) as tc:
        statuses = [send(tc).status_code for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        assert tc.get("/api/v1/stats").json()["accepted"] == 5
        # with the minute window off, the headers describe the per-second one
        clock.advance(1)
        assert send(tc).headers["x-ratelimit-limit"] == "5"

    unlimited = Sandbox(clock=clock, rate_per_second=None, rate_per_minute=None)
    with unlimited, TestClient(unlimited.app) as tc:
        responses = [send(tc) for _ in range(60)]
        assert {r.status_code for r in responses} == {200}
        assert "x-ratelimit-limit" not in responses[0].headers


def test_limiter_rounds_float_noise_in_retry_after(clock: FakeClock) -> None:
    limiter = RateLimiter(clock, [(2, 1.0), (50, 60.0)])
    for _ in range(50):
        decision = limiter.hit("fp")
        assert decision is not None and decision.allowed
        clock.advance(0.6)  # 50 x 0.6 is 29.999999999999996, not 30
    decision = limiter.hit("fp")
    assert decision is not None and not decision.allowed
    assert decision.retry_after == 30
    assert decision.remaining == 0
