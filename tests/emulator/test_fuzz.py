"""Malformed requests never get a 500 from the emulator (issue 8, items 4 and 5).

Every JSON endpoint answers deeply nested JSON with a 400 (it used to be a 500 with
a ``RecursionError`` on six of them), and a battery of bad JSON, wrong types, bad
query values, bad headers, bad paths and bad methods gets a 4xx, in-process and
over real HTTP (where the HTTP server's own limits on huge headers apply).
"""

from __future__ import annotations

import socket
import warnings
from collections.abc import Iterator

import httpx
import pytest

from celery_qstash.clock import FakeClock
from celery_qstash.local.emulator import Emulator

from .conftest import AUTH, START, Client

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

#: Every route that parses a JSON body.
JSON_ROUTES = [
    ("POST", "/v2/batch"),
    ("DELETE", "/v2/messages"),
    ("DELETE", "/v2/dlq"),
    ("POST", "/v2/dlq/retry"),
    ("POST", "/v2/queues"),
    ("POST", "/v2/topics/group/endpoints"),
    ("DELETE", "/v2/topics/group/endpoints"),
]
DEEP = [b"[" * 100_000, b'{"a":' * 100_000, b'{"queueName": ' + b"[" * 50_000,
        b"[" * 65 + b"]" * 65]


@pytest.fixture
def app_client() -> Iterator[TestClient]:
    emulator = Emulator(clock=FakeClock(START))
    with TestClient(emulator.app, raise_server_exceptions=False, headers=AUTH) as client:
        yield client
    emulator.close()


