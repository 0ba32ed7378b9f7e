"""HTTP-level behaviour: auth, errors, query-string options, control plane."""

from __future__ import annotations

import httpx

from celery_qstash.devserver import DEV_TOKEN, DEV_USERS
from celery_qstash.local.emulator import EmulatorServer, parse_route, routes_from_env

from .conftest import Client, Target

OTHER_TOKEN = next(t for t, (user, _, _) in DEV_USERS.items() if user == "testUser1")


def test_missing_or_unknown_token_is_401_with_a_json_error(fake: Client) -> None:
    anonymous = httpx.get(f"{fake.server.url}/v2/events", trust_env=False)
    assert anonymous.status_code == 401 and "error" in anonymous.json()
    wrong = httpx.get(f"{fake.server.url}/v2/events", trust_env=False,
                      headers={"Authorization": "Bearer not-a-token"})
    assert wrong.status_code == 401
    assert "not-a-token" not in wrong.text
    by_query = httpx.get(f"{fake.server.url}/v2/events", params={"qstash_token": DEV_TOKEN},
                         trust_env=False)
    assert by_query.status_code == 200


def test_state_is_per_user(fake: Client, target: Target) -> None:
    message_id = fake.publish(f"{target.url}/x", upstash_delay="1h").json()["messageId"]
    other = httpx.Client(base_url=fake.server.url, trust_env=False,
                         headers={"Authorization": f"Bearer {OTHER_TOKEN}"})
    assert other.get(f"/v2/messages/{message_id}").status_code == 404
    assert other.get("/v2/events").json()["events"] == []
    assert other.get("/v2/keys").json()["current"] == DEV_USERS[OTHER_TOKEN][1]


def test_extra_tokens_get_their_own_generated_keys(target: Target) -> None:
    with EmulatorServer(tokens=["my-secret-token"], start_delivery=False) as server:
        keys = httpx.get(f"{server.url}/v2/keys", trust_env=False,
                         headers={"Authorization": "Bearer my-secret-token"}).json()
        assert keys["current"].startswith("sig_") and keys["current"] != keys["next"]
        dev = httpx.get(f"{server.url}/v2/keys", trust_env=False,
                        headers={"Authorization": f"Bearer {DEV_TOKEN}"}).json()
        assert dev["current"] != keys["current"]


def test_bad_headers_are_400_naming_the_header(fake: Client, target: Target) -> None:
    cases = {
        "Upstash-Retries": "many",
        "Upstash-Delay": "tomorrow",
        "Upstash-Retry-Delay": "__import__('os').system('true')",
        "Upstash-Method": "BREW",
        "Upstash-Timeout": "5 parsecs",
        "Upstash-Not-Before": "soon",
        "Upstash-Redact-Fields": "password",
        "Upstash-Content-Based-Deduplication": "maybe",
    }
    for header, value in cases.items():
        response = fake.http.post(f"/v2/publish/{target.url}/x", headers={header: value})
        assert response.status_code == 400, header
        assert header in response.json()["error"], header
    bad_url = fake.http.post("/v2/publish/ftp://example.com/x")
    assert bad_url.status_code == 400 and "scheme" in bad_url.json()["error"]
    assert fake.emulator.store.pending_count() == 0


def test_upstash_options_in_the_query_string_are_stripped_from_the_destination(
    fake: Client, target: Target
) -> None:
    response = fake.http.post(
        f"/v2/publish/{target.url}/q?keep=1&upstash-retries=0&upstash-delay=5s&also=2"
    )
    message = fake.http.get(f"/v2/messages/{response.json()['messageId']}").json()
    assert message["url"] == f"{target.url}/q?keep=1&also=2"
    assert message["maxRetries"] == 0
    assert message["notBefore"] - message["createdAt"] == 5000


def test_batch_accepts_nulls_and_isolates_errors(fake: Client, target: Target) -> None:
    response = fake.http.post("/v2/batch", json=[
        {"destination": f"{target.url}/ok", "headers": None, "body": None, "queue": None},
        {"destination": f"{target.url}/bad", "headers": {"Upstash-Retries": "x"}},
        {"destination": f"{target.url}/ok2", "body": "b"},
    ])
    first, second, third = response.json()
    assert first["messageId"].startswith("msg_") and third["messageId"].startswith("msg_")
    assert "Upstash-Retries" in second["error"]


def test_unknown_routes_and_objects_are_json_404(fake: Client) -> None:
    assert fake.http.get("/v2/nothing").json()["error"]
    assert fake.http.get("/v2/messages/msg_missing").status_code == 404
    assert fake.http.get("/v2/dlq/1-0").status_code == 404
    assert fake.http.get("/v2/queues/none").status_code == 404
    assert fake.http.get("/v2/schedules/none").status_code == 404
    assert fake.http.get("/v2/topics/none").status_code == 404


def test_control_plane(fake: Client, target: Target) -> None:
    fake.publish(f"{target.url}/c", upstash_delay="10s")
    base = fake.server.url
    assert httpx.get(f"{base}/_emulator/health", trust_env=False).json()["pending"] == 1
    assert httpx.post(f"{base}/_emulator/tick", trust_env=False).json() == {"attempts": 0}
    advanced = fake.http.post("/_emulator/clock/advance", params={"seconds": 10})
    assert advanced.status_code == 200
    assert httpx.post(f"{base}/_emulator/tick", trust_env=False).json() == {"attempts": 1}
    assert fake.http.post("/_emulator/reset").json() == {"reset": True}
    assert fake.events() == []


def test_route_parsing() -> None:
    assert parse_route("https://api.autosend.com=http://127.0.0.1:8025") == (
        "https://api.autosend.com", "http://127.0.0.1:8025")
    env = {"CELERY_QSTASH_ROUTES": "https://a.example=http://127.0.0.1:1, "
                                   "https://b.example/x=http://127.0.0.1:2/y"}
    assert routes_from_env(env) == {"https://a.example": "http://127.0.0.1:1",
                                    "https://b.example/x": "http://127.0.0.1:2/y"}
    assert routes_from_env({}) == {}
    try:
        parse_route("nonsense")
    except ValueError:
        pass
    else:
        raise AssertionError("expected ValueError")
