"""The inbox pages at Mailpit's level: search, paging, tabs, newer/older, delete, clear,
the Rejected view and the link to the dashboard (no script anywhere)."""

from __future__ import annotations

import html
import re

import pytest

from celery_qstash.clock import FakeClock
from celery_qstash.local.sandbox import Sandbox

from .helpers import AUTH, TestClient, email


def _send(client: TestClient, n: int, **overrides: object) -> None:
    for i in range(n):
        body = email(subject=f"Message {i}", **overrides)
        assert client.post("/v1/mails/send", json=body, headers=AUTH).status_code == 200


def _token(page: str) -> str:
    match = re.search(r'name="token" value="([^"]+)"', page)
    assert match is not None
    return match.group(1)


def test_search_matches_to_from_subject_and_text(client: TestClient) -> None:
    client.post("/v1/mails/send", json=email(subject="Invoice", text="Total: 42 EUR"),
                headers=AUTH)
    client.post("/v1/mails/send", json=email(to={"email": "zed@example.com"}, subject="Hi"),
                headers=AUTH)

    def subjects(q: str) -> list[str]:
        page = client.get("/inbox", params={"q": q}).text
        return re.findall(r'<td class="subject"><a href="[^"]+">([^<]+)</a>', page)

    assert subjects("invoice") == ["Invoice"]
    assert subjects("42 eur") == ["Invoice"]  # every word, anywhere in the text
    assert subjects("zed@") == ["Hi"]
    assert subjects("company.com") == ["Hi", "Invoice"]  # the sender
    assert "No email matches." in client.get("/inbox", params={"q": "nothing"}).text


def test_paging_reaches_past_the_first_200(client: TestClient) -> None:
    _send(client, 230)

    first = client.get("/inbox").text
    last = client.get("/inbox", params={"page": "5"}).text

    assert "1&ndash;50 of 230" in first and 'id="older-page"' in first
    assert "201&ndash;230 of 230" in last and 'id="older-page"' not in last
    assert ">Message 0<" in last and ">Message 0<" not in first
    assert client.get("/inbox", params={"page": "0"}).status_code == 400


def test_live_refresh_is_a_meta_refresh_that_can_be_turned_off(client: TestClient) -> None:
    on = client.get("/inbox").text
    off = client.get("/inbox", params={"refresh": "0"}).text

    assert '<meta http-equiv="refresh" content="5">' in on and "● Live" in on
    assert "http-equiv" not in off and 'href="/inbox?refresh=5"' in off


def test_tabs_newer_older_and_widths(client: TestClient) -> None:
    _send(client, 3, text="Plain", html="<p>Rich</p>")
    ids = [m["id"] for m in client.get("/api/v1/messages").json()["messages"]]  # newest first

    middle = client.get(f"/inbox/{ids[1]}").text
    assert f'id="newer" rel="prev" href="/inbox/{ids[0]}?tab=html"' in middle
    assert f'id="older" rel="next" href="/inbox/{ids[2]}?tab=html"' in middle
    assert 'id="newer"' not in client.get(f"/inbox/{ids[0]}").text

    mobile = client.get(f"/inbox/{ids[1]}", params={"tab": "html", "width": "mobile"}).text
    assert 'style="width:375px"' in mobile and "<iframe sandbox" in mobile
    source = client.get(f"/inbox/{ids[1]}", params={"tab": "source"}).text
    assert "Content-Type: multipart/alternative" in source and "Subject: Message 1" in source
    assert "Message-ID: &lt;" in source
    assert client.get(f"/inbox/{ids[1]}", params={"tab": "nope"}).status_code == 400