def _no_500(response: httpx.Response, what: object) -> None:
    assert response.status_code < 500, (what, response.status_code, response.text[:300])


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
@pytest.mark.parametrize("body", DEEP, ids=["array", "object", "in-a-field", "depth-65"])
def test_deeply_nested_json_is_a_400_on_every_json_route(
        app_client: TestClient, method: str, path: str, body: bytes) -> None:
    response = app_client.request(method, path, content=body,
                                  headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text[:300]
    assert "invalid JSON body" in response.json()["error"]


BAD_BODIES: list[bytes] = [
    b"{", b"[1,]", b"\xff\xfe", b"NaN", b'{"a": Infinity}', b"null", b"123", b'"text"',
    b"[]", b"{}", b'{"queueName": 5}', b'{"queueName": "q", "parallelism": "x"}',
    b'{"queueName": "q", "parallelism": 1e400}', b'{"queueName": "q", "parallelism": true}',
    b'{"endpoints": "x"}', b'{"endpoints": [1, null, "x"]}', b'{"endpoints": [{"url": 5}]}',
    b'{"messageIds": [null]}', b'{"messageIds": "x"}', b'{"dlqIds": {}}', b'{"dlqIds": [[1]]}',
    b'[1, "x", null, {"destination": 5}, {"destination": "http://127.0.0.1:1/x", '
    b'"headers": []}, {"destination": "http://127.0.0.1:1/x", "body": 5}, '
    b'{"destination": "http://127.0.0.1:1/x", "queue": 5}, {"destination": ""}, '
    b'{"destination": "http://127.0.0.1:1/x", "headers": {"Upstash-Delay": "forever"}}]',
]


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
def test_bad_json_and_wrong_types_are_never_a_500(app_client: TestClient, method: str,
                                                  path: str) -> None:
    for body in BAD_BODIES:
        response = app_client.request(method, path, content=body,
                                      headers={"Content-Type": "application/json"})
        _no_500(response, body)


BAD_QUERIES = [
    "count=-1", "count=abc", "count=" + "9" * 40, "count=1e3", "fromDate=x", "toDate=-5",
    "fromDate=" + "9" * 30, "cursor=%00%ff", "cursor=" + "9" * 200, "state=NOPE",
    "responseStatus=x", "responseStatus=-1", "messageIds=" + ",".join(["x"] * 500),
    "label=%ff", "queueName=" + "q" * 5000, "search=%00",
]


@pytest.mark.parametrize("path", ["/v2/events", "/v2/logs", "/v2/dlq", "/v2/messages",
                                  "/v2/flowControl", "/v2/schedules", "/v2/queues"])
def test_bad_query_values_are_never_a_500(app_client: TestClient, path: str) -> None:
    for query in BAD_QUERIES:
        for method in ("GET", "DELETE"):
            _no_500(app_client.request(method, f"{path}?{query}"), (method, query))


BAD_HEADERS: list[dict[str, str]] = [
    {"Upstash-Delay": "9" * 5000 + "s"}, {"Upstash-Delay": "-1s"}, {"Upstash-Delay": "1y"},
    {"Upstash-Retries": "9" * 40}, {"Upstash-Retries": "-1"}, {"Upstash-Timeout": "x"},
    {"Upstash-Not-Before": "abc"}, {"Upstash-Not-Before": "9" * 40},
    {"Upstash-Method": "NOT A METHOD"}, {"Upstash-Callback": "javascript:alert(1)"},
    {"Upstash-Retry-Delay": "pow(2, retried" * 50}, {"Upstash-Flow-Control-Key": "k",
                                                      "Upstash-Flow-Control-Value": "rate=x"},
    {"Upstash-Deduplication-Id": "d" * 10_000}, {"Upstash-Label": "\u00e9" * 300},
    {"Upstash-Redact-Fields": "body,header[" * 100}, {"Upstash-Forward-X": "v" * 100_000},
    {"Content-Type": "\u00e9/\u00e9"}, {"Upstash-Cron": "* * *"},
]


@pytest.mark.parametrize("prefix", ["/v2/publish/", "/v2/enqueue/q/", "/v2/schedules/"])
def test_bad_publish_headers_are_never_a_500(app_client: TestClient, prefix: str) -> None:
    for headers in BAD_HEADERS:
        raw = [(k.encode("utf-8"), v.encode("utf-8")) for k, v in headers.items()]
        response = app_client.post(f"{prefix}http://127.0.0.1:1/x", content=b"{}",
                                   headers=raw)  # type: ignore[arg-type]
        _no_500(response, headers)


BAD_PATHS = [
    "/v2/publish/", "/v2/publish/not-a-url", "/v2/publish/http://", "/v2/publish/%ff%fe",
    "/v2/messages/%ff", "/v2/dlq/%00", "/v2/queues/" + "q" * 3000, "/v2/schedules/x/pause",
    "/v2/flowControl/%ff/pin?rate=x&period=forever", "/v2/flowControl/k/pin?parallelism=-1",
    "/v2/flowControl/k/nope", "/v2/topics/%20/endpoints", "/v2/dlq/retry/%ff", "/v2/nope",
    "/_emulator/nope", "/_emulator/clock/advance?seconds=1e999",
]


def test_bad_paths_and_methods_are_never_a_500(app_client: TestClient) -> None:
    for path in BAD_PATHS:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE"):
            _no_500(app_client.request(method, path), (method, path))


def raw_status(base_url: str, request: bytes) -> int | None:
    """Send raw bytes to a live server: the status line's code, or None if it hung up."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        try:
            sock.sendall(request)
            head = sock.recv(64)
        except (ConnectionResetError, BrokenPipeError):
            return None  # refused without an answer: not a 500 either
    if not head:
        return None
    return int(head.split(b" ", 2)[1])


GARBAGE = [
    b"GET /v2/events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: " + b"h" * 200_000 + b"\r\n\r\n",
    b"GET /v2/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    + b"".join(b"X-H%d: v\r\n" % i for i in range(2000)) + b"\r\n",
    b"POST /v2/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: x\r\n\r\n",
    b"POST /v2/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n",
    b"POST /v2/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"BREW /v2/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET /v2/\xff\xfe HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"NOT HTTP AT ALL\r\n\r\n",
]


def assert_garbage_is_never_a_500(base_url: str) -> None:
    for request in GARBAGE:
        status = raw_status(base_url, request)
        assert status is None or status < 500, (request[:60], status)


def test_over_real_http_huge_headers_and_garbage_are_never_a_500(fake: Client) -> None:
    assert_garbage_is_never_a_500(fake.server.url)
    long_query = httpx.get(f"{fake.server.url}/v2/events?label=" + "l" * 60_000,
                           headers=AUTH, trust_env=False)
    assert long_query.status_code < 500
    assert fake.emulator.store.pending_count() == 0
