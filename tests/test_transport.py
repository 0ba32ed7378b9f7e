"""QStashTransport: retries of the publish call, the time budget, one SDK client per process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from qstash import QStash

from celery_qstash import PublishError
from celery_qstash.config import load_settings
from celery_qstash.publish.request import FlowControl, PublishRequest
from celery_qstash.publish.transports import QStashTransport, get_transport
from celery_qstash.publish.transports.qstash import client_for
from celery_qstash.testing import FakeClock

URL = "http://qstash.test"
TOKEN = "transport-token-S3CRET-77aa"
KEY = "transport-key-S3CRET-99bb"
PUBLISH = f"{URL}/v2/publish/https://api.autosend.com/v1/mails/send"


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
        "retries": 3,
        "deduplication_id": "task-1",
        "label": "task-1",
        "redact_headers": ("Authorization",),
    }
    fields.update(overrides)
    return PublishRequest(**fields)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def transport(clock: FakeClock) -> QStashTransport:
    client = QStash(TOKEN, retry=False, base_url=URL)
    return QStashTransport(client, timeout=2.0, clock=clock, secrets=(TOKEN, KEY))


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        yield router


def route(mock: respx.MockRouter, *outcomes: Any) -> respx.Route:
    return mock.post(url__startswith=f"{URL}/v2/").mock(side_effect=list(outcomes))


# --- happy path ----------------------------------------------------------------------------


def test_publish_sends_one_request(transport: QStashTransport, mock: respx.MockRouter, clock: FakeClock) -> None:
    r = route(mock, ok("msg_abc"))
    result = transport.publish(make_request(delay=90, flow_control=FlowControl(key="k", rate=2, period="1s")))
    assert result.message_id == "msg_abc"
    assert result.deduplicated is False
    assert r.call_count == 1
    request = r.calls.last.request
    assert str(request.url) == PUBLISH
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Upstash-Forward-Authorization"] == f"Bearer {KEY}"
    assert request.headers["Upstash-Delay"] == "90s"
    assert request.headers["Upstash-Flow-Control-Value"] == "rate=2, period=1s"
    assert request.headers["Upstash-Redact-Fields"] == "header[Authorization]"
    assert clock.now() == FakeClock().now()  # no waiting on success


def test_deduplicated_answer_is_reported(transport: QStashTransport, mock: respx.MockRouter) -> None:
    route(mock, httpx.Response(200, json={"messageId": "msg_dup", "deduplicated": True}))
    assert transport.publish(make_request()).deduplicated is True


def test_queue_uses_enqueue(transport: QStashTransport, mock: respx.MockRouter) -> None:
    r = route(mock, ok())
    transport.publish(make_request(queue="emails"))
    assert r.calls.last.request.url.path == "/v2/enqueue/emails/https://api.autosend.com/v1/mails/send"


# --- retries -------------------------------------------------------------------------------


def test_network_error_then_success(transport: QStashTransport, mock: respx.MockRouter, clock: FakeClock) -> None:
    r = route(mock, httpx.ConnectError("connection refused"), ok("msg_2"))
    result = transport.publish(make_request())
    assert result.message_id == "msg_2"
    assert r.call_count == 2
    # both attempts carry the same deduplication id, so a retry can never send twice
    ids = {c.request.headers["Upstash-Deduplication-Id"] for c in r.calls}
    assert ids == {"task-1"}


def test_read_timeout_then_success(transport: QStashTransport, mock: respx.MockRouter) -> None:
    r = route(mock, httpx.ReadTimeout("slow"), ok("msg_2"))
    assert transport.publish(make_request()).message_id == "msg_2"
    assert r.call_count == 2


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_then_success(transport: QStashTransport, mock: respx.MockRouter, status: int) -> None:
    r = route(mock, error(status), ok("msg_after_5xx"))
    assert transport.publish(make_request()).message_id == "msg_after_5xx"
    assert r.call_count == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 412, 429])
def test_4xx_not_retried(transport: QStashTransport, mock: respx.MockRouter, clock: FakeClock, status: int) -> None:
    start = clock.now()
    r = route(mock, error(status, "nope"), ok())
    with pytest.raises(PublishError) as info:
        transport.publish(make_request())
    assert r.call_count == 1
    assert info.value.status == status
    assert clock.now() == start
    assert "after 1 attempt(s)" in str(info.value)


def test_retries_bounded_by_retry_policy(transport: QStashTransport, mock: respx.MockRouter) -> None:
    r = route(mock, *[error(503)] * 10)
    with pytest.raises(PublishError) as info:
        transport.publish(make_request(), retry_policy={"max_retries": 2})
    assert r.call_count == 3  # one attempt + two retries
    assert info.value.status == 503
    assert "after 3 attempt(s)" in str(info.value)


def test_default_policy_is_celerys(transport: QStashTransport, mock: respx.MockRouter, clock: FakeClock) -> None:
    start = clock.now()
    r = route(mock, *[httpx.ConnectError("down")] * 10)
    with pytest.raises(PublishError):
        transport.publish(make_request())
    assert r.call_count == 4  # Celery's max_retries=3
    # intervals 0, 0.2, 0.4 (interval_start=0, interval_step=0.2)
    assert clock.now() - start == pytest.approx(0.6)


def test_retry_policy_zero_retries(transport: QStashTransport, mock: respx.MockRouter) -> None:
    r = route(mock, error(500), ok())
    with pytest.raises(PublishError):
        transport.publish(make_request(), retry_policy={"max_retries": 0})
    assert r.call_count == 1


def test_retry_false_means_one_attempt(transport: QStashTransport, mock: respx.MockRouter, clock: FakeClock) -> None:
    start = clock.now()
    r = route(mock, httpx.ConnectError("down"), ok())
    with pytest.raises(PublishError) as info:
        transport.publish(make_request(), retry=False, retry_policy={"max_retries": 5})
    assert r.call_count == 1
    assert info.value.status is None
    assert clock.now() == start


def test_total_time_stays_below_the_timeout(transport: QStashTransport, mock: respx.MockRouter, clock: FakeClock) -> None:
    start = clock.now()
    r = route(mock, *[error(503)] * 100)
    policy = {"max_retries": 100, "interval_start": 0.5, "interval_step": 0.5, "interval_max": 1.0}
    with pytest.raises(PublishError):
        transport.publish(make_request(), retry_policy=policy)
    slept = clock.now() - start
    assert 0 < slept < 2.0
    assert r.call_count < 101  # the budget, not max_retries, stopped it
    assert r.call_count >= 2


def test_timeout_is_configurable(mock: respx.MockRouter, clock: FakeClock) -> None:
    transport = QStashTransport(QStash(TOKEN, retry=False, base_url=URL), timeout=10.0, clock=clock)
    start = clock.now()
    r = route(mock, *[error(503)] * 100)
    with pytest.raises(PublishError):
        transport.publish(make_request(), retry_policy={"max_retries": 100, "interval_start": 1, "interval_step": 0, "interval_max": 1})
    assert 2.0 < clock.now() - start < 10.0
    assert r.call_count > 3


def test_retry_intervals_capped_by_interval_max(transport: QStashTransport, mock: respx.MockRouter, clock: FakeClock) -> None:
    start = clock.now()
    route(mock, *[error(500)] * 4, ok())
    transport.publish(
        make_request(), retry_policy={"max_retries": 4, "interval_start": 0.1, "interval_step": 1, "interval_max": 0.3}
    )
    # 0.1, then capped at 0.3 three times
    assert clock.now() - start == pytest.approx(1.0)


# --- errors --------------------------------------------------------------------------------


def test_publish_error_carries_status_and_qstash_text(transport: QStashTransport, mock: respx.MockRouter) -> None:
    route(mock, error(400, "invalid flow control value"))
    with pytest.raises(PublishError) as info:
        transport.publish(make_request())
    assert info.value.status == 400
    assert info.value.error == "invalid flow control value"
    assert "task task-1" in str(info.value)
    assert "HTTP 400" in str(info.value)


def test_publish_error_text_is_scrubbed(transport: QStashTransport, mock: respx.MockRouter) -> None:
    route(mock, *[error(500, f"upstream saw {TOKEN} and Bearer {KEY}")] * 5)
    with pytest.raises(PublishError) as info:
        transport.publish(make_request())
    for text in (str(info.value), repr(info.value), info.value.error or ""):
        assert TOKEN not in text
        assert KEY not in text
    assert info.value.error == "upstream saw *** and Bearer ***"
    assert info.value.status == 500


def test_network_error_has_no_status(transport: QStashTransport, mock: respx.MockRouter) -> None:
    route(mock, *[httpx.ConnectError(f"cannot reach {URL} with {TOKEN}")] * 5)
    with pytest.raises(PublishError) as info:
        transport.publish(make_request(), retry_policy={"max_retries": 1})
    assert info.value.status is None
    assert info.value.error == "ConnectError"
    assert "network error" in str(info.value)
    assert TOKEN not in str(info.value)


def test_publish_error_is_not_chained_to_the_sdk_error(transport: QStashTransport, mock: respx.MockRouter) -> None:
    route(mock, error(400, "x"))
    with pytest.raises(PublishError) as info:
        transport.publish(make_request())
    # the SDK's exception text holds the raw body; it must not ride along in __context__
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


# --- one client per process ---------------------------------------------------------------


def test_get_transport_reuses_the_client() -> None:
    settings = load_settings({"qstash_token": TOKEN, "qstash_url": URL, "autosend_api_key": KEY})
    first = get_transport(settings)
    second = get_transport(settings)
    assert first.client is second.client
    assert client_for(settings) is first.client
    assert isinstance(first.client, QStash)


def test_new_client_for_another_url_or_token() -> None:
    base = {"qstash_token": TOKEN, "qstash_url": URL, "autosend_api_key": KEY}
    one = get_transport(load_settings(base)).client
    other_url = get_transport(load_settings({**base, "qstash_url": "http://other-qstash.test"})).client
    other_token = get_transport(load_settings({**base, "qstash_token": "another-token-1234"})).client
    assert one is not other_url
    assert one is not other_token
    assert other_url is not other_token


def test_client_talks_to_the_configured_url_without_sdk_retries(mock: respx.MockRouter) -> None:
    settings = load_settings({"qstash_token": TOKEN, "qstash_url": URL + "/", "autosend_api_key": KEY})
    transport = get_transport(settings, clock=FakeClock())
    r = route(mock, httpx.ConnectError("down"), ok("msg_x"))
    # one attempt only: our retry=False, and the SDK's own retry is off
    with pytest.raises(PublishError):
        transport.publish(make_request(), retry=False)
    assert r.call_count == 1
    assert transport.publish(make_request()).message_id == "msg_x"
    assert str(r.calls.last.request.url) == PUBLISH


def test_each_request_gets_what_is_left_of_the_publish_timeout(mock: respx.MockRouter) -> None:
    settings = load_settings(
        {"qstash_token": TOKEN, "qstash_url": URL, "autosend_api_key": KEY, "qstash_publish_timeout": 1.5}
    )
    clock = FakeClock()
    transport = get_transport(settings, clock=clock)

    def slow_500(request: httpx.Request) -> httpx.Response:
        clock.advance(0.5)  # each attempt takes half a second
        return error(503)

    r = mock.post(url__startswith=f"{URL}/v2/").mock(side_effect=slow_500)
    with pytest.raises(PublishError):
        transport.publish(make_request())
    budgets = [call.request.extensions["timeout"]["read"] for call in r.calls]
    assert budgets[0] == pytest.approx(1.5)
    assert budgets == sorted(budgets, reverse=True) and budgets[-1] < 1.0  # shrinking
    assert transport.timeout == 1.5


def test_no_attempt_starts_without_time_to_finish(transport: QStashTransport, mock: respx.MockRouter, clock: FakeClock) -> None:
    def nearly_the_whole_budget(request: httpx.Request) -> httpx.Response:
        clock.advance(1.95)
        return error(500)

    r = mock.post(url__startswith=f"{URL}/v2/").mock(side_effect=nearly_the_whole_budget)
    with pytest.raises(PublishError, match="after 1 attempt"):
        transport.publish(make_request())
    assert r.call_count == 1


def test_max_retries_none_retries_until_the_budget_is_spent(transport: QStashTransport, mock: respx.MockRouter, clock: FakeClock) -> None:
    def slow_500(request: httpx.Request) -> httpx.Response:
        clock.advance(0.1)
        return error(500)

    start = clock.now()
    r = mock.post(url__startswith=f"{URL}/v2/").mock(side_effect=slow_500)
    with pytest.raises(PublishError):
        transport.publish(make_request(), retry_policy={"max_retries": None, "interval_step": 0.1})
    assert r.call_count > 4  # more than Celery's default of 3 retries
    assert clock.now() - start <= 2.0


def test_a_malformed_request_is_not_retried(transport: QStashTransport, mock: respx.MockRouter) -> None:
    r = route(mock, httpx.LocalProtocolError("illegal header value"), ok())
    with pytest.raises(PublishError, match="after 1 attempt"):
        transport.publish(make_request())
    assert r.call_count == 1


def test_a_secret_is_scrubbed_before_the_text_is_shortened(transport: QStashTransport, mock: respx.MockRouter) -> None:
    route(mock, error(400, "x" * 480 + KEY + "y" * 200))
    with pytest.raises(PublishError) as info:
        transport.publish(make_request())
    assert KEY[:8] not in str(info.value) and KEY[:8] not in (info.value.error or "")


def test_transport_secrets_come_from_settings() -> None:
    settings = load_settings({"qstash_token": TOKEN, "qstash_url": URL, "autosend_api_key": KEY})
    assert set(get_transport(settings)._secrets) == {TOKEN, KEY}


# --- the SDK's HTTP client, configured for publishing ------------------------------------


def test_get_transport_is_one_per_settings_and_new_with_a_clock() -> None:
    settings = load_settings({"qstash_token": TOKEN, "qstash_url": URL, "autosend_api_key": KEY})
    assert get_transport(settings) is get_transport(settings)
    clock = FakeClock()
    assert get_transport(settings, clock=clock).clock is clock
    other = load_settings({"qstash_token": TOKEN, "qstash_url": URL, "autosend_api_key": KEY,
                           "qstash_publish_timeout": 7})
    assert get_transport(other).timeout == 7


def test_the_body_goes_out_as_the_sdks_publish_json_sends_it(mock: respx.MockRouter) -> None:
    """The transport hands the SDK the body it serialised once; the request is the
    one ``publish_json``/``enqueue_json`` would make."""
    settings = load_settings({"qstash_token": TOKEN, "qstash_url": URL, "autosend_api_key": KEY})
    transport = get_transport(settings)
    r = route(mock, ok(), ok(), ok(), ok())
    body = {"to": {"email": "jané@example.com"}, "from": {"email": "shop@example.com"},
            "subject": "Ünïcode ✉", "text": "x"}
    for queue in (None, "emails"):
        request = make_request(body=body, queue=queue, delay=None if queue else 30)
        transport.publish(request)
        ours = r.calls.last.request
        sdk = client_for(settings).message
        if queue:
            sdk.enqueue_json(queue=queue, url=request.url, body=body)
        else:
            sdk.publish_json(url=request.url, body=body, delay=30)
        theirs = r.calls.last.request
        assert ours.content == theirs.content
        assert ours.headers["Content-Type"] == theirs.headers["Content-Type"] == "application/json"
        assert ours.url == theirs.url


def test_the_client_keeps_a_cookie_an_answer_sets_and_sends_it_back(mock: respx.MockRouter) -> None:
    settings = load_settings({"qstash_token": TOKEN, "qstash_url": URL, "autosend_api_key": KEY})
    transport = get_transport(settings)
    r = route(
        mock,
        httpx.Response(200, json={"messageId": "m1"}, headers={"Set-Cookie": "lb=node-7; Path=/"}),
        ok("m2"),
    )
    transport.publish(make_request(task_id="c1"))
    transport.publish(make_request(task_id="c2"))
    assert "cookie" not in r.calls[0].request.headers
    assert r.calls[1].request.headers["cookie"] == "lb=node-7"
    client = client_for(settings).http._client
    client.cookies.clear()
    assert not client.cookies


def test_a_parsed_url_is_reused_and_equals_httpxs_own(mock: respx.MockRouter) -> None:
    from celery_qstash.publish.transports.qstash import _parsed_url

    text = f"{URL}/v2/publish/https://api.autosend.com/v1/mails/send?x=1#f"
    assert _parsed_url(text) is _parsed_url(text)
    assert _parsed_url(text) == httpx.URL(text)
    assert str(_parsed_url(text)) == str(httpx.URL(text))


EXIT_SCRIPT = '''
import atexit, json, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

closed = threading.Event()

class QStashLike(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client's pool keeps the connection

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"messageId": "msg_1"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def finish(self):  # the client closed its end
        super().finish()
        closed.set()

    def log_message(self, *args):
        pass

def report():
    print("closed" if closed.wait(3) else "left open")

atexit.register(report)  # registered first, so it runs last: after celery-qstash's own

server = ThreadingHTTPServer(("127.0.0.1", 0), QStashLike)
threading.Thread(target=server.serve_forever, daemon=True).start()

from celery import Celery
from celery_qstash import Email, QStashTask

app = Celery("exit", set_as_current=True)
app.conf.update(qstash_url=f"http://127.0.0.1:{server.server_port}", qstash_token="t",
                autosend_api_key="k")

@app.task(base=QStashTask, name="exit.welcome")
def welcome():
    return Email(to="a@example.com", from_="b@example.com", subject="Hi", text="Hi")

print(welcome.delay().message_id)
'''


def test_the_cached_client_closes_its_connections_at_exit(tmp_path: Any) -> None:
    # Left to the garbage collector at exit, a pooled keep-alive connection is reported
    # as "ResourceWarning: unclosed socket" (a dozen of them at the end of this suite).
    import subprocess
    import sys

    script = tmp_path / "exit_publish.py"
    script.write_text(EXIT_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["msg_1", "closed"]
