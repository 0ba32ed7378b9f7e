"""401: the Authorization header, and an optional list of accepted keys."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from celery_qstash.clock import FakeClock
from celery_qstash.local.sandbox import Sandbox

from .helpers import API_KEY, AUTH, TestClient, email

UNAUTHORIZED = {
    "success": False,
    "message": "Unauthorized",
    "error": {"message": "Unauthorized", "code": "UNAUTHORIZED"},
}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": f"Basic {API_KEY}"},
        {"Authorization": f"Token {API_KEY}"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer    "},
        {"Authorization": API_KEY},
    ],
    ids=["missing", "empty", "basic", "token", "no-key", "blank-key", "no-scheme"],
)
def test_missing_or_malformed_authorization_is_401(
    client: TestClient, headers: dict[str, str]
) -> None:
    for path in ("/v1/mails/send", "/v1/mails/bulk"):
        response = client.post(path, json=email(), headers=headers)
        assert response.status_code == 401
        assert response.json() == UNAUTHORIZED
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/v1/messages").json()["total"] == 0


def test_any_bearer_key_is_accepted_by_default(client: TestClient) -> None:
    for key in ("AS_anything", "whatever", API_KEY):
        response = client.post(
            "/v1/mails/send", json=email(), headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 200
    # the scheme is case-insensitive, as RFC 7235 says
    lower = client.post("/v1/mails/send", json=email(), headers={"Authorization": "bearer k"})
    assert lower.status_code == 200


@pytest.fixture
def keyed_client(clock: FakeClock) -> Iterator[TestClient]:
    sandbox = Sandbox(clock=clock, api_keys=[API_KEY, "AS_second"], rate_per_second=None)
    with sandbox, TestClient(sandbox.app) as tc:
        yield tc


def test_configured_keys_are_the_only_ones_accepted(keyed_client: TestClient) -> None:
    assert keyed_client.post("/v1/mails/send", json=email(), headers=AUTH).status_code == 200
    second = {"Authorization": "Bearer AS_second"}
    assert keyed_client.post("/v1/mails/send", json=email(), headers=second).status_code == 200

    for key in ("AS_other", API_KEY + "x", API_KEY[:-1]):
        response = keyed_client.post(
            "/v1/mails/send", json=email(), headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 401
        assert response.json() == UNAUTHORIZED
    assert keyed_client.get("/api/v1/messages").json()["total"] == 2


def test_auth_failure_is_checked_before_the_body(client: TestClient) -> None:
    # an unauthenticated caller learns nothing about validation
    response = client.post("/v1/mails/send", content=b"{", headers={})
    assert response.status_code == 401
