"""Malformed requests never get a 500 from the sandbox (issue 8, item 5): deeply
nested JSON on every JSON route, bad JSON and wrong types, bad query values, bad
paths and methods in-process, and huge headers and garbage over real HTTP."""

from __future__ import annotations

import pytest
from emulator.test_fuzz import BAD_BODIES, DEEP, assert_garbage_is_never_a_500

from celery_qstash.clock import FakeClock
from celery_qstash.local.sandbox import Sandbox, SandboxServer

from .helpers import AUTH, START, TestClient, email

JSON_ROUTES = ["/v1/mails/send", "/v1/mails/bulk", "/api/v1/chaos"]
JSON = {**AUTH, "Content-Type": "application/json"}


@pytest.fixture
def loose(sandbox: Sandbox) -> TestClient:
    return TestClient(sandbox.app, raise_server_exceptions=False)


@pytest.mark.parametrize("path", JSON_ROUTES)
@pytest.mark.parametrize("body", DEEP, ids=["array", "object", "in-a-field", "depth-65"])
def test_deeply_nested_json_is_a_400_on_every_json_route(loose: TestClient, path: str,
                                                          body: bytes) -> None:
    response = loose.post(path, content=body, headers=JSON)
    assert response.status_code == 400, response.text[:300]
    assert response.json()["errors"][0]["field"] == "body"


WRONG_TYPES = [
    email(to="x"), email(to=[]), email(to={"email": 5}), email(subject=5), email(html=[1]),
    email(dynamicData=[1]), email(dynamicData={"a": {"b": [1, {"c": None}]}}),
    email(attachments="x"), email(attachments=[1]), email(attachments=[{"fileName": 5}]),
    email(attachments=[{"fileName": "a", "content": "not base64!"}]),
    email(cc=[{"email": "a@example.com"}] * 60), email(scheduledAt="tomorrow"),
    email(test="yes"), email(replyTo=[]), email(categories={"a": 1}),
    {"recipients": "x"}, {"recipients": [None]}, {"recipients": [{"email": "a@b.c"}] * 101},
    {"fail_next": "x"}, {"fail_next": 10**30}, {"delay_ms": -1},
    {"body": [[[[]]]]}, {"retry_after": True},
]


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_bad_json_and_wrong_types_are_never_a_500(loose: TestClient, path: str) -> None:
    for raw in [*BAD_BODIES, b'{"status": 1e400}', b'{"dynamicData": {"a": -1e999}}']:
        response = loose.post(path, content=raw, headers={**JSON, **AUTH})
        assert response.status_code < 500, (raw, response.text[:200])
    for body in WRONG_TYPES:
        response = loose.post(path, json=body, headers=AUTH)
        assert response.status_code < 500, (body, response.text[:200])
    loose.delete("/api/v1/chaos", headers=AUTH)


BAD_QUERIES = ["limit=-1", "limit=x", "limit=" + "9" * 40, "offset=-1", "offset=1e3",
               "offset=" + "9" * 40, "to=%00%ff", "subject=" + "s" * 5000, "batchId=%ff",
               "limit=\u0661"]


def test_bad_query_values_are_never_a_500(loose: TestClient) -> None:
    for query in BAD_QUERIES:
        for path in ("/api/v1/messages", "/", "/inbox", "/api/v1/stats"):
            response = loose.get(f"{path}?{query}")
            assert response.status_code < 500, (path, query, response.text[:200])


BAD_PATHS = ["/api/v1/messages/%ff", "/api/v1/messages/" + "m" * 3000, "/inbox/%00",
             "/v1/mails", "/v1/mails/send/x", "/_sandbox/nope", "/api/v1/chaos/x"]


def test_bad_paths_and_methods_are_never_a_500(loose: TestClient) -> None:
    for path in BAD_PATHS + JSON_ROUTES + ["/", "/_sandbox/reset", "/api/v1/messages"]:
        for method in ("GET", "PUT", "PATCH", "OPTIONS", "HEAD", "TRACE"):
            response = loose.request(method, path, headers=AUTH)
            assert response.status_code < 500, (method, path)
    for method in ("POST", "DELETE"):
        for path in BAD_PATHS:
            assert loose.request(method, path, headers=AUTH).status_code < 500


def test_huge_headers_and_garbage_over_real_http_are_never_a_500() -> None:
    with SandboxServer(clock=FakeClock(START)) as server:
        assert_garbage_is_never_a_500(server.url)
        assert server.sandbox.store.messages()[0] == 0
