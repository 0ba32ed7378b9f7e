"""{{placeholders}} from dynamicData, Handlebars escaping, and what the inbox page escapes."""

from __future__ import annotations

import html
import re

import pytest

from celery_qstash.local.sandbox.render import escape_handlebars, merge_data, render

from .helpers import AUTH, TestClient, bulk, email

DATA = {
    "name": "Jane",
    "user": {"first": "Ada", "tags": ["a", "b"]},
    "items": [{"sku": "X1"}],
    "count": 3,
    "price": 9.0,
    "vip": True,
    "danger": "<b>\"Tom\" & 'Jerry'</b> `=`",
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Hi {{name}}!", "Hi Jane!"),
        ("Hi {{ name }}!", "Hi Jane!"),
        ("{{user.first}} {{ user.first }}", "Ada Ada"),
        ("{{items.0.sku}}", "X1"),
        ("{{this.name}}", "Jane"),
        ("[{{missing}}] [{{user.missing}}] [{{name.deeper}}]", "[] [] []"),
        ("{{count}} {{price}} {{vip}}", "3 9 true"),
        ("{{user.tags}}", "a,b"),
        ("{{user}}", "[object Object]"),
        ("a{{! a comment }}b{{!-- {{name}} --}}c", "abc"),
        ("{{#if vip}}VIP{{/if}}", "{{#if vip}}VIP{{/if}}"),
        ("{{> header}}", "{{> header}}"),
        ("{{format name}}", "{{format name}}"),
        ("{{else}}", "{{else}}"),
        ("no placeholders", "no placeholders"),
    ],
)
def test_values_are_looked_up(template: str, expected: str) -> None:
    assert render(template, DATA, html=False) == expected
    assert render(template, DATA, html=True) == expected  # nothing here needs escaping


def test_html_body_escapes_double_braces_and_not_triple() -> None:
    escaped = render("<p>{{danger}}</p>", DATA, html=True)
    assert (
        escaped
        == "<p>&lt;b&gt;&quot;Tom&quot; &amp; &#x27;Jerry&#x27;&lt;/b&gt; &#x60;&#x3D;&#x60;</p>"
    )
    assert render("<p>{{{danger}}}</p>", DATA, html=True) == f"<p>{DATA['danger']}</p>"
    assert render("<p>{{{ danger }}}</p>", DATA, html=True) == f"<p>{DATA['danger']}</p>"


def test_plain_text_is_never_escaped() -> None:
    assert render("{{danger}}", DATA, html=False) == DATA["danger"]


def test_none_template_stays_none_and_missing_data_renders_empty() -> None:
    assert render(None, DATA, html=True) is None
    assert render("Hi {{name}}", None, html=False) == "Hi "


def test_escape_table_is_handlebars() -> None:
    assert escape_handlebars("&<>\"'`=") == "&amp;&lt;&gt;&quot;&#x27;&#x60;&#x3D;"


def test_recipient_data_overrides_root_data() -> None:
    assert merge_data({"a": 1, "b": 2}, {"b": 3}) == {"a": 1, "b": 3}
    assert merge_data(None, None) == {}


def test_send_stores_rendered_subject_html_and_text(client: TestClient) -> None:
    body = email(
        subject="Hi {{name}}",
        html="<p>Hello {{name}}, {{{raw}}}</p>",
        text="Hello {{name}}",
        dynamicData={"name": "<Jane & co>", "raw": "<i>ok</i>"},
    )
    client.post("/v1/mails/send", json=body, headers=AUTH)
    msg = client.get("/api/v1/messages").json()["messages"][0]

    assert msg["subject"] == "Hi {{name}}"
    assert msg["renderedSubject"] == "Hi <Jane & co>"
    assert msg["renderedHtml"] == "<p>Hello &lt;Jane &amp; co&gt;, <i>ok</i></p>"
    assert msg["renderedText"] == "Hello <Jane & co>"
    assert msg["dynamicData"] == {"name": "<Jane & co>", "raw": "<i>ok</i>"}


def test_bulk_renders_each_recipient_with_its_own_data(client: TestClient) -> None:
    body = bulk(
        subject="Hi {{name}} from {{team}}",
        dynamicData={"name": "friend", "team": "Acme"},
        recipients=[
            {"email": "a@example.com", "dynamicData": {"name": "Ann"}},
            {"email": "b@example.com"},
        ],
    )
    client.post("/v1/mails/bulk", json=body, headers=AUTH)
    by_to = {m["to"]["email"]: m for m in client.get("/api/v1/messages").json()["messages"]}
    assert by_to["a@example.com"]["renderedSubject"] == "Hi Ann from Acme"
    assert by_to["a@example.com"]["dynamicData"] == {"name": "Ann", "team": "Acme"}
    assert by_to["b@example.com"]["renderedSubject"] == "Hi friend from Acme"


XSS = "<script>alert(1)</script>"


def test_inbox_pages_escape_everything_they_print(client: TestClient) -> None:
    body = email(
        subject=XSS,
        to={"email": "jane@example.com", "name": '"><img src=x onerror=alert(2)>'},
        html='<p>body</p>"></iframe><script>alert(3)</script>',
        text=f"text {XSS}",
        categories=[XSS],
    )
    client.post("/v1/mails/send", json=body, headers={**AUTH, "Idempotency-Key": XSS})
    msg_id = client.get("/api/v1/messages").json()["messages"][0]["id"]

    listing = client.get("/").text
    detail = client.get(f"/inbox/{msg_id}").text
    tabs = [client.get(f"/inbox/{msg_id}", params={"tab": tab}).text
            for tab in ("text", "source", "headers", "request")]
    client.post("/v1/mails/send", json={**body, "to": {"email": XSS}},
                headers={**AUTH, "Idempotency-Key": XSS + "2"})  # refused: the Rejected view
    rejected = client.get("/rejected").text
    assert "to.email" in rejected
    for page in (listing, detail, client.get("/inbox").text, *tabs, rejected):
        assert "<script>" not in page
        assert "<img" not in page
        assert html.escape(XSS) in page

    # The HTML body sits, escaped once, in the srcdoc of a sandboxed iframe: the attribute
    # cannot be closed early, and unescaping it gives back the rendered body.
    match = re.search(r'<iframe sandbox title="HTML body"[^>]*srcdoc="([^"]*)"></iframe>', detail)
    assert match is not None
    assert html.unescape(match.group(1)) == body["html"]
    assert f"<pre>text {html.escape(XSS)}</pre>" in tabs[0]
    assert detail.count("<iframe") == 1
    csp = client.get("/").headers["content-security-policy"]
    # Our own /live.js only (styles may be inline, as an email's are; scripts may not).
    assert "script-src 'self';" in csp and "unsafe-eval" not in csp
