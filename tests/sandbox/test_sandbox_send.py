"""POST /v1/mails/send and /v1/mails/bulk: success shapes and what gets captured."""

from __future__ import annotations

import re
import uuid

from celery_qstash.clock import FakeClock
from celery_qstash.local.sandbox import Sandbox, create_app

from .helpers import AUTH, TestClient, bulk, email

OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")


def test_send_answers_both_documented_success_shapes(client: TestClient) -> None:
    # Given a valid single email with a cc and a bcc
    body = email(cc=[{"email": "c@example.com"}], bcc=[{"email": "d@example.com"}])

    # When it is sent
    response = client.post("/v1/mails/send", json=body, headers=AUTH)

    # Then AutoSend's success JSON comes back, legacy and current keys together
    assert response.status_code == 200
    payload = response.json()
    assert payload["success"] is True
    assert payload["message"] == "Email queued successfully"
    data = payload["data"]
    assert OBJECT_ID.match(data["emailId"])
    assert data["message"] == "Email queued successfully."
    assert data["status"] == "queued"
    assert data["queuedAt"] == "2027-01-15T08:00:00.000Z"  # FakeClock(1_800_000_000)
    assert data["totalRecipients"] == 3


def test_send_captures_one_message_with_normalised_fields(client: TestClient) -> None:
    body = email(
        replyTo={"email": "support@company.com"},
        categories=["welcome"],
        text="plain",
        campaignName="launch",
    )
    email_id = client.post("/v1/mails/send", json=body, headers=AUTH).json()["data"]["emailId"]

    listing = client.get("/api/v1/messages").json()
    assert listing["total"] == 1
    msg = listing["messages"][0]
    assert msg["id"] == msg["emailId"] == email_id
    assert msg["batchId"] is None
    assert msg["from"] == {"email": "hello@company.com", "name": "Company"}
    assert msg["to"] == {"email": "jane@example.com", "name": "Jane Smith"}
    assert msg["cc"] == [] and msg["bcc"] == []
    assert msg["replyTo"] == {"email": "support@company.com", "name": None}
    assert msg["subject"] == "Welcome!"
    assert msg["html"] == "<h1>Welcome</h1>"
    assert msg["text"] == "plain"
    assert msg["categories"] == ["welcome"]
    assert msg["campaignName"] == "launch"
    assert msg["test"] is False
    assert msg["createdAt"] == "2027-01-15T08:00:00.000Z"
    assert msg["request"] == body  # the JSON exactly as received


def test_bulk_answers_batch_shape_and_stores_one_message_per_recipient(
    client: TestClient,
) -> None:
    response = client.post("/v1/mails/bulk", json=bulk(), headers=AUTH)

    assert response.status_code == 200
    payload = response.json()
    assert payload["success"] is True
    data = payload["data"]
    assert uuid.UUID(data["batchId"]).version == 4
    assert data["totalRecipients"] == 2
    assert data["successCount"] == 2
    assert data["failedCount"] == 0
    assert len(data["emailIds"]) == 2 and len(set(data["emailIds"])) == 2
    assert all(OBJECT_ID.match(i) for i in data["emailIds"])

    messages = client.get("/api/v1/messages").json()["messages"]
    assert {m["to"]["email"] for m in messages} == {"a@example.com", "b@example.com"}
    assert {m["batchId"] for m in messages} == {data["batchId"]}
    assert {m["emailId"] for m in messages} == set(data["emailIds"])
    assert {m["endpoint"] for m in messages} == {"/v1/mails/bulk"}


def test_test_flag_is_accepted_stored_and_badged(client: TestClient) -> None:
    client.post("/v1/mails/send", json=email(subject="plain one"), headers=AUTH)
    response = client.post("/v1/mails/send", json=email(test=True), headers=AUTH)
    assert response.status_code == 200

    messages = client.get("/api/v1/messages").json()["messages"]
    assert [m["test"] for m in messages] == [True, False]  # newest first
    page = client.get("/").text
    assert page.count('<span class="badge">test</span>') == 1
    detail = client.get(f"/inbox/{messages[0]['id']}").text
    assert '<span class="badge">test</span>' in detail


def test_template_email_needs_no_subject_or_body(client: TestClient) -> None:
    body = email(subject=None, html=None, templateId="tmpl_abc123", dynamicData={"x": 1})
    assert client.post("/v1/mails/send", json=body, headers=AUTH).status_code == 200
    msg = client.get("/api/v1/messages").json()["messages"][0]
    assert msg["templateId"] == "tmpl_abc123"
    assert msg["renderedHtml"] is None
    assert "does not have" in client.get(f"/inbox/{msg['id']}").text


def test_create_app_exposes_its_sandbox() -> None:
    app = create_app(clock=FakeClock())
    sandbox = app.state.sandbox
    assert isinstance(sandbox, Sandbox)
    with TestClient(app) as tc:
        assert tc.post("/v1/mails/send", json=email(), headers=AUTH).status_code == 200
    assert sandbox.store.stats()["emails"] == 1
    sandbox.close()


def test_unknown_api_route_and_wrong_method_answer_json(client: TestClient) -> None:
    missing = client.post("/v1/mails/nope", json=email(), headers=AUTH)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "NOT_FOUND"
    wrong = client.get("/v1/mails/send", headers=AUTH)
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert wrong.headers["allow"] == "POST"


def test_stats_count_received_accepted_and_rejected(client: TestClient) -> None:
    client.post("/v1/mails/send", json=email(), headers=AUTH)
    client.post("/v1/mails/send", json=email(to={"email": "nope"}), headers=AUTH)
    client.post("/v1/mails/send", json=email())
    stats = client.get("/api/v1/stats").json()
    assert stats == {
        "received": 3,
        "accepted": 1,
        "replayed": 0,
        "rejected": {"400": 1, "401": 1},
        "emails": 1,
    }


def test_reset_forgets_everything(client: TestClient, sandbox: Sandbox) -> None:
    client.post("/v1/mails/send", json=email(), headers={**AUTH, "Idempotency-Key": "k"})
    client.post("/api/v1/chaos", json={"fail_next": 3}, headers=AUTH)

    assert client.post("/_sandbox/reset", headers=AUTH).json() == {"success": True}

    assert client.get("/api/v1/messages").json()["total"] == 0
    assert client.get("/api/v1/chaos").json()["remaining"] == 0
    assert client.get("/api/v1/stats").json()["received"] == 0
    # the idempotency record is gone too: the same key now makes a new email
    again = client.post("/v1/mails/send", json=email(), headers={**AUTH, "Idempotency-Key": "k"})
    assert "idempotent-replayed" not in again.headers
    assert sandbox.store.stats()["emails"] == 1
