"""The destination URL check: its fast path (one check per scheme://authority) must
answer exactly what the full check answers; link-local destinations and times past
the maximum delay are refused (issue 23)."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from celery_qstash.clock import FakeClock
from celery_qstash.devserver import DEV_TOKEN
from celery_qstash.local.emulator import Emulator
from celery_qstash.local.emulator.errors import BadRequest
from celery_qstash.local.emulator.validate import (
    _url_problem,
    check_url,
    is_link_local,
    url_problem,
)

AUTHORITIES = ["https://api.example.com", "http://127.0.0.1:8000", "https://a.example:99999",
               "https://user@host.example", "http://[::1]:80", "https://ex ample.com",
               "https://%41.example", "https://xn--bcher-kva.example", "https://h.example:0",
               "HTTPS://upper.example", "https://"]
REST = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=30)


@settings(max_examples=400, deadline=None)
@given(authority=st.sampled_from(AUTHORITIES), sep=st.sampled_from(["", "/", "?", "#", " ", "@"]),
       rest=REST)
def test_url_check_fast_path_agrees(authority: str, sep: str, rest: str) -> None:
    url = authority + sep + rest
    assert url_problem(url) == _url_problem.__wrapped__(url)


def test_url_check_fast_path_agrees_on_known_cases() -> None:
    for url in ["https://a.example/x?n=1", "https://a.example/\x01", "https://a.example/\x7f",
                "https://a.example:70000/x", "https://a.example/" + "x" * 70_000,
                "ftp://a.example/x", "https://a.example?q#f", "https://a.example/ü"]:
        assert url_problem(url) == _url_problem.__wrapped__(url), url
    assert url_problem("https://a.example/\x01") is not None
    assert url_problem("https://a.example:70000/x") is not None


def test_an_undecodable_idna_host_is_a_problem_not_an_exception() -> None:
    # was idna.InvalidCodepoint out of the check (a 500 for the publish)
    assert url_problem("https://xn--bcher-kva.example;") is not None


# -- link-local destinations (issue 23): refused unless --allow-link-local ----------------

METADATA = ["http://169.254.169.254/latest/meta-data/", "http://169.254.170.2/v2/creds",
            "http://2852039166/", "http://0xa9fea9fe/", "http://169.254.43518/",
            "http://[fe80::1]/", "http://[::ffff:169.254.169.254]/", "http://[fd00:ec2::254]/",
            "http://100.100.100.200/latest/meta-data/", "http://metadata.google.internal/",
            "http://METADATA.google.internal./computeMetadata/v1/"]
LOCAL = ["http://127.0.0.1:8025/v1/mails/send", "http://localhost:8000/", "http://[::1]:80/",
         "http://10.0.0.7/", "http://192.168.1.2/", "http://172.17.0.1/", "http://sandbox:8025/",
         "https://api.autosend.com/v1/mails/send", "http://169.255.0.1/"]
AUTH_HEADERS = {"Authorization": f"Bearer {DEV_TOKEN}"}


@pytest.mark.parametrize("url", METADATA)
def test_link_local_and_metadata_hosts_are_refused_in_any_spelling(url: str) -> None:
    with pytest.raises(BadRequest, match="--allow-link-local"):
        check_url(url, "destination url")
    try:
        httpx.URL(url)
    except Exception:
        # httpx 0.25 (the floor) cannot call this spelling at all: allowed, it is still
        # refused, as no URL.
        with pytest.raises(BadRequest, match="not a valid URL"):
            check_url(url, "destination url", allow_link_local=True)
    else:
        assert check_url(url, "destination url", allow_link_local=True) == url


@pytest.mark.parametrize("url", LOCAL)
def test_loopback_private_and_public_hosts_stay_allowed(url: str) -> None:
    assert check_url(url, "destination url") == url


def test_is_link_local_takes_no_exception_from_odd_names() -> None:
    assert not any(is_link_local(h) for h in ["", "example", "1.2.3.4.5", "\u0661", "xn--x"])


def _client(allow: bool) -> TestClient:
    emulator = Emulator(clock=FakeClock(1_800_000_000), allow_link_local=allow)
    return TestClient(emulator.app, headers=AUTH_HEADERS)


def test_every_way_to_name_a_destination_refuses_the_metadata_service() -> None:
    """Publish, enqueue, batch, callbacks, schedules and URL groups: a 400 naming the flag,
    and nothing stored."""
    meta = "http://169.254.169.254/latest/meta-data/"
    client = _client(allow=False)
    answers = [
        client.post(f"/v2/publish/{meta}"),
        client.post(f"/v2/enqueue/q1/{meta}"),
        client.post("/v2/publish/http://127.0.0.1:9/x", headers={"Upstash-Callback": meta}),
        client.post("/v2/publish/http://127.0.0.1:9/x",
                    headers={"Upstash-Failure-Callback": meta}),
        client.post(f"/v2/schedules/{meta}", headers={"Upstash-Cron": "* * * * *"}),
        client.post("/v2/topics/g/endpoints", json={"endpoints": [{"url": meta}]}),
    ]
    assert [a.status_code for a in answers] == [400] * 6, [a.text for a in answers]
    assert all("--allow-link-local" in a.json()["error"] for a in answers)
    [item] = client.post("/v2/batch", json=[{"destination": meta, "body": "x"}]).json()
    assert "--allow-link-local" in item["error"]
    assert client.get("/v2/events").json()["events"] == []
    assert client.get("/v2/schedules").json() == []


def test_the_flag_lets_link_local_destinations_through() -> None:
    client = _client(allow=True)
    assert client.post("/v2/publish/http://169.254.169.254/x").status_code == 200
    assert client.post("/v2/topics/g/endpoints",
                       json={"endpoints": [{"url": "http://[fe80::1]/x"}]}).status_code == 200


# -- bounded times (issue 23): a delay or not-before past the maximum is a 400 -----------

def test_a_not_before_past_the_maximum_delay_is_a_400_naming_header_and_bound() -> None:
    client = _client(allow=False)
    now = 1_800_000_000
    refused = client.post("/v2/publish/http://127.0.0.1:9/x",
                          headers={"Upstash-Not-Before": "1099511627776"})
    assert refused.status_code == 400
    assert "Upstash-Not-Before" in refused.json()["error"]
    assert "365d" in refused.json()["error"] and "--max-delay" in refused.json()["error"]
    year = 365 * 86_400
    assert client.post("/v2/publish/http://127.0.0.1:9/x",
                       headers={"Upstash-Not-Before": str(now + year)}).status_code == 200
    assert client.post("/v2/publish/http://127.0.0.1:9/x",
                       headers={"Upstash-Not-Before": str(now + year + 1)}).status_code == 400
    assert client.post("/v2/publish/http://127.0.0.1:9/x",  # the past is "now"
                       headers={"Upstash-Not-Before": "1"}).status_code == 200
    too_long = client.post("/v2/publish/http://127.0.0.1:9/x", headers={"Upstash-Delay": "366d"})
    assert too_long.status_code == 400
    assert "Upstash-Delay" in too_long.json()["error"] and "365d" in too_long.json()["error"]


def test_max_delay_changes_the_bound() -> None:
    emulator = Emulator(clock=FakeClock(1_800_000_000), max_delay_ms=7 * 86_400_000)
    client = TestClient(emulator.app, headers=AUTH_HEADERS)
    refused = client.post("/v2/publish/http://127.0.0.1:9/x", headers={"Upstash-Delay": "8d"})
    assert refused.status_code == 400 and "7d" in refused.json()["error"]
    assert client.post("/v2/publish/http://127.0.0.1:9/x",
                       headers={"Upstash-Delay": "7d"}).status_code == 200
    assert client.post("/v2/publish/http://127.0.0.1:9/x", headers={
        "Upstash-Not-Before": str(1_800_000_000 + 8 * 86_400)}).status_code == 400