def test_delete_one_needs_the_page_token(client: TestClient) -> None:
    _send(client, 2)
    msg_id = client.get("/api/v1/messages").json()["messages"][0]["id"]
    page = client.get(f"/inbox/{msg_id}").text

    forged = client.post(f"/inbox/{msg_id}/delete", data={"token": "guess"})
    assert forged.status_code == 403
    assert client.get("/api/v1/messages").json()["total"] == 2

    done = client.post(f"/inbox/{msg_id}/delete", data={"token": _token(page)},
                       follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"].startswith("/inbox?notice=")
    assert "Deleted 1 email." in client.get(done.headers["location"]).text
    assert client.get("/api/v1/messages").json()["total"] == 1


def test_a_notice_comes_from_the_server_never_from_url_text(client: TestClient) -> None:
    """``?done=`` text was shown under the inbox's banner (escaped, but phishing-shaped);
    now only a token the server gave names a notice."""
    bait = "Your session expired: sign in again at evil.example"
    for query in (f"done={bait}", f"error={bait}", f"notice={bait}", "notice=abc123"):
        page = client.get(f"/inbox?{query}").text
        assert "evil.example" not in page and 'class="notice"' not in page


def test_clear_all_needs_the_token_and_the_confirmation(client: TestClient) -> None:
    _send(client, 3)
    token = _token(client.get("/inbox").text)

    assert client.post("/inbox/clear", data={"confirm": "yes"}).status_code == 403
    client.post("/inbox/clear", data={"token": token})  # not confirmed: nothing happens
    assert client.get("/api/v1/messages").json()["total"] == 3

    cleared = client.post("/inbox/clear", data={"token": token, "confirm": "yes"})
    assert "Deleted 3 emails." in cleared.text
    assert client.get("/api/v1/messages").json()["total"] == 0


def test_the_rejected_view_lists_every_refusal_with_its_reason() -> None:
    clock = FakeClock()
    with Sandbox(clock=clock, rate_per_second=1, rate_per_minute=None) as sandbox, \
            TestClient(sandbox.app) as client:
        client.post("/v1/mails/send", json=email(subject=None), headers=AUTH)  # 400
        client.post("/v1/mails/send", json=email())  # 401
        clock.advance(1)  # the 400 used this second's only slot
        client.post("/v1/mails/send", json=email(), headers=AUTH)  # 200
        client.post("/v1/mails/send", json=email(), headers=AUTH)  # 429, same instant
        client.post("/api/v1/chaos", json={"fail_next": 1, "status": 503}, headers=AUTH)
        chaos = client.post("/v1/mails/send", json=email(subject="Doomed"),
                            headers={**AUTH, "Idempotency-Key": "task-42"})
        sandbox.api.dashboard_url = "http://127.0.0.1:5555"

        page = client.get("/rejected").text

    assert chaos.headers["x-sandbox-chaos"] == "true"
    rows = re.findall(r"<tr>(.*?)</tr>", page)[1:]  # after the header row
    assert len(rows) == 4
    assert "503 chaos" in rows[0] and "Doomed" in rows[0]
    assert 'href="http://127.0.0.1:5555/tasks/task-42"' in rows[0]
    assert "429 rate limit" in rows[1] and "Rate limit exceeded" in rows[1]
    assert "401 auth" in rows[2] and "Unauthorized" in rows[2]
    assert "400 validation" in rows[3] and "subject" in rows[3]


def test_an_email_links_to_its_task_on_the_dashboard(sandbox: Sandbox,
                                                     client: TestClient) -> None:
    client.post("/v1/mails/send", json=email(), headers={**AUTH, "Idempotency-Key": "t-1"})
    msg_id = client.get("/api/v1/messages").json()["messages"][0]["id"]
    assert 'id="task-link"' not in client.get(f"/inbox/{msg_id}").text  # no dashboard known

    sandbox.api.dashboard_url = "http://127.0.0.1:5555/"
    page = client.get(f"/inbox/{msg_id}").text

    assert 'id="task-link" href="http://127.0.0.1:5555/tasks/t-1"' in page
    # The dashboard's "email in the inbox" link opens the email itself...
    keyed = client.get("/inbox", params={"key": "t-1"}, follow_redirects=False)
    assert keyed.status_code == 303 and keyed.headers["location"] == f"/inbox/{msg_id}"
    assert "No email matches." in client.get("/inbox", params={"key": "t-2"}).text
    # ...and a list filtered by task says so (the filter is visible, and clearable).
    filtered = client.get("/inbox", params={"key": "t-2"}).text
    assert 'id="key-filter">Task t-2<' in filtered and "Clear search" in filtered


def test_favicon_is_an_icon_not_a_404(client: TestClient) -> None:
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"


def test_pages_run_only_their_own_script_and_forms_post_only_here(client: TestClient) -> None:
    page = client.get("/inbox")
    csp = page.headers["content-security-policy"]

    # One script, the sandbox's own /live.js: no inline script, no eval, no other origin.
    # (Styles may be inline, as an email's are: scripts may not.)
    assert "script-src 'self';" in csp and "unsafe-eval" not in csp
    assert "form-action 'self'" in csp
    assert re.findall(r"<script\b[^>]*>(.*?)</script>", page.text) == [""]
    assert '<script src="/live.js" defer></script>' in page.text
    served = client.get("/live.js")
    assert served.status_code == 200 and served.headers["content-type"].startswith(
        "text/javascript")
    assert "data-live" in served.text


@pytest.mark.parametrize(("body", "reason"), [
    ({"success": False, "error": {"message": "Service down", "code": "DOWN"}}, "Service down"),
    ({"error": "Bad gateway"}, "Bad gateway"),
    ({"detail": "nothing we know"}, '{"detail": "nothing we know"}'),
])
def test_the_rejected_view_gives_a_reason_for_any_error_body(
        sandbox: Sandbox, client: TestClient, body: dict[str, object], reason: str) -> None:
    client.post("/api/v1/chaos", json={"fail_next": 1, "status": 503, "body": body},
                headers=AUTH)
    client.post("/v1/mails/send", json=email(), headers=AUTH)
    row = re.findall(r"<tr>(.*?)</tr>", client.get("/rejected").text)[1]
    shown = re.search(r'<td class="reason">(.*?)</td>', row)
    assert shown is not None and html.unescape(shown.group(1)) == reason


def test_a_previewed_email_loads_no_remote_content_unless_asked(client: TestClient) -> None:
    """The page's CSP (which the preview's srcdoc iframe inherits) allows images, CSS and
    fonts from this sandbox only; ``?remote=1``, the per-email switch, allows others."""
    client.post("/v1/mails/send", headers={"Authorization": "Bearer AS_t"}, json={
        "to": {"email": "p@x.example"}, "from": {"email": "a@acme.example"}, "subject": "S",
        "html": '<img src="https://tracker.example/p.gif">'}).raise_for_status()
    msg_id = client.get("/api/v1/messages").json()["messages"][0]["id"]
    blocked = client.get(f"/inbox/{msg_id}")
    policy = blocked.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "img-src 'self' data:;" in policy
    assert "https:" not in policy and 'id="remote-on"' in blocked.text
    loaded = client.get(f"/inbox/{msg_id}?tab=html&remote=1")
    assert "img-src 'self' data: http: https:" in loaded.headers["content-security-policy"]
    assert 'id="remote-off"' in loaded.text
    assert "https:" not in client.get("/inbox").headers["content-security-policy"]


def test_the_request_tab_redacts_credential_headers(client: TestClient) -> None:
    client.post("/v1/mails/send", headers={"Authorization": "Bearer AS_t"}, json={
        "to": {"email": "h@x.example"}, "from": {"email": "a@acme.example"}, "subject": "S",
        "text": "t", "headers": {"X-Api-Key": "key-secret-1", "X-Campaign": "spring"},
    }).raise_for_status()
    msg_id = client.get("/api/v1/messages").json()["messages"][0]["id"]
    page = client.get(f"/inbox/{msg_id}?tab=request").text
    assert "key-secret-1" not in page and "[redacted]" in page and "spring" in page
