"""The webhook endpoint's checks, one by one, on plain requests (no server), and its
adapters (WSGI, Flask, Django) on the same requests."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from celery import Celery

from celery_qstash.clock import FakeClock
from celery_qstash.config import load_settings
from celery_qstash.errors import ConfigurationError
from celery_qstash.receiver import MemoryLedger, ReceivedRequest
from celery_qstash.signals import email_event
from celery_qstash.webhooks import (
    MemoryEventStore,
    WebhookReceiver,
    parse_event,
    signature,
    signed_request,
    wsgi_app,
)

NOW = 1_800_000_000.0
SECRET = "whsec_test"
DATA = {"emailId": "64f1a2b3c4d5e6f7a8b9c0d1", "from": "hi@acme.example",
        "to": {"email": "jane@example.com", "name": "Jane"}, "subject": "Hi", "test": False}


@pytest.fixture
def app() -> Celery:
    app = Celery("endpoint", set_as_current=False)
    app.conf.autosend_webhook_secret = SECRET
    return app


@pytest.fixture
def seen() -> Iterator[list[dict[str, Any]]]:
    found: list[dict[str, Any]] = []

    def record(sender: Any = None, **kwargs: Any) -> None:
        found.append({"sender": sender, **kwargs})

    email_event.connect(record, weak=False)
    yield found
    email_event.disconnect(record)


def receiver(app: Celery, **options: Any) -> WebhookReceiver:
    options.setdefault("clock", FakeClock(NOW))
    options.setdefault("store", MemoryEventStore())
    options.setdefault("ledger", MemoryLedger())
    return WebhookReceiver(app, lookup_logs=False, **options)


def request(event: str = "email.delivered", data: dict[str, Any] | None = None, *,
            secret: str = SECRET, delivery_id: str = "d-1", **headers: str) -> ReceivedRequest:
    body, signed = signed_request(event, data or DATA, secret, delivery_id=delivery_id,
                                  created_at=datetime.fromtimestamp(NOW, timezone.utc))
    return ReceivedRequest("POST", "https://app.example/hooks", {**signed, **headers}, body)


def test_a_valid_event_fires_once_with_anymails_fields(app: Celery, seen: list[Any]) -> None:
    store = MemoryEventStore()
    store.link("email:" + DATA["emailId"], "task-7", "app.send_welcome")
    hook = receiver(app, store=store)
    answer = hook.handle(request("email.opened"))
    assert (answer.status, answer.payload["taskId"]) == (200, "task-7")
    [one] = seen
    assert one["sender"] == "autosend"    # no such task in this app: the name only
    assert (one["event"], one["email_id"], one["task_id"], one["recipient"]) == (
        "email.opened", DATA["emailId"], "task-7", "jane@example.com")
    assert one["timestamp"] == datetime.fromtimestamp(NOW, timezone.utc)
    assert [e.event for e in store.events(DATA["emailId"])] == ["email.opened"]


@pytest.mark.parametrize(("change", "status"), [
    ({"method": "GET"}, 405),
    ({"body": b"x" * 300_000}, 413),
])
def test_method_and_size(app: Celery, seen: list[Any], change: dict[str, Any], status: int) -> None:
    base = request()
    bad = ReceivedRequest(change.get("method", "POST"), base.url, base.headers,
                          change.get("body", base.body))
    assert receiver(app).handle(bad).status == status
    assert seen == []


def test_no_secret_is_a_503_naming_the_setting(seen: list[Any],
                                                caplog: pytest.LogCaptureFixture) -> None:
    bare = Celery("no-secret", set_as_current=False)
    with caplog.at_level(logging.ERROR, "celery_qstash.webhooks"):
        assert receiver(bare).handle(request()).status == 503
    assert "autosend_webhook_secret" in caplog.text and seen == []


def test_rotation_accepts_either_secret_and_the_setting_takes_a_list(app: Celery) -> None:
    app.conf.autosend_webhook_secret = ["whsec_new", SECRET]
    hook = receiver(app)
    assert hook.handle(request(secret="whsec_new", delivery_id="a")).status == 200
    assert hook.handle(request(secret=SECRET, delivery_id="b")).status == 200
    assert hook.handle(request(secret="whsec_old", delivery_id="c")).status == 401


@pytest.mark.parametrize(("header", "value", "status"), [
    ("X-Webhook-Signature", "", 401),
    ("X-Webhook-Signature", "zz" * 32, 401),
    ("X-Webhook-Timestamp", "", 400),
    ("X-Webhook-Timestamp", "yesterday", 400),
    ("X-Webhook-Timestamp", str(int(NOW * 1000) + 301_000), 400),   # from the future too
    ("X-Webhook-Timestamp", str(int(NOW) - 299), 200),              # seconds, within 5 min
    ("X-Webhook-Delivery-Id", "", 400),
    ("X-Webhook-Event", "email.bounced", 400),                      # the unsigned header lies
])
def test_each_header_is_checked(app: Celery, seen: list[Any], header: str, value: str,
                                status: int) -> None:
    assert receiver(app).handle(request(**{header: value})).status == status
    assert len(seen) == (1 if status == 200 else 0)


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"type": "email.delivered"}',
                                  b'{"type": "x", "createdAt": "2027-01-01", "data": {}}',
                                  b'{"type": "email.sent", "createdAt": "soon", "data": {}}',
                                  b"[" * 100_000])
def test_a_signed_but_malformed_body_is_a_400(app: Celery, seen: list[Any], body: bytes) -> None:
    base = request()
    headers = {**base.headers, "X-Webhook-Signature": signature(body, SECRET)}
    headers.pop("X-Webhook-Event")
    answer = receiver(app).handle(ReceivedRequest("POST", base.url, headers, body))
    assert answer.status == 400 and seen == []


def test_the_older_envelope_is_read() -> None:
    event = parse_event({"event": "email.bounced", "timestamp": int(NOW),
                         "data": {"emailId": "e1", "to": "x@example.com",
                                  "bounce": {"type": "Transient", "diagnosticCode": "452"}}})
    assert (event.event, event.recipient, event.bounce_type, event.reason) == (
        "email.bounced", "x@example.com", "Transient", "452")
    assert event.timestamp == datetime.fromtimestamp(NOW, timezone.utc)


def test_a_handler_that_raises_is_logged_and_the_answer_is_still_200(
        app: Celery, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    def broken(sender: Any = None, **kwargs: Any) -> None:
        raise RuntimeError("handler bug")

    def fine(sender: Any = None, **kwargs: Any) -> None:
        calls.append(kwargs["event"])

    email_event.connect(broken, weak=False)
    email_event.connect(fine, weak=False)
    try:
        hook = receiver(app)
        with caplog.at_level(logging.ERROR):
            first = hook.handle(request())
        again = hook.handle(request())       # AutoSend does not send it again: we said 200
    finally:
        email_event.disconnect(broken)
        email_event.disconnect(fine)
    assert (first.status, again.status) == (200, 200)
    assert calls == ["email.delivered"] and "handler bug" in caplog.text


def test_a_delivery_being_handled_elsewhere_is_a_409(app: Celery, seen: list[Any]) -> None:
    ledger = MemoryLedger()
    assert ledger.begin("autosend:delivery:d-1", NOW, 30) == "run"   # another process
    answer = receiver(app, ledger=ledger).handle(request())
    assert (answer.status, answer.headers["Retry-After"]) == (409, "5") and seen == []
    # The body's key was given back: once the other one fails, AutoSend's retry runs.
    ledger.release("autosend:delivery:d-1")
    assert receiver(app, ledger=ledger).handle(request()).status == 200


class BrokenStore(MemoryEventStore):
    def add(self, event: Any) -> None:
        raise ConnectionError("redis is down")


def test_a_store_that_cannot_be_reached_is_a_503_and_is_retried(app: Celery,
                                                                 seen: list[Any]) -> None:
    ledger = MemoryLedger()
    assert receiver(app, ledger=ledger, store=BrokenStore()).handle(request()).status == 503
    assert seen == []
    assert receiver(app, ledger=ledger).handle(request()).status == 200   # the retry runs
    assert len(seen) == 1


def test_the_secret_never_appears_in_settings_repr_or_answers(app: Celery) -> None:
    settings = load_settings(app.conf)
    assert SECRET not in repr(settings) and SECRET in settings.secrets
    answer = receiver(app).handle(request(secret="wrong"))
    assert SECRET not in answer.content.decode()


def test_the_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOSEND_WEBHOOK_SECRET", "whsec_a, whsec_b")
    assert load_settings(None).webhook_secrets == ("whsec_a", "whsec_b")
    with pytest.raises(ConfigurationError, match="autosend_webhook_secret"):
        load_settings({"autosend_webhook_secret": 42})


def test_the_wsgi_adapter_serves_the_same_checks(app: Celery, seen: list[Any]) -> None:
    hook = wsgi_app(app, clock=FakeClock(NOW), store=MemoryEventStore(), ledger=MemoryLedger(),
                    lookup_logs=False)
    good = request()
    statuses: list[str] = []

    def call(req: ReceivedRequest) -> bytes:
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/hooks", "SERVER_NAME": "app",
                   "SERVER_PORT": "80", "wsgi.url_scheme": "http", "CONTENT_TYPE":
                   "application/json", "CONTENT_LENGTH": str(len(req.body)),
                   "wsgi.input": io.BytesIO(req.body),
                   **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in req.headers.items()}}
        return b"".join(hook(environ, lambda status, headers: statuses.append(status)))

    call(good)
    call(request(secret="forged", delivery_id="d-2"))
    assert statuses == ["200 OK", "401 Unauthorized"] and len(seen) == 1


def test_the_flask_route(app: Celery, seen: list[Any]) -> None:
    flask = pytest.importorskip("flask")
    from celery_qstash.webhooks import flask_route

    web = flask.Flask("hooks")
    flask_route(web, "/hooks", app, clock=FakeClock(NOW), store=MemoryEventStore(),
                ledger=MemoryLedger(), lookup_logs=False)
    good = request()
    answer = web.test_client().post("/hooks", data=good.body, headers=dict(good.headers))
    assert answer.status_code == 200 and [s["event"] for s in seen] == ["email.delivered"]


def test_the_django_url_include(app: Celery, seen: list[Any],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(INSTALLED_APPS=[], ALLOWED_HOSTS=["testserver"],
                           ROOT_URLCONF=__name__)
        django.setup()
    from django.test import Client
    from django.test.utils import override_settings

    # The view reads Celery's current app; the clock is the real one, so sign for now.
    app.set_current()
    good = signed_request("email.delivered", DATA, SECRET, delivery_id="dj-1")
    headers = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in good[1].items()
               if k != "Content-Type"}
    with override_settings(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["testserver"]):
        client = Client()
        ok = client.post("/autosend/webhooks/", data=good[0], content_type="application/json",
                         **headers)
        again = client.post("/autosend/webhooks/", data=good[0],
                            content_type="application/json", **headers)
        forged = client.post("/autosend/webhooks/", data=good[0],
                             content_type="application/json",
                             **{**headers, "HTTP_X_WEBHOOK_SIGNATURE": "00"})
    assert (ok.status_code, again.json()["outcome"], forged.status_code) == (
        200, "duplicate", 401)
    assert [s["event"] for s in seen] == ["email.delivered"]


def __getattr__(name: str) -> Any:
    # Django reads ``urlpatterns`` from ROOT_URLCONF lazily; building it needs settings.
    if name == "urlpatterns":
        from django.urls import include, path

        return [path("autosend/webhooks/",
                     include("celery_qstash.contrib.django.webhook_urls"))]
    raise AttributeError(name)
