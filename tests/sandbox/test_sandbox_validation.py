"""400 responses: malformed requests and every validation rule, with AutoSend's field names."""

from __future__ import annotations

import json
from typing import Any

import pytest

from celery_qstash.local.sandbox.api import MAX_JSON_DEPTH

from .helpers import AUTH, TestClient, bulk, email


def assert_validation_failed(response: Any) -> list[dict[str, str]]:
    """Both documented 400 shapes, and the same list in each; returns the list."""
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["success"] is False
    assert body["message"] == "Validation failed"
    assert body["error"]["message"] == "Validation failed"
    assert body["error"]["code"] == "VALIDATION_FAILED"
    assert body["errors"] == body["error"]["details"]
    assert body["errors"], "at least one field error"
    return list(body["errors"])


def fields(errors: list[dict[str, str]]) -> set[str]:
    return {e["field"] for e in errors}


@pytest.mark.parametrize(
    ("body", "field", "message_part"),
    [
        (email(to=None), "to", "required"),
        (email(**{"from": None}), "from", "required"),
        (email(to={"email": "not-an-address"}), "to.email", "invalid email"),
        (email(**{"from": {"email": "x@"}}), "from.email", "invalid email"),
        (
            email(to=[{"email": "a@example.com"}, {"email": "b@example.com"}]),
            "to",
            "must be an object",
        ),
        (email(subject=None), "subject", "required unless template"),
        (email(html=None), "html", "html or text"),
        (email(subject="x" * 999), "subject", "998"),
        (email(subject="a\r\nBcc: evil@example.com"), "subject", "CR or LF"),
        (
            email(cc=[{"email": f"c{i}@example.com"} for i in range(50)]),
            "cc",
            "at most 50",
        ),
        (email(bcc=[{"email": "ok@example.com"}, {"email": "bad"}]), "bcc.1.email", "invalid"),
        (email(unknownField=1), "unknownField", "not a field"),
        (email(test="maybe"), "test", "boolean"),
        (email(subject=5), "subject", "string"),
        (email(dynamicData=[1, 2]), "dynamicData", "must be an object"),
        (email(scheduledAt="next tuesday"), "scheduledAt", "datetime"),
    ],
)
def test_send_validation_errors_name_the_field(
    client: TestClient, body: dict[str, Any], field: str, message_part: str
) -> None:
    errors = assert_validation_failed(client.post("/v1/mails/send", json=body, headers=AUTH))
    matching = [e for e in errors if e["field"] == field]
    assert matching, errors
    assert message_part.lower() in matching[0]["message"].lower()
    assert client.get("/api/v1/messages").json()["total"] == 0


@pytest.mark.parametrize(
    ("body", "field", "message_part"),
    [
        (bulk(recipients=[]), "recipients", "at least 1"),
        (bulk(recipients=[{"email": "a@example.com"}] * 101), "recipients", "at most 100"),
        (
            bulk(recipients=[{"email": f"r{i}@example.com"} for i in range(3)] + [{"email": "x"}]),
            "recipients.3.email",
            "invalid email",
        ),
        (bulk(recipients=None), "recipients", "required"),
        (bulk(to={"email": "a@example.com"}), "to", "not a field"),
        (
            bulk(recipients=[{"email": "a@example.com", "dynamicData": "x"}]),
            "recipients.0.dynamicData",
            "dictionary",
        ),
    ],
)
def test_bulk_validation_errors_name_the_field(
    client: TestClient, body: dict[str, Any], field: str, message_part: str
) -> None:
    errors = assert_validation_failed(client.post("/v1/mails/bulk", json=body, headers=AUTH))
    matching = [e for e in errors if e["field"] == field]
    assert matching, errors
    assert message_part.lower() in matching[0]["message"].lower()
    assert client.get("/api/v1/messages").json()["total"] == 0


def test_several_errors_are_all_reported(client: TestClient) -> None:
    body = email(to={"email": "bad"}, **{"from": None})
    errors = assert_validation_failed(client.post("/v1/mails/send", json=body, headers=AUTH))
    assert {"to.email", "from"} <= fields(errors)


@pytest.mark.parametrize(
    "raw",
    [b"{", b"", b"{'single': 'quotes'}", b'{"to": NaN}', b"\xff\xfe not utf-8"],
)
def test_malformed_json_is_a_400_on_body(client: TestClient, raw: bytes) -> None:
    headers = {**AUTH, "Content-Type": "application/json"}
    errors = assert_validation_failed(client.post("/v1/mails/send", content=raw, headers=headers))
    assert fields(errors) == {"body"}
    assert "json" in errors[0]["message"].lower()


@pytest.mark.parametrize("body", [b"[]", b'"a string"', b"null"])
def test_json_that_is_not_an_object_is_a_400_on_body(client: TestClient, body: bytes) -> None:
    headers = {**AUTH, "Content-Type": "application/json"}
    errors = assert_validation_failed(client.post("/v1/mails/send", content=body, headers=headers))
    assert fields(errors) == {"body"}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_a_400(client: TestClient, content_type: str | None) -> None:
    headers = dict(AUTH)
    if content_type:
        headers["Content-Type"] = content_type
    response = client.post("/v1/mails/send", content=json.dumps(email()), headers=headers)
    errors = assert_validation_failed(response)
    assert fields(errors) == {"Content-Type"}


