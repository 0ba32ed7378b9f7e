"""The callback receiver's core and adapters, with requests signed as QStash signs them.

The SDK's ``Receiver`` checks ``exp``/``nbf`` against the real clock, so tokens are
issued at ``time.time()`` (or far in the past, for the expired case).
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.signals import task_failure, task_retry, task_success

from celery_qstash import DeliveryFailed, Email, QStashTask
from celery_qstash.clock import FakeClock
from celery_qstash.devserver import DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY
from celery_qstash.local.emulator.signing import sign
from celery_qstash.receiver import (
    CallbackReceiver,
    MemoryLedger,
    ReceivedRequest,
    ReceiverResponse,
    asgi_app,
    fastapi_route,
    flask_route,
    wsgi_app,
)
from celery_qstash.receiver.adapters import ReceiverASGI
from celery_qstash.signals import email_delivered, email_failed

URL = "https://app.example/qstash/callback"


class Recorder:
    """Every hook the receiver can fire, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def __call__(self, name: str) -> Any:
        def receiver(sender: Any = None, **kwargs: Any) -> None:
            self.events.append((name, {"sender": sender, **kwargs}))

        return receiver


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    hooks = {
        "task_success": (task_success, rec("task_success")),
        "task_failure": (task_failure, rec("task_failure")),
        "task_retry": (task_retry, rec("task_retry")),
        "email_delivered": (email_delivered, rec("email_delivered")),
        "email_failed": (email_failed, rec("email_failed")),
    }
    for signal, fn in hooks.values():
        signal.connect(fn, weak=False)
    yield rec
    for signal, fn in hooks.values():
        signal.disconnect(fn)


