"""The sandbox as AutoSend's current reference describes it (issue 9, items 4, 9, 10).

Sources: docs.autosend.com ``api-reference/rate-limit`` (2 requests per second per key,
a ``retryAfter`` body field, ``X-RateLimit-*`` headers, no ``Retry-After`` header
documented), ``api-reference/mails/send`` and ``mails/bulk`` (click and open tracking
switches, custom email headers, "Sender email address (must be from a verified domain)").
"""

from __future__ import annotations

from click.testing import CliRunner

from celery_qstash.cli.servers import dev
from celery_qstash.cli.servers import sandbox as sandbox_command
from celery_qstash.clock import FakeClock
from celery_qstash.local.sandbox import Sandbox

from .helpers import AUTH, TestClient, bulk, email


def test_item4_a_429_has_no_retry_after_header_unless_asked(clock: FakeClock) -> None:
    # AutoSend documents the body's retryAfter only; QStash honours a Retry-After header
    # (qstash docs features/retry), so sending one by default would retry a rate-limited
    # email after 1 s locally where production waits QStash's backoff (12 s, 2m28s, ...).
    with Sandbox(clock=clock) as box, TestClient(box.app) as tc:
        statuses = [tc.post("/v1/mails/send", json=email(), headers=AUTH) for _ in range(3)]
        assert [r.status_code for r in statuses] == [200, 200, 429]
        assert statuses[2].json()["retryAfter"] == 1
        assert "retry-after" not in statuses[2].headers
    with Sandbox(clock=clock, retry_after_header=True) as box, TestClient(box.app) as tc:
        statuses = [tc.post("/v1/mails/send", json=email(), headers=AUTH) for _ in range(3)]
        assert statuses[2].headers["retry-after"] == "1"
    for command in (dev, sandbox_command):
        assert "--retry-after / --no-retry-after" in CliRunner().invoke(command, ["--help"]).output


def test_item9_documented_optional_fields_are_accepted(client: TestClient) -> None:
    # mails/send: "Enable or disable click tracking ...", "... open tracking ...";
    # mails/bulk: "Custom email headers ... Applied to every recipient in the batch".
    options = {"clickTracking": False, "openTracking": True, "headers": {"X-Campaign": "7"}}
    response = client.post("/v1/mails/send", json=email(**options), headers=AUTH)
    assert response.status_code == 200, response.text
    [captured] = client.get("/api/v1/messages").json()["messages"]
    assert {k: captured["request"][k] for k in options} == options
    assert client.post("/v1/mails/bulk", json=bulk(**options), headers=AUTH).status_code == 200
    wrong = client.post("/v1/mails/send", json=email(clickTracking="yes", headers={"X": 1}),
                        headers=AUTH)
    assert wrong.status_code == 400
    assert {e["field"] for e in wrong.json()["errors"]} == {"clickTracking", "headers"}


def test_item9_unverified_sender_domain_is_refused_when_domains_are_configured(
        clock: FakeClock) -> None:
    # AutoSend: "Sender email address (must be from a verified domain)"; its error message
    # for an unverified one is "Domain not verified". Off unless domains are given.
    box = Sandbox(clock=clock, rate_per_second=None, verified_domains=["Company.com"])
    with box, TestClient(box.app) as tc:
        assert tc.post("/v1/mails/send", json=email(), headers=AUTH).status_code == 200
        refused = tc.post("/v1/mails/send",
                          json=email(**{"from": {"email": "x@other.example"}}), headers=AUTH)
        assert refused.status_code == 403
        assert refused.json()["message"] == "Domain not verified"
        assert refused.json()["error"]["details"][0]["field"] == "from.email"
        assert tc.get("/api/v1/messages").json()["total"] == 1
    with Sandbox(clock=clock, rate_per_second=None) as open_box, \
            TestClient(open_box.app) as tc:
        response = tc.post("/v1/mails/send",
                           json=email(**{"from": {"email": "x@other.example"}}), headers=AUTH)
        assert response.status_code == 200
    for command in (dev, sandbox_command):
        assert "--verified-domain" in CliRunner().invoke(command, ["--help"]).output


def test_item10_both_documented_limits_by_default_and_the_headers_say_so(
        clock: FakeClock) -> None:
    # AutoSend's reference ("Rate Limits"): 2 requests per second and 50 per minute per key.
    with Sandbox(clock=clock) as box, TestClient(box.app) as tc:
        for sent in range(1, 51):
            assert tc.post("/v1/mails/send", json=email(), headers=AUTH).status_code == 200
            if sent % 2 == 0:
                clock.advance(1.0)
        response = tc.post("/v1/mails/send", json=email(), headers=AUTH)
        assert response.status_code == 429  # the 51st within a minute
        assert response.headers["x-ratelimit-limit"] == "50"
        assert response.headers["x-ratelimit-remaining"] == "0"
    with Sandbox(clock=clock, rate_per_minute=None) as box, TestClient(box.app) as tc:
        # --rate-per-minute 0: the per-second window alone, and the headers describe it
        assert tc.post("/v1/mails/send", json=email(),
                       headers=AUTH).headers["x-ratelimit-limit"] == "2"