def test_json_content_type_with_charset_is_fine(client: TestClient) -> None:
    headers = {**AUTH, "Content-Type": "application/json; charset=utf-8"}
    response = client.post("/v1/mails/send", content=json.dumps(email()), headers=headers)
    assert response.status_code == 200


# -- AutoSend's wire shapes: the models' friendlier input is not what AutoSend takes --


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (email(to="Ada <ada@example.com>"), "to"),
        (email(to="ada@example.com"), "to"),
        (email(to=[{"email": "ada@example.com"}]), "to"),
        (email(cc={"email": "c@example.com"}), "cc"),
        (email(cc=["c@example.com"]), "cc.0"),
        (email(bcc="b@example.com"), "bcc"),
        (email(replyTo="r@example.com"), "replyTo"),
        (email(**{"from": "hello@company.com"}), "from"),
        (email(test="yes"), "test"),
        (email(categories="welcome"), "categories"),
        (email(unsubscribeGroupId=5), "unsubscribeGroupId"),
        (email(template_id="tmpl_1"), "template_id"),
        (email(dynamic_data={"a": 1}), "dynamic_data"),
        (email(reply_to={"email": "r@example.com"}), "reply_to"),
        (email(**{"from": None, "from_": {"email": "hello@company.com"}}), "from_"),
    ],
)
def test_send_refuses_what_autosend_would(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    errors = assert_validation_failed(client.post("/v1/mails/send", json=body, headers=AUTH))
    assert field in fields(errors)
    assert client.get("/api/v1/messages").json()["total"] == 0
    assert client.get("/api/v1/stats").json()["accepted"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (bulk(recipients="a@example.com"), "recipients"),
        (bulk(recipients=["a@example.com", {"email": "b@example.com"}]), "recipients.0"),
        (bulk(**{"from": "News <hello@company.com>"}), "from"),
        (bulk(campaign_name="x"), "campaign_name"),
        (bulk(cc=[{"email": "c@example.com"}]), "cc"),
    ],
)
def test_bulk_refuses_what_autosend_would(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    errors = assert_validation_failed(client.post("/v1/mails/bulk", json=body, headers=AUTH))
    assert field in fields(errors)
    assert client.get("/api/v1/messages").json()["total"] == 0


def test_the_documented_examples_are_accepted(client: TestClient) -> None:
    documented = email(
        dynamicData={"name": "Jane"},
        categories=["welcome", "onboarding"],
        replyTo={"email": "support@company.com"},
        test=True,
    )
    assert client.post("/v1/mails/send", json=documented, headers=AUTH).status_code == 200
    template = email(subject=None, html=None, templateId="tmpl_abc123", dynamicData={"a": 1})
    assert client.post("/v1/mails/send", json=template, headers=AUTH).status_code == 200


# -- input nested deep enough to exhaust recursion: a 400, not a 500 --


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("path", ["/v1/mails/send", "/v1/mails/bulk"])
@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(_nested(100_000), id="array-100000"),
        pytest.param('{"dynamicData": {"a": ' + _nested(5000) + "}}", id="dynamicData-5000"),
        # below the JSON decoder's limit, above what validation can recurse through
        pytest.param('{"dynamicData": {"a": ' + _nested(990) + "}}", id="dynamicData-990"),
        pytest.param('{"dynamicData": {"a": ' + _nested(300) + "}}", id="dynamicData-300"),
    ],
)
@pytest.mark.parametrize("idempotency", [{}, {"Idempotency-Key": "deep"}])
def test_deeply_nested_json_is_a_400_on_body(
    client: TestClient, path: str, raw: str, idempotency: dict[str, str]
) -> None:
    headers = {**AUTH, **idempotency, "Content-Type": "application/json"}
    errors = assert_validation_failed(client.post(path, content=raw, headers=headers))
    assert fields(errors) == {"body"}
    assert "nested" in errors[0]["message"]
    assert client.get("/api/v1/stats").json()["rejected"] == {"400": 1}


def test_nesting_within_the_limit_is_kept(client: TestClient) -> None:
    data: Any = "leaf"
    for _ in range(MAX_JSON_DEPTH - 1):  # the body itself is the first level
        data = {"k": data}
    response = client.post("/v1/mails/send", json=email(dynamicData=data), headers=AUTH)
    assert response.status_code == 200, response.text
    one_more = email(dynamicData={"k": data})
    errors = assert_validation_failed(client.post("/v1/mails/send", json=one_more, headers=AUTH))
    assert fields(errors) == {"body"}


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(_nested(100_000), id="array-100000"),
        pytest.param('{"body": ' + _nested(5000) + "}", id="body-5000"),
        pytest.param('{"body": ' + _nested(990) + "}", id="body-990"),
    ],
)
def test_deeply_nested_chaos_rule_is_a_400(client: TestClient, raw: str) -> None:
    headers = {"Content-Type": "application/json", **AUTH}
    assert client.post("/api/v1/chaos", content=raw, headers=headers).status_code == 400
    assert client.get("/api/v1/chaos").json()["remaining"] == 0
