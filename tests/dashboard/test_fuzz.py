"""Malformed requests never get a 500 from the dashboard (issue 8, items 4 and 5):
bad query values on every page and API route, bad paths and methods, bodies where
none belong (413 over 64 KB), and huge headers and garbage over real HTTP."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
from emulator.test_fuzz import DEEP, assert_garbage_is_never_a_500

from celery_qstash.clock import FakeClock
from celery_qstash.local.dashboard import MAX_BODY, create_app
from celery_qstash.local.serving import ThreadedServer

from .conftest import Stack

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

GET_ROUTES = ["/", "/tasks", "/tasks/x", "/task/x", "/dlq", "/queues", "/healthcheck",
              "/api/tasks", "/api/task/types", "/api/task/info/x", "/api/task/result/x",
              "/api/queues/length", "/api/dlq"]
POST_ROUTES = ["/tasks/x/revoke", "/dlq/1-0/retry", "/dlq/1-0/delete", "/api/task/revoke/x",
               "/api/dlq/retry/1-0", "/api/dlq/delete/1-0"]
BAD_QUERIES = [
    "limit=-1", "limit=x", "limit=" + "9" * 40, "offset=x", "offset=-5", "offset=" + "9" * 40,
    "sort_by=%00", "state=%ff", "state=" + ",".join(["X"] * 300), "taskname=%00",
    "received_start=yesterday", "received_end=2024-13-45 99:99", "search=name:%ff state:",
    "search=" + "s" * 5000, "timeout=-1", "timeout=x", "timeout=inf", "timeout=1e999",
    "timeout=nan", "count=x", "count=-1", "count=" + "9" * 40, "cursor=%00", "page=x",
    "page=-1", "page=" + "9" * 40, "per_page=0", "per_page=" + "9" * 40, "refresh=x",
    "since=forever", "since=" + "9" * 40 + "h", "since=-2h", "revoked=1&error=%ff",
]


@pytest.fixture
def loose(stack: Stack) -> Iterator[TestClient]:
    # No result request may wait (timeout=1e999 would otherwise wait its 60 s cap):
    # each answers the current state at once, as past the cap.
    app = create_app(stack.status, clock=FakeClock(), max_result_waits=0)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_bad_query_values_are_never_a_500(loose: TestClient) -> None:
    for path in GET_ROUTES:
        for query in BAD_QUERIES:
            response = loose.get(f"{path}?{query}", follow_redirects=False)
            assert response.status_code < 500, (path, query, response.text[:300])


def test_bad_paths_and_methods_are_never_a_500(loose: TestClient) -> None:
    odd = ["/tasks/%ff", "/tasks/" + "t" * 3000, "/api/task/info/%00", "/dlq/%ff/retry",
           "/api/dlq/delete/" + "d" * 3000, "/nope", "/api/nope"]
    for path in GET_ROUTES + POST_ROUTES + odd:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE"):
            response = loose.request(method, path, follow_redirects=False)
            assert response.status_code < 500, (method, path, response.status_code)


@pytest.mark.parametrize("path", POST_ROUTES)
def test_bodies_where_none_belong_are_never_a_500(loose: TestClient, path: str) -> None:
    for body in [*DEEP, b"\xff" * 100, b"a=1&" * 1000]:
        response = loose.post(path, content=body, follow_redirects=False,
                              headers={"Content-Type": "application/json"})
        assert response.status_code < 500, (path, body[:20])
    too_big = loose.post(path, content=b"x" * (MAX_BODY + 1), follow_redirects=False)
    assert too_big.status_code == 413


def test_huge_headers_and_garbage_over_real_http_are_never_a_500(stack: Stack) -> None:
    with ThreadedServer(create_app(stack.status, clock=FakeClock())) as server:
        assert_garbage_is_never_a_500(server.url)