@pytest.fixture
def cb_app(app: Celery, recorder: Recorder) -> Celery:
    app.conf.qstash_current_signing_key = DEV_CURRENT_SIGNING_KEY
    app.conf.qstash_next_signing_key = DEV_NEXT_SIGNING_KEY

    class Tracked(QStashTask):  # type: ignore[misc]
        def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
            recorder.events.append(("on_success", {
                "retval": retval, "task_id": task_id, "request_id": self.request.id,
            }))

        def on_failure(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
            recorder.events.append(("on_failure", {"exc": exc, "task_id": task_id}))

        def on_retry(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
            recorder.events.append(("on_retry", {"exc": exc, "task_id": task_id}))

    @app.task(base=Tracked, name="cb.send_welcome", shared=False)
    def send_welcome(user_id: int) -> Email:
        return Email(to="a@example.com", from_="hi@acme.example", subject="Hi", text="Hi")

    return app


def callback_body(
    *,
    status: int = 200,
    response: Any = None,
    retried: int = 0,
    max_retries: int = 3,
    task: str = "cb.send_welcome",
    task_id: str = "welcome-1",
    dlq_id: str | None = None,
) -> dict[str, Any]:
    if response is None:
        response = {"success": True, "data": {"emailId": "em_123", "status": "queued"}}
    body: dict[str, Any] = {
        "status": status,
        "header": {"Content-Type": ["application/json"]},
        "body": base64.b64encode(json.dumps(response).encode()).decode(),
        "retried": retried,
        "maxRetries": max_retries,
        "sourceMessageId": "msg_source",
        "url": "https://api.autosend.com/v1/mails/send",
        "method": "POST",
        "sourceHeader": {
            "Idempotency-Key": [task_id],
            "X-Celery-Task": ["shadowed name"],
            "X-Celery-Task-Name": [task],
        },
        "sourceBody": "",
    }
    if dlq_id is not None:
        body["dlqId"] = dlq_id
    return body


def signed(
    body: Any,
    *,
    url: str = URL,
    key: str = DEV_CURRENT_SIGNING_KEY,
    issued: float | None = None,
    message_id: str = "msg_cb_1",
    signed_body: bytes | None = None,
) -> ReceivedRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    token = sign(key, url, signed_body if signed_body is not None else raw,
                 time.time() if issued is None else issued)
    return ReceivedRequest(
        "POST", url, {"upstash-signature": token, "Upstash-Message-Id": message_id}, raw
    )


def test_a_delivery_fires_on_success_task_success_and_email_delivered_in_order(
    cb_app: Celery, recorder: Recorder
) -> None:
    response = CallbackReceiver(cb_app).handle(signed(callback_body()))

    assert response.status == 200 and response.payload["outcome"] == "delivered"
    assert recorder.names() == ["on_success", "task_success", "email_delivered"]
    on_success, success, delivered = (kw for _, kw in recorder.events)
    data = {"emailId": "em_123", "status": "queued"}
    assert on_success == {"retval": data, "task_id": "welcome-1", "request_id": "welcome-1"}
    assert success["result"] == data and success["sender"].name == "cb.send_welcome"
    assert delivered["email_id"] == "em_123" and delivered["task_id"] == "welcome-1"
    assert delivered["message_id"] == "msg_source"


def test_the_failure_callback_fires_on_failure_task_failure_and_email_failed(
    cb_app: Celery, recorder: Recorder
) -> None:
    body = callback_body(
        status=400, retried=3, dlq_id="1725323658779-0",
        response={"success": False, "error": {"message": "to.email is invalid"}},
    )
    response = CallbackReceiver(cb_app).handle(signed(body))

    assert response.payload["outcome"] == "failed"
    assert recorder.names() == ["on_failure", "task_failure", "email_failed"]
    exc = recorder.events[0][1]["exc"]
    assert isinstance(exc, DeliveryFailed) and exc.status == 400
    assert exc.message == "to.email is invalid"
    failure = recorder.events[1][1]
    assert failure["exception"] is exc and failure["task_id"] == "welcome-1"
    assert failure["einfo"].type is DeliveryFailed and "DeliveryFailed" in failure["einfo"].traceback
    assert recorder.events[2][1]["dlq_id"] == "1725323658779-0"


def test_a_failed_attempt_with_retries_left_is_a_retry(cb_app: Celery, recorder: Recorder) -> None:
    body = callback_body(status=503, retried=0, response={"message": "busy"})
    response = CallbackReceiver(cb_app).handle(signed(body))

    assert response.payload["outcome"] == "retry"
    assert recorder.names() == ["on_retry", "task_retry"]
    assert recorder.events[1][1]["request"].id == "welcome-1"
    assert str(recorder.events[1][1]["reason"]) == "AutoSend answered 503: busy"


def test_the_last_failed_attempt_leaves_the_report_to_the_failure_callback(
    cb_app: Celery, recorder: Recorder
) -> None:
    body = callback_body(status=503, retried=3, max_retries=3)
    assert CallbackReceiver(cb_app).handle(signed(body)).status == 200
    assert recorder.events == []


def test_a_redelivered_callback_fires_once(cb_app: Celery, recorder: Recorder) -> None:
    receiver = CallbackReceiver(cb_app)
    first = receiver.handle(signed(callback_body(), message_id="msg_cb_9"))
    again = receiver.handle(signed(callback_body(), message_id="msg_cb_9"))

    assert first.payload["outcome"] == "delivered"
    assert again.status == 200 and again.payload["outcome"] == "duplicate"
    assert recorder.names().count("email_delivered") == 1


def test_the_ledger_forgets_after_the_window() -> None:
    clock = FakeClock()
    ledger = MemoryLedger(window=600)
    assert ledger.begin("msg_1", clock.now(), lease=30) == "run"
    ledger.finish("msg_1", clock.now())
    assert ledger.begin("msg_1", clock.advance(599), lease=30) == "done"
    assert ledger.begin("msg_1", clock.advance(2), lease=30) == "run"


def test_the_ledger_records_done_only_after_success() -> None:
    """A failed delivery gives its key back (QStash's retry runs); a running one makes a
    concurrent duplicate wait (busy), and an abandoned lease expires by itself."""
    clock = FakeClock()
    ledger = MemoryLedger(window=600)
    assert ledger.begin("k", clock.now(), lease=30) == "run"
    assert ledger.begin("k", clock.now(), lease=30) == "busy"
    ledger.release("k")
    assert ledger.begin("k", clock.now(), lease=30) == "run"
    assert ledger.begin("k", clock.advance(31), lease=30) == "run"  # the lease expired


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(lambda: signed(callback_body(), key="sig_forgedforgedforgedforged1234"), id="forged key"),
        pytest.param(lambda: signed(callback_body(), issued=time.time() - 3600), id="expired"),
        pytest.param(lambda: signed(callback_body(), signed_body=b"{}"), id="other body"),
        pytest.param(
            lambda: ReceivedRequest(
                "POST", URL, {"Upstash-Message-Id": "m"}, json.dumps(callback_body()).encode()
            ),
            id="unsigned",
        ),
        pytest.param(
            lambda: ReceivedRequest(
                "POST", "https://evil.example/qstash/callback",
                dict(signed(callback_body(), url="https://evil.example/qstash/callback").headers),
                json.dumps(callback_body()).encode(),
            ),
            id="signed for another URL",
        ),
    ],
)
def test_a_bad_signature_is_401_and_fires_nothing(
    cb_app: Celery, recorder: Recorder, request_: Any
) -> None:
    cb_app.conf.qstash_callback_url = URL
    response = CallbackReceiver(cb_app, ledger=MemoryLedger()).handle(request_())
    assert response.status == 401
    assert recorder.events == []


