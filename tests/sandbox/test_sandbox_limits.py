"""The sandbox refuses a request body over ``max_body`` (issue 8, item 4): 413 in
AutoSend's error shape, before the body is read whole, and nothing is captured."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from celery_qstash.clock import FakeClock
from celery_qstash.local.sandbox import DEFAULT_MAX_BODY, Sandbox, SandboxServer

from .helpers import AUTH, START, TestClient, email


@pytest.fixture
def small(clock: FakeClock) -> Iterator[TestClient]:
    with (Sandbox(clock=clock, rate_per_second=None, rate_per_minute=None,
                  max_body=20_000) as sb,
          TestClient(sb.app) as tc):
        yield tc


def _attachment(size: int) -> dict[str, Any]:
    return {"fileName": "big.bin", "content": base64.b64encode(b"\0" * size).decode()}


def _total(client: TestClient) -> int:
    return int(client.get("/api/v1/messages").json()["total"])


def test_the_default_limit() -> None:
    assert DEFAULT_MAX_BODY == 10_000_000


def test_an_email_within_the_limit_is_accepted(small: TestClient) -> None:
    response = small.post("/v1/mails/send", json=email(attachments=[_attachment(10_000)]),
                          headers=AUTH)
    assert response.status_code == 200, response.text
    assert _total(small) == 1


@pytest.mark.parametrize("path", ["/v1/mails/send", "/v1/mails/bulk", "/api/v1/chaos"])
def test_a_body_over_the_limit_is_413_in_autosend_shape(small: TestClient, path: str) -> None:
    response = small.post(path, json=email(attachments=[_attachment(30_000)]), headers=AUTH)
    assert response.status_code == 413
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert "20000-byte limit" in body["error"]["message"] == body["message"]
    assert _total(small) == 0
    assert small.get("/api/v1/chaos").json()["remaining"] == 0


def test_a_chunked_body_over_the_limit_is_413_over_real_http() -> None:
    with SandboxServer(clock=FakeClock(START), max_body=20_000) as server:
        def chunks() -> Iterator[bytes]:
            yield b'{"to": {"email": "a@example.com"}, "html": "'
            for _ in range(40):
                yield b"x" * 1000
            yield b'"}'

        response = httpx.post(f"{server.url}/v1/mails/send", content=chunks(),
                              headers={**AUTH, "Content-Type": "application/json"},
                              trust_env=False)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
        assert server.sandbox.store.messages()[0] == 0


def test_a_declared_length_over_the_limit_is_refused_before_any_byte_is_read() -> None:
    pulled = 0
    status = 0
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/mails/send",
             "raw_path": b"/v1/mails/send", "query_string": b"", "root_path": "",
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8025),
             "headers": [(b"host", b"127.0.0.1:8025"), (b"content-length", b"30000000"),
                         (b"content-type", b"application/json"),
                         (b"authorization", AUTH["Authorization"].encode())]}

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 65536
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    with Sandbox(clock=FakeClock(START)) as sb:
        asyncio.run(sb.app(scope, receive, send))
        assert sb.store.messages()[0] == 0
    assert (status, pulled) == (413, 0)
