"""The emulator is guarded like the sandbox and the dashboard (issue 8, item 3 and 4).

A page on another origin must not drive it (cross-origin writes: 403, even with the
public dev token in ``?qstash_token=``), a DNS-rebinding page must not reach it (a
foreign ``Host``: 421), ``/_emulator/reset`` and the clock need the token in the
``Authorization`` header, and a body over ``max_body`` is a 413 before it is read whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from celery_qstash.clock import FakeClock
from celery_qstash.devserver import DEV_TOKEN
from celery_qstash.local.emulator import DEFAULT_MAX_BODY, Emulator, EmulatorServer

from .conftest import AUTH, START, Client, Target

CROSS_SITE = [
    {"Origin": "https://attacker.example"},
    {"Origin": "http://localhost:9999"},  # another local origin is still another origin
    {"Sec-Fetch-Site": "cross-site"},
]


def _pending(client: Client) -> int:
    return int(client.emulator.store.pending_count())


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "LOCALHOST"])
def test_loopback_host_names_are_accepted(fake: Client, target: Target, host: str) -> None:
    port = fake.server.url.rsplit(":", 1)[1]
    response = fake.http.post(f"/v2/publish/{target.url}/x", content=b"hi",
                              headers={"Host": f"{host}:{port}"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
@pytest.mark.parametrize("path", ["/v2/events", "/v2/publish/http://127.0.0.1:1/x",
                                  "/_emulator/reset", "/_emulator/health"])
def test_a_rebinding_host_is_refused(fake: Client, target: Target, method: str,
                                     path: str) -> None:
    fake.publish(f"{target.url}/kept", b"x").raise_for_status()
    response = fake.http.request(method, path, headers={"Host": "evil.example:8080"})
    assert response.status_code == 421
    assert _pending(fake) == 1


@pytest.mark.parametrize("cross_site", CROSS_SITE)
def test_a_cross_origin_publish_is_refused_even_with_the_query_token(
        fake: Client, target: Target, cross_site: dict[str, str]) -> None:
    response = httpx.post(f"{fake.server.url}/v2/publish/{target.url}/x",
                          params={"qstash_token": DEV_TOKEN}, content=b"spam",
                          headers=cross_site, trust_env=False)
    assert response.status_code == 403
    assert _pending(fake) == 0


@pytest.mark.parametrize("cross_site", CROSS_SITE)
@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/_emulator/reset"), ("POST", "/_emulator/clock/advance?seconds=5"),
    ("DELETE", "/v2/messages"), ("POST", "/v2/queues"), ("DELETE", "/v2/dlq"),
])
def test_cross_origin_writes_are_refused_even_with_the_token(
        fake: Client, target: Target, cross_site: dict[str, str], method: str, path: str) -> None:
    fake.publish(f"{target.url}/kept", b"x", upstash_delay="1h").raise_for_status()
    response = fake.http.request(method, path, headers=cross_site, json={"queueName": "q"})
    assert response.status_code == 403
    assert _pending(fake) == 1
    assert fake.emulator.clock.now() == START
    assert fake.http.get("/v2/queues").json() == []


def test_same_origin_and_sdk_requests_still_work(fake: Client, target: Target) -> None:
    own = fake.server.url
    response = fake.http.post(f"/v2/publish/{target.url}/x", content=b"hi",
                              headers={"Origin": own, "Sec-Fetch-Site": "same-origin"})
    assert response.status_code == 200


def test_the_documented_query_token_still_works_for_the_api(fake: Client, target: Target) -> None:
    # https://upstash.com/docs/qstash/api/authentication documents ?qstash_token=.
    response = httpx.post(f"{fake.server.url}/v2/publish/{target.url}/x",
                          params={"qstash_token": DEV_TOKEN}, content=b"hi", trust_env=False)
    assert response.status_code == 200
    assert _pending(fake) == 1


@pytest.mark.parametrize("credentials", [
    {},
    {"params": {"qstash_token": DEV_TOKEN}},  # the control plane takes the header only
    {"headers": {"Authorization": "Bearer not-a-token"}},
])
def test_reset_needs_the_token_in_the_authorization_header(
        fake: Client, target: Target, credentials: dict[str, Any]) -> None:
    fake.publish(f"{target.url}/kept", b"x").raise_for_status()
    response = httpx.post(f"{fake.server.url}/_emulator/reset", trust_env=False, **credentials)
    assert response.status_code == 401
    assert "Authorization" in response.json()["error"]
    assert _pending(fake) == 1
    assert httpx.post(f"{fake.server.url}/_emulator/reset", headers=AUTH,
                      trust_env=False).json() == {"reset": True}
    assert _pending(fake) == 0


def test_the_clock_needs_the_token_and_a_sane_value(fake: Client) -> None:
    url = f"{fake.server.url}/_emulator/clock/advance"
    assert httpx.post(url, params={"seconds": 5}, trust_env=False).status_code == 401
    for bad in ("nan", "inf", "-1", "1e300", "x"):
        response = httpx.post(url, params={"seconds": bad}, headers=AUTH, trust_env=False)
        assert response.status_code == 400, bad
    assert fake.emulator.clock.now() == START


# -- size limits -------------------------------------------------------------------


@pytest.fixture
def small() -> Iterator[EmulatorServer]:
    with EmulatorServer(clock=FakeClock(START), start_delivery=False, max_body=1000) as server:
        yield server


def test_the_default_limit_is_qstash_message_size() -> None:
    assert DEFAULT_MAX_BODY == 1024 * 1024


def test_a_publish_over_the_limit_is_413_and_nothing_is_stored(small: EmulatorServer,
                                                                target: Target) -> None:
    client = Client(small)
    assert client.publish(f"{target.url}/ok", b"x" * 1000).status_code == 200
    for path in (f"/v2/publish/{target.url}/big", f"/v2/enqueue/q/{target.url}/big"):
        response = client.http.post(path, content=b"x" * 1001)
        assert response.status_code == 413
        assert "1000-byte limit" in response.json()["error"]
    schedule = client.http.post(f"/v2/schedules/{target.url}/big", content=b"x" * 5000,
                                headers={"Upstash-Cron": "* * * * *"})
    assert schedule.status_code == 413
    assert small.emulator.store.pending_count() == 1
    assert small.emulator.store.schedules.all("defaultUser") == []


def test_a_chunked_publish_over_the_limit_is_413(small: EmulatorServer, target: Target) -> None:
    client = Client(small)

    def chunks() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding: chunked
        for _ in range(20):
            yield b"y" * 100

    response = client.http.post(f"/v2/publish/{target.url}/big", content=chunks())
    assert response.status_code == 413
    assert small.emulator.store.pending_count() == 0


def test_batch_items_are_held_to_the_message_limit(small: EmulatorServer, target: Target) -> None:
    client = Client(small)
    response = client.http.post("/v2/batch", json=[
        {"destination": f"{target.url}/a", "body": "a" * 900},
        {"destination": f"{target.url}/b", "body": "b" * 1001},
    ])
    assert response.status_code == 200
    first, second = response.json()
    assert "messageId" in first
    assert "1000-byte message size limit" in second["error"]
    whole = client.http.post("/v2/batch", json=[{"destination": f"{target.url}/c",
                                                 "body": "c" * 900}] * 12)
    assert whole.status_code == 413  # 12 x 900 bytes is over 10 x the message limit
    assert small.emulator.store.pending_count() == 1


def _asgi_post(app: Any, headers: list[tuple[bytes, bytes]],
               chunks: Iterator[bytes]) -> tuple[int, int]:
    """POST to an ASGI app by hand: (status, body bytes the app pulled)."""
    pulled = 0
    status = 0
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v2/publish/http://127.0.0.1:1/x",
             "raw_path": b"/v2/publish/http://127.0.0.1:1/x", "query_string": b"",
             "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8080),
             "headers": [(b"host", b"127.0.0.1:8080"),
                         (b"authorization", f"Bearer {DEV_TOKEN}".encode()), *headers]}

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        chunk = next(chunks)
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    asyncio.run(app(scope, receive, send))
    return status, pulled


def _endless() -> Iterator[bytes]:
    while True:
        yield b"z" * 65536


def test_a_declared_length_over_the_limit_is_refused_before_any_byte_is_read() -> None:
    emulator = Emulator(clock=FakeClock(START), max_body=1000)
    try:
        status, pulled = _asgi_post(emulator.app, [(b"content-length", b"60000000")], _endless())
        assert (status, pulled) == (413, 0)
    finally:
        emulator.close()


def test_an_endless_chunked_body_is_cut_off_at_the_limit() -> None:
    emulator = Emulator(clock=FakeClock(START), max_body=1000)
    try:
        status, pulled = _asgi_post(emulator.app, [(b"transfer-encoding", b"chunked")],
                                    _endless())
        assert status == 413
        assert pulled == 65536  # the first chunk past the limit, and not one more
        assert emulator.store.pending_count() == 0
    finally:
        emulator.close()
