"""The captured-mail JSON API (filters, pagination, delete) and the inbox pages."""

from __future__ import annotations

import pytest

from .helpers import API_KEY, AUTH, TestClient, bulk, email


@pytest.fixture
def filled(client: TestClient) -> TestClient:
    """Four emails, sent in this order: welcome, receipt (with cc), then a 2-recipient bulk."""
    client.post("/v1/mails/send", json=email(subject="Welcome Jane"), headers=AUTH)
    client.post(
        "/v1/mails/send",
        json=email(
            to={"email": "bob@example.com"},
            cc=[{"email": "Boss@Example.com"}],
            subject="Receipt 100% paid_{{n}}",
            dynamicData={"n": 7},
        ),
        headers=AUTH,
    )
    client.post("/v1/mails/bulk", json=bulk(subject="Newsletter"), headers=AUTH)
    return client


def subjects(client: TestClient, query: str = "") -> list[str]:
    body = client.get(f"/api/v1/messages{query}").json()
    return [m["renderedSubject"] for m in body["messages"]]


def test_messages_are_listed_newest_first_with_every_field(filled: TestClient) -> None:
    body = filled.get("/api/v1/messages").json()
    assert body["total"] == 4
    assert subjects(filled) == ["Newsletter", "Newsletter", "Receipt 100% paid_7", "Welcome Jane"]
    expected = {
        "id", "emailId", "batchId", "from", "to", "cc", "bcc", "subject", "html", "text",
        "renderedHtml", "renderedText", "dynamicData", "templateId", "test", "createdAt",
        "idempotencyKey", "request",
    }  # fmt: skip
    assert expected <= set(body["messages"][0])


def test_filter_by_recipient(filled: TestClient) -> None:
    assert subjects(filled, "?to=jane@example.com") == ["Welcome Jane"]
    # an address matches exactly and case-insensitively, cc and bcc included
    assert subjects(filled, "?to=boss@example.COM") == ["Receipt 100% paid_7"]
    assert subjects(filled, "?to=ss@example.com") == []
    # without an @ it is a substring
    assert len(subjects(filled, "?to=example")) == 4
    assert subjects(filled, "?to=bob") == ["Receipt 100% paid_7"]


def test_filter_by_subject_raw_or_rendered(filled: TestClient) -> None:
    assert subjects(filled, "?subject=welcome") == ["Welcome Jane"]
    assert subjects(filled, "?subject=paid_7") == ["Receipt 100% paid_7"]
    assert subjects(filled, "?subject={{n}}") == ["Receipt 100% paid_7"]
    # % and _ are literal characters, not LIKE wildcards
    assert subjects(filled, "?subject=100%25") == ["Receipt 100% paid_7"]
    assert subjects(filled, "?subject=W_lcome") == []
    assert subjects(filled, "?subject=nothing") == []


def test_filter_by_batch(filled: TestClient) -> None:
    batch = filled.get("/api/v1/messages?subject=Newsletter").json()["messages"][0]["batchId"]
    body = filled.get(f"/api/v1/messages?batchId={batch}").json()
    assert body["total"] == 2
    assert {m["to"]["email"] for m in body["messages"]} == {"a@example.com", "b@example.com"}


def test_pagination_with_total(filled: TestClient) -> None:
    page = filled.get("/api/v1/messages?limit=2&offset=1").json()
    assert page["total"] == 4
    assert (page["limit"], page["offset"]) == (2, 1)
    assert [m["renderedSubject"] for m in page["messages"]] == [
        "Newsletter",
        "Receipt 100% paid_7",
    ]
    assert filled.get("/api/v1/messages?offset=4").json()["messages"] == []
    filtered = filled.get("/api/v1/messages?subject=newsletter&limit=1").json()
    assert filtered["total"] == 2 and len(filtered["messages"]) == 1


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "limit=x",
        "offset=-1",
        "offset=a",
        # past what SQLite can bind: these were an OverflowError (500)
        "offset=99999999999999999999999",
        "offset=9223372036854775808",
        "limit=99999999999999999999999",
        "offset=" + "9" * 5000,
        # int() takes these, a query string should not
        "limit=1_0",
        "limit=%D9%A1",  # ARABIC-INDIC DIGIT ONE
    ],
)
def test_bad_pagination_is_a_400(client: TestClient, query: str) -> None:
    response = client.get(f"/api/v1/messages?{query}")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == query.split("=")[0]


def test_largest_offset_is_an_empty_page(client: TestClient) -> None:
    response = client.get(f"/api/v1/messages?offset={2**63 - 1}&limit=+5")
    assert response.status_code == 200
    page = response.json()
    assert (page["offset"], page["limit"], page["messages"]) == (2**63 - 1, 5, [])


