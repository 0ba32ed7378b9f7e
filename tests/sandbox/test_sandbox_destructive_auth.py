"""The destructive JSON endpoints take the key a send takes (the standards: auth on
anything destructive), as ``Authorization: Bearer`` only, like the emulator's
``/_emulator/reset``; the inbox page's own buttons keep working on their form token."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from celery_qstash.clock import FakeClock
from celery_qstash.local.sandbox import Sandbox

from .helpers import API_KEY, AUTH, TestClient, email

#: (method, path): every endpoint that deletes or changes what the sandbox holds or does.
DESTRUCTIVE = [
    ("DELETE", "/api/v1/messages"),
    ("DELETE", "/api/v1/messages/{id}"),
    ("POST", "/_sandbox/reset"),
    ("POST", "/api/v1/chaos"),
    ("DELETE", "/api/v1/chaos"),
]

NO_KEY = {
    "missing": {},
    "empty": {"Authorization": ""},
    "basic": {"Authorization": f"Basic {API_KEY}"},
    "no-key": {"Authorization": "Bearer "},
    "no-scheme": {"Authorization": API_KEY},
}


@pytest.fixture
def keyed(clock: FakeClock) -> Iterator[TestClient]:
    sandbox = Sandbox(clock=clock, api_keys=[API_KEY], rate_per_second=None,
                      rate_per_minute=None)
    with sandbox, TestClient(sandbox.app) as tc:
        yield tc


def _state(client: TestClient) -> tuple[int, int, list[str]]:
    """Emails held, chaos rules pending, ids: what a refused request must leave alone."""
    listing = client.get("/api/v1/messages").json()
    chaos = client.get("/api/v1/chaos").json()["remaining"]
    return listing["total"], chaos, [m["id"] for m in listing["messages"]]


def _call(client: TestClient, method: str, path: str, headers: dict[str, str],
          message_id: str, query: str = "") -> tuple[int, dict[str, object], str]:
    body = {"fail_next": 1} if path == "/api/v1/chaos" and method == "POST" else None
    response = client.request(method, path.format(id=message_id) + query, json=body,
                              headers=headers)
    return response.status_code, response.json(), response.headers.get("www-authenticate", "")


def _seed(client: TestClient) -> str:
    for _ in range(2):
        client.post("/v1/mails/send", json=email(), headers=AUTH).raise_for_status()
    client.post("/api/v1/chaos", json={"fail_next": 1, "status": None},
                headers=AUTH).raise_for_status()
    message_id: str = client.get("/api/v1/messages").json()["messages"][0]["id"]
    return message_id


@pytest.mark.parametrize(("method", "path"), DESTRUCTIVE)
@pytest.mark.parametrize("headers", list(NO_KEY.values()), ids=list(NO_KEY))
def test_without_a_bearer_key_it_is_401_and_changes_nothing(
    client: TestClient, method: str, path: str, headers: dict[str, str]
) -> None:
    message_id = _seed(client)
    before = _state(client)
    status, body, challenge = _call(client, method, path, headers, message_id)
    assert status == 401
    assert body["success"] is False
    assert body["error"]["code"] == "UNAUTHORIZED"  # type: ignore[index]
    assert "Authorization: Bearer" in body["message"]  # type: ignore[operator]
    assert challenge == "Bearer"
    assert _state(client) == before
    # A refused control call is not a mail request: the stats and Rejected view ignore it.
    assert client.get("/api/v1/stats").json()["rejected"] == {}
    assert client.get("/rejected").text.count("<tr") <= 1  # a header row at most


@pytest.mark.parametrize(("method", "path"), DESTRUCTIVE)
def test_the_key_in_the_query_string_does_not_count(
    client: TestClient, method: str, path: str
) -> None:
    message_id = _seed(client)
    before = _state(client)
    status, _, _ = _call(client, method, path, {}, message_id, f"?api_key={API_KEY}")
    assert status == 401
    assert _state(client) == before


@pytest.mark.parametrize(("method", "path"), DESTRUCTIVE)
def test_with_configured_keys_a_wrong_key_is_401_and_the_right_one_works(
    keyed: TestClient, method: str, path: str
) -> None:
    message_id = _seed(keyed)
    before = _state(keyed)
    wrong = {"Authorization": "Bearer AS_not_this_one"}
    assert _call(keyed, method, path, wrong, message_id)[0] == 401
    assert _state(keyed) == before
    status, _, _ = _call(keyed, method, path, AUTH, message_id)
    assert status == 200
    assert _state(keyed) != before


def test_the_right_key_does_what_each_endpoint_says(client: TestClient) -> None:
    message_id = _seed(client)
    assert client.delete(f"/api/v1/messages/{message_id}", headers=AUTH).json()["deleted"] == 1
    assert client.delete("/api/v1/chaos", headers=AUTH).json()["remaining"] == 0
    assert client.post("/api/v1/chaos", json={"fail_next": 2},
                       headers=AUTH).json()["remaining"] == 2
    assert client.delete("/api/v1/messages", headers=AUTH).json()["deleted"] == 1
    assert client.post("/_sandbox/reset", headers=AUTH).json() == {"success": True}
    assert _state(client) == (0, 0, [])


def _token(page: str) -> str:
    found = re.search(r'name="token" value="([^"]+)"', page)
    assert found, "the page carries its form token"
    return found.group(1)


def test_the_inbox_buttons_work_without_the_api_key(keyed: TestClient) -> None:
    message_id = _seed(keyed)
    token = _token(keyed.get("/inbox").text)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    deleted = keyed.post(f"/inbox/{message_id}/delete", content=f"token={token}",
                         headers=form, follow_redirects=False)
    assert deleted.status_code == 303
    assert _state(keyed)[0] == 1
    cleared = keyed.post("/inbox/clear", content=f"token={token}&confirm=yes", headers=form,
                         follow_redirects=False)
    assert cleared.status_code == 303
    assert _state(keyed)[0] == 0
    # and without the token they are still refused
    keyed.post("/v1/mails/send", json=email(), headers=AUTH).raise_for_status()
    assert keyed.post("/inbox/clear", content="token=nope&confirm=yes",
                      headers=form).status_code == 403
    assert _state(keyed)[0] == 1
