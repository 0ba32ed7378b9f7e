"""The helpers every local server shares (celery_qstash.local.serving): one JSON parser,
one body limit, one size parser."""

from __future__ import annotations

import pytest

from celery_qstash.local.serving import MAX_JSON_DEPTH, JSONBodyError, parse_json, parse_size


def test_parse_json_accepts_ordinary_json() -> None:
    assert parse_json(b'{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}
    assert parse_json("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) is not None


@pytest.mark.parametrize(("raw", "reason"), [
    (b"[" * 100_000, "nested more than 64 levels"),          # RecursionError in the decoder
    (b"[" * 65 + b"]" * 65, "nested more than 64 levels"),   # within the decoder, past ours
    (b'{"a": NaN}', "NaN is not valid JSON"),
    (b"[Infinity]", "Infinity is not valid JSON"),
    (b"[1e400]", "out of range"),
    (b"\xff", "can't decode"),
    (b"{", "Expecting"),
    (b"", "Expecting value"),
])
def test_parse_json_turns_every_failure_into_one_error(raw: bytes, reason: str) -> None:
    with pytest.raises(JSONBodyError, match=reason):
        parse_json(raw)


@pytest.mark.parametrize(("text", "size"), [
    ("1048576", 1_048_576), ("1MiB", 1_048_576), ("10MB", 10_000_000), ("512kb", 512_000),
    (" 2 MiB ", 2 * 1024 * 1024), ("64KiB", 65_536),
])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "-1", "1.5MB", "1GB", "MB", "ten"])
def test_parse_size_refuses_what_is_not_a_positive_size(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


def test_allowed_hosts_from_the_environment_keep_dns_rebinding_out_off_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Bound to 0.0.0.0 (a container) there was no Host check at all: a page whose name
    # resolves to 127.0.0.1 read and drove the servers through the published ports.
    from celery_qstash.local.serving import ALLOWED_HOSTS_ENV, local_hosts

    monkeypatch.delenv(ALLOWED_HOSTS_ENV, raising=False)
    assert local_hosts("0.0.0.0") is None  # unchanged without the setting
    monkeypatch.setenv(ALLOWED_HOSTS_ENV, " qstash, Autosend ,")
    hosts = local_hosts("0.0.0.0")
    assert hosts is not None
    assert {"qstash", "autosend", "127.0.0.1", "localhost", "::1"} <= set(hosts)
    assert "evil.example" not in hosts
    assert "autosend" in (local_hosts("127.0.0.1") or ())


@pytest.mark.parametrize("allowed", [("127.0.0.1", "localhost"), None], ids=["loopback", "any"])
@pytest.mark.parametrize("host", [
    "evil.example@127.0.0.1:8080", "evil.example@localhost", "127.0.0.1:8080@evil.example",
    "user:pass@127.0.0.1", "127.0.0.1/x", "127.0.0.1 evil.example", "127.0.0.1:80:80",
])
def test_a_host_with_userinfo_or_junk_is_refused_like_an_unknown_host(
        host: str, allowed: tuple[str, ...] | None) -> None:
    """``Host: evil.example@127.0.0.1:PORT`` named loopback to a lenient parser; it is
    no host name at all, so it is refused whatever the allow-list."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from celery_qstash.local.serving import SameSiteGuard

    app = Starlette(routes=[Route("/", lambda request: PlainTextResponse("ran"))])
    client = TestClient(SameSiteGuard(app, allowed_hosts=allowed))
    assert client.get("/", headers={"Host": host}).status_code == 421
    assert client.get("/", headers={"Host": "127.0.0.1:8080"}).text == "ran"
    assert client.get("/", headers={"Host": "[::1]:8080"}).status_code == (
        421 if allowed else 200)