@pytest.mark.parametrize(
    "query", ["to=%00", "to=a%40%FF", "subject=%ED%A0%80", "subject=%25_%5C", "batchId=%FF"]
)
def test_odd_filters_match_nothing_without_an_error(client: TestClient, query: str) -> None:
    response = client.get(f"/api/v1/messages?{query}")
    assert response.status_code == 200
    assert response.json()["total"] == 0


def test_get_one_message_and_404(filled: TestClient) -> None:
    first = filled.get("/api/v1/messages").json()["messages"][0]
    assert filled.get(f"/api/v1/messages/{first['id']}").json() == first
    missing = filled.get("/api/v1/messages/000000000000000000000000")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "NOT_FOUND"
    assert filled.get("/inbox/000000000000000000000000").status_code == 404


def test_delete_one_and_all(filled: TestClient) -> None:
    first = filled.get("/api/v1/messages").json()["messages"][0]["id"]
    assert filled.delete(f"/api/v1/messages/{first}", headers=AUTH).json() == {"success": True, "deleted": 1}
    assert filled.delete(f"/api/v1/messages/{first}", headers=AUTH).status_code == 404
    assert filled.get("/api/v1/messages").json()["total"] == 3

    assert filled.delete("/api/v1/messages", headers=AUTH).json() == {"success": True, "deleted": 3}
    assert filled.get("/api/v1/messages").json() == {
        "total": 0, "limit": 50, "offset": 0, "messages": [],
    }  # fmt: skip


def test_inbox_page_lists_and_links_each_email(filled: TestClient) -> None:
    messages = filled.get("/api/v1/messages").json()["messages"]
    for path in ("/", "/inbox"):
        page = filled.get(path)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        text = page.text
        for msg in messages:
            assert f'href="/inbox/{msg["id"]}"' in text
        assert text.index("Newsletter") < text.index("Receipt") < text.index("Welcome Jane")
        assert messages[0]["batchId"] in text
        assert "Jane Smith &lt;jane@example.com&gt;" in text


def test_empty_inbox_says_how_to_fill_it(client: TestClient) -> None:
    assert "No emails captured yet" in client.get("/").text


def test_detail_page_shows_headers_bodies_request_and_key(client: TestClient) -> None:
    body = email(
        cc=[{"email": "cc@example.com", "name": "Cee"}],
        bcc=[{"email": "bcc@example.com"}],
        replyTo={"email": "reply@company.com"},
        categories=["welcome", "onboarding"],
        text="Plain {{name}}",
        dynamicData={"name": "Jane"},
    )
    client.post("/v1/mails/send", json=body, headers={**AUTH, "Idempotency-Key": "idem-123"})
    msg = client.get("/api/v1/messages").json()["messages"][0]
    # The tabs split what one page used to show; together they show all of it.
    page = "".join(client.get(f"/inbox/{msg['id']}", params={"tab": tab}).text
                   for tab in ("html", "text", "source", "headers", "request"))

    for expected in (
        "Company &lt;hello@company.com&gt;",
        "Jane Smith &lt;jane@example.com&gt;",
        "Cee &lt;cc@example.com&gt;",
        "bcc@example.com",
        "reply@company.com",
        "welcome, onboarding",
        "Welcome!",
        "idem-123",
        msg["emailId"],
        "<pre>Plain Jane</pre>",
        "<iframe sandbox",
        "&quot;categories&quot;",  # the raw request, pretty-printed and escaped
    ):
        assert expected in page, expected


def test_api_key_never_appears_in_pages_or_json(client: TestClient) -> None:
    client.post("/v1/mails/send", json=email(), headers={**AUTH, "Idempotency-Key": "k1"})
    client.post("/v1/mails/bulk", json=bulk(), headers=AUTH)
    msg_id = client.get("/api/v1/messages").json()["messages"][0]["id"]
    responses = [
        client.get("/"),
        client.get(f"/inbox/{msg_id}"),
        client.get("/api/v1/messages"),
        client.get(f"/api/v1/messages/{msg_id}"),
        client.get("/api/v1/stats"),
        client.post("/v1/mails/send", json=email(), headers={**AUTH, "Idempotency-Key": "k1"}),
        client.post("/v1/mails/send", json=email(to=None), headers=AUTH),
    ]
    for response in responses:
        assert API_KEY not in response.text
        assert all(API_KEY not in value for value in response.headers.values())
    # what identifies the key is a short fingerprint, the same for both requests
    fps = {m["apiKeyFingerprint"] for m in client.get("/api/v1/messages").json()["messages"]}
    assert len(fps) == 1 and len(fps.pop()) == 16
