"""The publish outcome is never ambiguous, answers that are not QStash's are named as
such, and the whole call ends by its deadline even against a server that trickles.

respx covers the answers; a tiny threaded socket server on loopback covers what
respx cannot: a server that sends its answer a byte at a time, and one that
answers with some other service's page.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import respx
from qstash import QStash

from celery_qstash import PublishError
from celery_qstash.clock import SystemClock
from celery_qstash.config import load_settings
from celery_qstash.publish.request import PublishRequest
from celery_qstash.publish.transports import QStashTransport, get_transport
from celery_qstash.testing import FakeClock

URL = "http://qstash.test"
TOKEN = "outcome-token-S3CRET-31cc"
KEY = "outcome-key-S3CRET-47dd"


def ok(message_id: str = "msg_ok") -> httpx.Response:
    return httpx.Response(200, json={"messageId": message_id})


def error(status: int, text: str = "boom") -> httpx.Response:
    return httpx.Response(status, json={"error": text})


def make_request(**overrides: Any) -> PublishRequest:
    fields: dict[str, Any] = {
        "task_id": "task-1",
        "task_name": "emails.welcome",
        "url": "https://api.autosend.com/v1/mails/send",
        "body": {"to": {"email": "jane@example.com"}, "from": {"email": "shop@example.com"}, "templateId": "t"},
        "authorization": f"Bearer {KEY}",
        "headers": {"Idempotency-Key": "task-1", "X-Celery-Task": "emails.welcome"},
        "deduplication_id": "task-1",
        "label": "task-1",
    }
    fields.update(overrides)
    return PublishRequest(**fields)


def route(mock: respx.MockRouter, *outcomes: Any) -> respx.Route:
    return mock.post(url__startswith=f"{URL}/v2/").mock(side_effect=list(outcomes))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def transport(clock: FakeClock) -> QStashTransport:
    client = QStash(TOKEN, retry=False, base_url=URL)
    return QStashTransport(client, timeout=2.0, clock=clock, secrets=(TOKEN, KEY), url=URL)


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        yield router


def duplicate(message_id: str) -> httpx.Response:
    """QStash's (and the emulator's) answer to a publish whose deduplication id it has."""
    return httpx.Response(202, json={"messageId": message_id, "deduplicated": True})


# --- the answer to a stored attempt is lost ---------------------------------------------


@pytest.mark.parametrize(
    "lost", [httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("peer closed"), httpx.ReadError("reset")]
)
def test_lost_answer_then_duplicate_is_success(transport: QStashTransport, mock: respx.MockRouter, lost: Exception) -> None:
    r = route(mock, lost, duplicate("msg_first"))
    result = transport.publish(make_request())
    assert result.message_id == "msg_first"
    assert result.deduplicated is True
    assert {c.request.headers["Upstash-Deduplication-Id"] for c in r.calls} == {"task-1"}


def test_lost_answers_until_the_end_say_outcome_unknown(transport: QStashTransport, mock: respx.MockRouter) -> None:
    route(mock, *[httpx.ReadTimeout("slow")] * 10)
    with pytest.raises(PublishError) as info:
        transport.publish(make_request())
    exc = info.value
    assert exc.outcome_unknown is True
    assert exc.task_id == "task-1"
    text = str(exc)
    assert "may or may not have stored task task-1" in text
    assert "Calling again with the same task_id (task-1) is safe" in text
    assert "will not send twice" in text
    assert "did not accept" not in text


def test_a_lost_answer_then_a_5xx_is_still_unknown(transport: QStashTransport, mock: respx.MockRouter) -> None:
    route(mock, httpx.ReadTimeout("slow"), *[error(503, "busy")] * 5)
    with pytest.raises(PublishError) as info:
        transport.publish(make_request())
    assert info.value.outcome_unknown is True
    assert info.value.status == 503


def test_connection_refused_is_a_known_failure(transport: QStashTransport, mock: respx.MockRouter) -> None:
    route(mock, *[httpx.ConnectError("refused")] * 10)
    with pytest.raises(PublishError) as info:
        transport.publish(make_request())
    assert info.value.outcome_unknown is False
    assert "did not accept task task-1" in str(info.value)


@pytest.mark.parametrize("status", [400, 401, 412])
def test_a_refusal_is_a_known_failure(transport: QStashTransport, mock: respx.MockRouter, status: int) -> None:
    route(mock, error(status, "nope"))
    with pytest.raises(PublishError) as info:
        transport.publish(make_request())
    assert info.value.outcome_unknown is False
    assert info.value.task_id == "task-1"


def test_publish_error_pickles_with_its_flags() -> None:
    import pickle

    exc = PublishError("x", status=None, error="ReadTimeout", task_id="t-1", outcome_unknown=True)
    back = pickle.loads(pickle.dumps(exc))
    assert (back.task_id, back.outcome_unknown, str(back)) == ("t-1", True, "x")


# --- answers that are not QStash's -----------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, text="OK"),
        httpx.Response(200, text="<html><body>Welcome to nginx!</body></html>"),
        httpx.Response(200, json={}),
        httpx.Response(200, json=[]),
        httpx.Response(200, json="msg_1"),
        httpx.Response(200, json={"messageId": 5}),
        httpx.Response(200, text=""),
        httpx.Response(404, text="<html><h1>404 Not Found</h1></html>"),
        httpx.Response(404, json={"detail": "Not Found"}),
        httpx.Response(405, text="Method Not Allowed"),
        httpx.Response(301, headers={"Location": "https://elsewhere.example/"}),
    ],
    ids=["200-text", "200-html", "200-empty-object", "200-list", "200-string", "200-int-id",
         "200-empty", "404-html", "404-fastapi", "405-text", "301"],
)
def test_an_answer_that_is_not_qstashs_says_so(transport: QStashTransport, mock: respx.MockRouter, answer: httpx.Response) -> None:
    r = route(mock, answer, ok())
    with pytest.raises(PublishError) as info:
        transport.publish(make_request())
    text = str(info.value)
    assert f"the server at {URL} does not look like QStash" in text
    assert "qstash_url" in text
    assert info.value.outcome_unknown is False
    assert r.call_count == 1  # a wrong server does not become right on a retry


def test_qstash_own_404_is_not_called_foreign(transport: QStashTransport, mock: respx.MockRouter) -> None:
    route(mock, error(404, "queue not found"))
    with pytest.raises(PublishError) as info:
        transport.publish(make_request())
    assert "does not look like QStash" not in str(info.value)
    assert info.value.error == "queue not found"


def test_a_foreign_answer_never_shows_a_secret(transport: QStashTransport, mock: respx.MockRouter) -> None:
    route(mock, httpx.Response(404, text=f"<pre>Authorization: Bearer {TOKEN} {KEY}</pre>"))
    with pytest.raises(PublishError) as info:
        transport.publish(make_request())
    for text in (str(info.value), info.value.error or ""):
        assert TOKEN not in text and KEY not in text


# --- network errors name the URL ----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_nothing_listening_on_loopback_names_the_url_and_suggests_dev() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    settings = load_settings({"qstash_token": TOKEN, "qstash_url": url, "autosend_api_key": KEY})
    with pytest.raises(PublishError) as info:
        get_transport(settings, clock=FakeClock()).publish(make_request(), retry=False)
    text = str(info.value)
    assert url in text
    assert "celery-qstash dev" in text and "QSTASH_DEV=true" in text
    assert info.value.outcome_unknown is False


def test_a_remote_url_gets_no_dev_hint(transport: QStashTransport, mock: respx.MockRouter) -> None:
    route(mock, *[httpx.ConnectError("refused")] * 5)
    with pytest.raises(PublishError) as info:
        transport.publish(make_request())
    assert URL in str(info.value)
    assert "celery-qstash dev" not in str(info.value)


def test_the_url_in_messages_has_no_userinfo() -> None:
    client = QStash(TOKEN, retry=False, base_url="http://user:pw-S3CRET@qstash.test")
    transport = QStashTransport(client, clock=FakeClock())
    assert transport.url == "http://qstash.test"


# --- a real loopback server: trickling and foreign ---------------------------------------


class _Server:
    """One-thread socket server: each connection's request is read, then ``answer``
    writes to the socket however it likes (slowly, garbage...)."""

    def __init__(self, answer: Callable[[socket.socket, threading.Event], None]) -> None:
        self.answer = answer
        self.stop = threading.Event()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(5)
                try:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += conn.recv(65536)
                    self.answer(conn, self.stop)
                except OSError:
                    pass  # the client gave up: what the deadline is for

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[socket.socket, threading.Event], None]], _Server]]:
    servers: list[_Server] = []

    def start(answer: Callable[[socket.socket, threading.Event], None]) -> _Server:
        servers.append(_Server(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _transport_for(url: str, timeout: float = 0.5, **conf: Any) -> QStashTransport:
    settings = load_settings(
        {"qstash_token": TOKEN, "qstash_url": url, "autosend_api_key": KEY,
         "qstash_publish_timeout": timeout, **conf}
    )
    return get_transport(settings, clock=SystemClock())


def test_a_trickling_server_cannot_hold_the_call_past_its_deadline(serve: Any) -> None:
    body = b'{"messageId":"msg_trickled"}'

    def trickle(conn: socket.socket, stop: threading.Event) -> None:
        # Each byte comes well within httpx's per-read timeout; the whole answer
        # would take about 20 s. Without a wall-clock deadline the call succeeds late.
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        for _ in range(400):
            if stop.wait(0.05):
                return
            conn.sendall(b"X-Pad: a\r\n")
        conn.sendall(b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    server = serve(trickle)
    with pytest.raises(PublishError) as info:
        _transport_for(server.url, 0.5).publish(make_request())
    exc = info.value
    assert exc.outcome_unknown is True  # the request was sent: QStash may have stored it
    assert "publish deadline" in str(exc)
    assert server.connections == 1  # no time was left for a second attempt


def test_a_server_trickling_its_body_is_cut_too(serve: Any) -> None:
    def trickle_body(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n")
        for _ in range(5000):
            if stop.wait(0.01):
                return
            conn.sendall(b" ")

    server = serve(trickle_body)
    with pytest.raises(PublishError) as info:
        _transport_for(server.url, 0.5).publish(make_request())
    assert info.value.outcome_unknown is True


def test_another_http_server_on_the_qstash_port_is_named(serve: Any) -> None:
    page = b"<!doctype html><title>Vite dev server</title>"

    def vite(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n" % len(page) + page)

    server = serve(vite)
    with pytest.raises(PublishError) as info:
        _transport_for(server.url, 2.0).publish(make_request())
    text = str(info.value)
    assert f"the server at {server.url} does not look like QStash" in text
    assert "HTTP 404" in text and "Vite dev server" in text
    assert "celery-qstash dev" in text  # loopback: the likely fix is the emulator's port


def test_a_200_that_is_not_json_from_a_real_server(serve: Any) -> None:
    def plain(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK")

    server = serve(plain)
    with pytest.raises(PublishError, match="does not look like QStash"):
        _transport_for(server.url, 2.0).publish(make_request())


def test_status_reads_are_not_bound_by_a_publish_deadline(serve: Any) -> None:
    # The deadline belongs to the publish call: the same client reading status
    # afterwards gets its own (roomier) timeouts.
    def events(conn: socket.socket, stop: threading.Event) -> None:
        body = b'{"events": []}'
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n" % len(body) + body)

    server = serve(events)
    transport = _transport_for(server.url, 0.01)
    data = transport.client.http.request(path="/v2/events", method="GET")
    assert data == {"events": []}


@pytest.mark.parametrize("never_sent", [httpx.ConnectTimeout("slow dns"), httpx.PoolTimeout("busy")])
def test_an_error_before_the_request_left_is_a_known_failure(
    transport: QStashTransport, mock: respx.MockRouter, never_sent: Exception
) -> None:
    route(mock, *[never_sent] * 10)
    with pytest.raises(PublishError) as info:
        transport.publish(make_request())
    assert info.value.outcome_unknown is False
