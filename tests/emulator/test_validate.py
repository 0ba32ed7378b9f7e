"""The destination URL check: its fast path (one check per scheme://authority) must
answer exactly what the full check answers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from celery_qstash.local.emulator.validate import _url_problem, url_problem

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