def test_a_refused_request_does_not_use_up_its_message_id(cb_app: Celery, recorder: Recorder) -> None:
    receiver = CallbackReceiver(cb_app)
    forged = signed(callback_body(), key="sig_forgedforgedforgedforged1234", message_id="msg_x")
    assert receiver.handle(forged).status == 401
    assert receiver.handle(signed(callback_body(), message_id="msg_x")).status == 200
    assert recorder.names().count("email_delivered") == 1


def test_the_next_signing_key_is_accepted(cb_app: Celery, recorder: Recorder) -> None:
    response = CallbackReceiver(cb_app).handle(signed(callback_body(), key=DEV_NEXT_SIGNING_KEY))
    assert response.status == 200 and "email_delivered" in recorder.names()


def test_the_configured_callback_url_is_accepted_behind_a_proxy(cb_app: Celery, recorder: Recorder) -> None:
    cb_app.conf.qstash_callback_url = URL
    request = signed(callback_body())
    internal = ReceivedRequest("POST", "http://10.0.0.5:8000/qstash/callback",
                               request.headers, request.body)
    assert CallbackReceiver(cb_app).handle(internal).status == 200
    assert CallbackReceiver(cb_app, url="https://other.example/cb").handle(request).status == 401


def test_without_signing_keys_the_receiver_refuses_and_says_what_to_set(
    app: Celery, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    response = CallbackReceiver(app).handle(signed(callback_body()))
    assert response.status == 503
    assert "qstash_current_signing_key" in caplog.text
    assert recorder.events == []


def test_malformed_requests_are_4xx(cb_app: Celery, recorder: Recorder) -> None:
    receiver = CallbackReceiver(cb_app, max_body=10_000)
    assert receiver.handle(signed(b"not json")).status == 400
    assert receiver.handle(signed({"hello": "world"})).status == 400
    get = ReceivedRequest("GET", URL, {}, b"")
    assert receiver.handle(get).status == 405
    big = {"x": "a" * 20_000}
    assert receiver.handle(signed(big)).status == 413
    no_id = signed(callback_body())
    headers = {k: v for k, v in no_id.headers.items() if k.lower() != "upstash-message-id"}
    assert receiver.handle(ReceivedRequest("POST", URL, headers, no_id.body)).status == 400
    assert recorder.events == []


def test_a_message_of_no_task_here_still_sends_our_signals(cb_app: Celery, recorder: Recorder) -> None:
    # The Django email backend publishes as "django.core.mail": no task, no Celery signal.
    body = callback_body(task="django.core.mail", task_id="mail-1")
    response = CallbackReceiver(cb_app).handle(signed(body))
    assert response.status == 200 and response.payload["outcome"] == "delivered"
    assert recorder.names() == ["email_delivered"]
    assert recorder.events[0][1]["sender"] == "django.core.mail"
    assert recorder.events[0][1]["task_id"] == "mail-1"

    failed = callback_body(task="django.core.mail", task_id="mail-2", status=500, dlq_id="d-1")
    assert CallbackReceiver(cb_app).handle(signed(failed, message_id="m2")).status == 200
    assert recorder.names() == ["email_delivered", "email_failed"]


def test_a_message_that_names_no_task_is_acknowledged_and_logged(
    cb_app: Celery, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    body = callback_body()
    body["sourceHeader"] = {"Content-Type": ["application/json"]}
    response = CallbackReceiver(cb_app).handle(signed(body))
    assert response.status == 200 and response.payload["outcome"] == "ignored"
    assert "msg_source" in caplog.text
    assert recorder.events == []


def test_a_handler_that_raises_does_not_stop_the_others(cb_app: Celery, recorder: Recorder) -> None:
    task = cb_app.tasks["cb.send_welcome"]

    def broken(*args: Any) -> None:
        raise RuntimeError("boom")

    task.on_success = broken
    response = CallbackReceiver(cb_app).handle(signed(callback_body()))
    assert response.status == 200
    assert recorder.names() == ["task_success", "email_delivered"]


# -- adapters -------------------------------------------------------------------------


def test_asgi_adapter(cb_app: Celery, recorder: Recorder) -> None:
    from starlette.testclient import TestClient

    request = signed(callback_body(), url="http://testserver/qstash/callback")
    with TestClient(asgi_app(cb_app)) as client:
        ok = client.post("/qstash/callback", content=request.body, headers=dict(request.headers))
        forged = client.post("/qstash/callback", content=request.body,
                             headers={"Upstash-Signature": "x.y.z", "Upstash-Message-Id": "m2"})
    assert ok.status_code == 200 and ok.json()["outcome"] == "delivered"
    assert forged.status_code == 401
    assert recorder.names().count("email_delivered") == 1


class _Meeting:
    """A handler (the adapters' Handles interface) whose deliveries wait for each other
    at a barrier, and count how many ran at once."""

    max_body = 1000

    def __init__(self, parties: int, wait: float) -> None:
        self.barrier = threading.Barrier(parties, timeout=wait)
        self.lock = threading.Lock()
        self.running = self.most = 0
        self.threads: set[str] = set()

    def handle(self, request: ReceivedRequest) -> ReceiverResponse:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.add(threading.current_thread().name)
        try:
            self.barrier.wait()
            met = True
        except threading.BrokenBarrierError:
            met = False
        finally:
            with self.lock:
                self.running -= 1
        return ReceiverResponse(200, {"met": met})


async def _post_at_once(app: Any, count: int) -> list[bool]:
    import asyncio

    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        answers = await asyncio.gather(*(client.post("/", content=b"{}") for _ in range(count)))
    return [a.json()["met"] for a in answers]


@pytest.mark.asyncio
async def test_asgi_concurrency_runs_at_most_n_deliveries_at_once() -> None:
    # Two may run at once: both reach the barrier together.
    pair = _Meeting(parties=2, wait=10)
    assert await _post_at_once(ReceiverASGI(pair, concurrency=2), 2) == [True, True]
    # One at a time (`serve -c 1`, as `celery worker -c 1`): the first waits at the
    # barrier alone until it gives up, and only then does the second start.
    single = _Meeting(parties=2, wait=0.3)
    assert await _post_at_once(ReceiverASGI(single, concurrency=1), 3) == [False] * 3
    assert single.most == 1 and len(single.threads) == 1
    with pytest.raises(ValueError, match="at least 1"):
        ReceiverASGI(single, concurrency=0)


def test_wsgi_adapter(cb_app: Celery, recorder: Recorder) -> None:
    request = signed(callback_body(), url="http://app.internal:8000/hooks/qstash?x=1")
    statuses: list[str] = []
    environ = {
        "REQUEST_METHOD": "POST", "wsgi.url_scheme": "http", "HTTP_HOST": "app.internal:8000",
        "SCRIPT_NAME": "/hooks", "PATH_INFO": "/qstash", "QUERY_STRING": "x=1",
        "CONTENT_LENGTH": str(len(request.body)), "CONTENT_TYPE": "application/json",
        "HTTP_UPSTASH_SIGNATURE": request.headers["upstash-signature"],
        "HTTP_UPSTASH_MESSAGE_ID": "msg_w", "wsgi.input": io.BytesIO(request.body),
    }
    body = b"".join(wsgi_app(cb_app)(environ, lambda status, headers: statuses.append(status)))
    assert statuses == ["200 OK"] and json.loads(body)["outcome"] == "delivered"
    assert "email_delivered" in recorder.names()


def test_fastapi_route(cb_app: Celery, recorder: Recorder) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    web = FastAPI()
    fastapi_route(web, "/qstash/callback", cb_app)
    request = signed(callback_body(), url="http://testserver/qstash/callback")
    client = TestClient(web)
    assert client.post("/qstash/callback", content=request.body,
                       headers=dict(request.headers)).status_code == 200
    assert client.get("/qstash/callback").status_code == 405
    assert "email_delivered" in recorder.names()


def test_flask_route(cb_app: Celery, recorder: Recorder) -> None:
    from flask import Flask

    web = Flask("cb")
    flask_route(web, "/qstash/callback", cb_app)
    request = signed(callback_body(), url="http://localhost/qstash/callback")
    client = web.test_client()
    ok = client.post("/qstash/callback", data=request.body, headers=dict(request.headers))
    bad = client.post("/qstash/callback", data=request.body,
                      headers={"Upstash-Signature": "x", "Upstash-Message-Id": "m3"})
    assert ok.status_code == 200 and bad.status_code == 401
    assert recorder.names().count("email_delivered") == 1


def test_django_view_and_url_include(cb_app: Celery, recorder: Recorder) -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
            INSTALLED_APPS=[], ALLOWED_HOSTS=["testserver"], ROOT_URLCONF=__name__,
        )
        django.setup()
    from django.test import Client
    from django.test.utils import override_settings

    request = signed(callback_body(), url="http://testserver/qstash/callback/")
    with override_settings(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["testserver"]):
        client = Client()
        headers = {"HTTP_UPSTASH_SIGNATURE": request.headers["upstash-signature"],
                   "HTTP_UPSTASH_MESSAGE_ID": "msg_dj"}
        ok = client.post("/qstash/callback/", data=request.body,
                         content_type="application/json", **headers)
        again = client.post("/qstash/callback/", data=request.body,
                            content_type="application/json", **headers)
        forged = client.post("/qstash/callback/", data=request.body,
                             content_type="application/json", HTTP_UPSTASH_SIGNATURE="x.y.z",
                             HTTP_UPSTASH_MESSAGE_ID="msg_dj2")
    assert ok.status_code == 200 and ok.json()["outcome"] == "delivered"
    assert again.json()["outcome"] == "duplicate"
    assert forged.status_code == 401
    assert recorder.names().count("email_delivered") == 1


def _django_urls() -> list[Any]:
    from django.urls import include, path

    return [path("qstash/callback/", include("celery_qstash.contrib.django.urls"))]


def __getattr__(name: str) -> Any:
    # Django reads ``urlpatterns`` from ROOT_URLCONF lazily; building it needs settings.
    if name == "urlpatterns":
        return _django_urls()
    raise AttributeError(name)


# -- qstash_callback_url on every publish -----------------------------------------------


def test_qstash_callback_url_goes_on_every_publish(cb_app: Celery, qstash_mock: Any) -> None:
    cb_app.conf.qstash_callback_url = URL
    cb_app.tasks["cb.send_welcome"].apply_async((1,), shadow="welcome (shadow)")
    headers = qstash_mock["publish"].calls.last.request.headers
    assert headers["Upstash-Callback"] == URL
    assert headers["Upstash-Failure-Callback"] == URL
    # The receiver finds the task by its registered name, whatever the display name.
    assert headers["Upstash-Forward-X-Celery-Task-Name"] == "cb.send_welcome"


def test_a_calls_own_link_wins_and_false_turns_callbacks_off(cb_app: Celery, qstash_mock: Any) -> None:
    cb_app.conf.qstash_callback_url = URL
    task = cb_app.tasks["cb.send_welcome"]
    task.apply_async((1,), link="https://elsewhere.example/ok", link_error=False)
    headers = qstash_mock["publish"].calls.last.request.headers
    assert headers["Upstash-Callback"] == "https://elsewhere.example/ok"
    assert "Upstash-Failure-Callback" not in headers

    task.apply_async((2,), link=False, link_error=False)
    headers = qstash_mock["publish"].calls.last.request.headers
    assert "Upstash-Callback" not in headers and "Upstash-Failure-Callback" not in headers
    assert "Upstash-Forward-X-Celery-Task-Name" not in headers


def test_without_the_setting_nothing_changes(cb_app: Celery, qstash_mock: Any) -> None:
    cb_app.tasks["cb.send_welcome"].delay(1)
    headers = qstash_mock["publish"].calls.last.request.headers
    assert "Upstash-Callback" not in headers and "Upstash-Forward-X-Celery-Task-Name" not in headers


def test_a_callback_url_that_is_not_http_is_a_configuration_error(cb_app: Celery, qstash_mock: Any) -> None:
    from celery_qstash import ConfigurationError

    cb_app.conf.qstash_callback_url = "ftp://app.example/cb"
    with pytest.raises(ConfigurationError, match="qstash_callback_url"):
        cb_app.tasks["cb.send_welcome"].delay(1)
    assert not qstash_mock["publish"].called


def test_the_core_imports_no_web_framework() -> None:
    import subprocess
    import sys

    code = (
        "import sys, celery_qstash.receiver\n"
        "print(sorted(m for m in ('starlette', 'uvicorn', 'django.http', 'flask', 'fastapi')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.strip() == "[]"


def test_signing_keys_are_secrets_and_never_in_repr() -> None:
    from celery_qstash.config import load_settings

    settings = load_settings({"qstash_current_signing_key": "sig_current_S3CRET",
                              "qstash_next_signing_key": "sig_next_S3CRET"})
    assert {"sig_current_S3CRET", "sig_next_S3CRET"} <= set(settings.secrets)
    assert "S3CRET" not in repr(settings)


def test_dev_mode_brings_the_dev_signing_keys() -> None:
    from celery_qstash.config import load_settings

    settings = load_settings({"qstash_dev": True})
    assert (settings.current_signing_key, settings.next_signing_key) == (
        DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY)


@pytest.mark.parametrize(
    ("root_path", "path"),
    [("", "/hooks/qstash"), ("/hooks", "/qstash"), ("/hooks", "/hooks/qstash")],
)
def test_the_asgi_url_includes_the_mount_point_once(root_path: str, path: str) -> None:
    from celery_qstash.receiver.adapters import _scope_url

    scope = {"scheme": "https", "root_path": root_path, "path": path, "query_string": b"a=1"}
    assert _scope_url(scope, {"host": "app.example"}) == "https://app.example/hooks/qstash?a=1"


def test_eager_mode_reports_the_delivery_as_the_receiver_would(cb_app: Celery, recorder: Recorder) -> None:
    cb_app.conf.task_always_eager = True
    cb_app.conf.qstash_callback_url = URL
    result = cb_app.tasks["cb.send_welcome"].apply_async((1,), task_id="welcome-eager")

    assert recorder.names() == ["on_success", "task_success", "email_delivered"]
    delivered = recorder.events[2][1]
    assert delivered["task_id"] == "welcome-eager"
    assert delivered["email_id"] == result.get()["emailId"]


def test_eager_mode_without_callbacks_sends_no_email_delivered(cb_app: Celery, recorder: Recorder) -> None:
    cb_app.conf.task_always_eager = True
    cb_app.tasks["cb.send_welcome"].delay(1)
    cb_app.conf.qstash_callback_url = URL
    cb_app.tasks["cb.send_welcome"].apply_async((2,), link=False)
    assert "email_delivered" not in recorder.names()
    assert recorder.names().count("task_success") == 2


def test_a_broken_setting_is_a_503_not_a_500(cb_app: Celery, recorder: Recorder,
                                             caplog: pytest.LogCaptureFixture) -> None:
    cb_app.conf.qstash_callback_url = "not-a-url"
    response = CallbackReceiver(cb_app).handle(signed(callback_body()))
    assert response.status == 503
    assert "qstash_callback_url" in caplog.text
    assert recorder.events == []


def test_a_replayed_signature_under_another_message_id_fires_nothing(
    cb_app: Celery, recorder: Recorder
) -> None:
    # Upstash-Message-Id is not covered by the signature: a captured callback replayed
    # within its 5-minute validity with a fresh message id must still be a duplicate.
    receiver = CallbackReceiver(cb_app)
    original = signed(callback_body(), message_id="msg_cb_a")
    replay = ReceivedRequest(
        "POST", URL,
        {"upstash-signature": original.header("Upstash-Signature") or "",
         "Upstash-Message-Id": "msg_cb_forged"},
        original.body,
    )
    assert receiver.handle(original).payload["outcome"] == "delivered"
    again = receiver.handle(replay)
    assert again.status == 200 and again.payload["outcome"] == "duplicate"
    assert recorder.names().count("email_delivered") == 1
    assert recorder.names().count("on_success") == 1


def test_a_redelivery_signed_anew_is_still_deduplicated_on_its_message_id(
    cb_app: Celery, recorder: Recorder
) -> None:
    # QStash signs each delivery attempt afresh (new jti): the message id still matches.
    receiver = CallbackReceiver(cb_app)
    receiver.handle(signed(callback_body(), message_id="msg_cb_b"))
    again = receiver.handle(signed(callback_body(), message_id="msg_cb_b"))
    assert again.payload["outcome"] == "duplicate"
    assert recorder.names().count("email_delivered") == 1


def test_flask_route_stops_reading_a_chunked_body_past_the_limit(cb_app: Celery) -> None:
    # No Content-Length (chunked): the whole body used to be read into memory, unsigned,
    # before the size check.
    from flask import Flask
    from werkzeug.test import EnvironBuilder

    class Endless(io.RawIOBase):
        def __init__(self) -> None:
            self.served = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            if self.served >= 50_000_000:
                return 0
            size = min(len(buffer), 65536)
            buffer[:size] = b"x" * size
            self.served += size
            return size

    web = Flask("cb")
    flask_route(web, "/qstash/callback", cb_app, max_body=1000)
    environ = EnvironBuilder(path="/qstash/callback", method="POST", headers={
        "Transfer-Encoding": "chunked", "Upstash-Signature": "x"}).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    source = Endless()
    environ["wsgi.input"] = io.BufferedReader(source)
    environ["wsgi.input_terminated"] = True
    statuses: list[str] = []

    body = b"".join(web.wsgi_app(environ, lambda status, headers: statuses.append(status)))

    assert statuses[0].startswith("413") and b"1000" in body
    assert source.served < 1_000_000
