"""The receiver answers 4xx to everything malformed, signed or not, through every adapter
(issue 23, item 5): hypothesis fuzzes the token's claims, the headers and the body
against the core and against ASGI, WSGI, Flask, FastAPI and Django. Never a 500, and
nothing runs: no task body, no hook of an ordinary task, no Celery signal.

Well-formed deliveries are out of scope here (``test_receiver.py``, ``test_deferred.py``):
every body drawn is broken somewhere, or names what this receiver must not run.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from celery import Celery
from celery.signals import task_prerun, task_success
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celery_qstash import DeferredTask
from celery_qstash.clock import FakeClock
from celery_qstash.devserver import DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY
from celery_qstash.publish.message import MESSAGE_KIND, task_message
from celery_qstash.receiver import (
    CallbackReceiver,
    MemoryLedger,
    ReceivedRequest,
    asgi_app,
    flask_route,
    wsgi_app,
)

NOW = 1_800_000_000
PATH = "/qstash/callback"
URL = f"http://testserver{PATH}"
RAN: list[str] = []

# -- what is drawn ----------------------------------------------------------------------

JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                      st.floats(allow_nan=False), st.text(max_size=20))
JSON = st.recursive(JSON_LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
#: What the fuzzer puts where a claim or a field belongs: any JSON, and the odd numbers.
ODD = st.one_of(JSON, st.sampled_from([float("inf"), float("-inf"), 1e400, 2**63, -1, 0, "",
                                       "9" * 5000, "Upstash", URL]))


#: What an HTTP client can put in a header value (every adapter's test client refuses
#: control characters; servers hand the rest over as latin-1).
HEADER_TEXT = st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f")


def _hash(body: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode().rstrip("=")


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@st.composite
def task_bodies(draw: st.DrawFn) -> Any:
    """A task message that must not run: another name, or this one broken somewhere."""
    name = draw(st.sampled_from(["fuzz.deferred", "fuzz.plain", "fuzz.unknown", "celery.ping"]))
    message: dict[str, Any] = task_message(name, "t-1", [1], {"x": 2})
    breakers = draw(st.lists(st.sampled_from(
        ["drop", "retype", "unknown", "kind", "delivery", "canvas"]),
        min_size=1 if name == "fuzz.deferred" else 0, max_size=3))
    for breaker in breakers:
        field = draw(st.sampled_from(["id", "task", "args", "kwargs", "retries"]))
        if breaker == "drop":
            message.pop(field, None)
        elif breaker == "retype":
            message[field] = draw(ODD.filter(lambda v, f=field: not _fits(f, v)))
        elif breaker == "unknown":
            message[draw(st.sampled_from(["__class__", "eval", "Task", "x"]))] = draw(JSON)
        elif breaker == "kind":
            message["kind"] = draw(st.sampled_from([MESSAGE_KIND + "x", "celery-qstash/task@2",
                                                     None, 1]))
        elif breaker == "delivery":
            message["delivery"] = draw(st.sampled_from(["", None, 7, ["x"]]))
        else:
            message[draw(st.sampled_from(["callbacks", "errbacks", "chain"]))] = draw(
                st.one_of(st.text(max_size=5), st.lists(JSON_LEAF, min_size=1, max_size=2)))
    for field in draw(st.lists(st.sampled_from(["eta", "expires", "retry_budget", "schedule",
                                                 "headers", "ignore_result"]), max_size=3)):
        message[field] = draw(st.one_of(ODD, st.sampled_from(
            ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "2020-13-45"])))
    return message


def _fits(field: str, value: Any) -> bool:
    kinds = {"id": str, "task": str, "args": list, "kwargs": dict, "retries": int}
    return isinstance(value, kinds[field]) and not isinstance(value, bool)


@st.composite
def callback_bodies(draw: st.DrawFn) -> Any:
    """A QStash callback naming an ordinary task of the app, or odd in any field."""
    inner = draw(st.one_of(JSON.map(lambda v: json.dumps(v).encode()), st.binary(max_size=40),
                           st.integers(60, 3000).map(_deep)))
    body: dict[str, Any] = {
        "status": draw(st.one_of(st.sampled_from([200, 500, 400]), ODD)),
        "body": draw(st.one_of(st.just(base64.b64encode(inner).decode()), ODD)),
        "retried": draw(st.one_of(st.integers(0, 5), ODD)),
        "maxRetries": draw(st.one_of(st.integers(0, 5), ODD)),
        "sourceMessageId": draw(st.one_of(st.just("msg_src"), ODD)),
        "header": draw(st.one_of(st.just({"Upstash-NonRetryable-Error": ["true"]}), ODD)),
        "sourceHeader": draw(st.one_of(
            st.just({"Idempotency-Key": ["t-9"], "X-Celery-Task-Name": ["fuzz.plain"]}),
            st.just({"Idempotency-Key": [None], "X-Celery-Task-Name": [["fuzz.plain"]]}),
            ODD)),
    }
    if draw(st.booleans()):
        body["dlqId"] = draw(ODD)
    return body


BODIES = st.one_of(
    st.binary(max_size=64),
    st.integers(2, 6000).map(_deep),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"{", b"\xff\xfe{}", b'{"a": NaN}', b"1e99999", b'"\\ud800"']),
    task_bodies().map(lambda v: json.dumps(v).encode()),
    callback_bodies().map(lambda v: json.dumps(v).encode()),
)


@st.composite
def tokens(draw: st.DrawFn, body: bytes) -> str | None:
    """``Upstash-Signature``: none, junk, or a JWT whose every claim may be wrong."""
    kind = draw(st.sampled_from(["valid"] * 5 + ["claims"] * 3 + ["junk", "none", "alg-none"]))
    if kind == "none":
        return None
    if kind == "junk":
        return draw(st.one_of(st.text(HEADER_TEXT, max_size=40), st.sampled_from(
            ["a.b.c", "..", "e30.e30.", "eyJhbGciOiJIUzI1NiJ9.W10.x", "x" * 5000])))
    valid: dict[str, Any] = {"iss": "Upstash", "sub": URL, "exp": NOW + 300, "nbf": NOW,
                             "iat": NOW, "jti": "jwt_1", "body": _hash(body)}
    if kind == "valid":  # most draws reach the body: that is where handlers could fail
        return _encode(valid, draw(st.sampled_from([DEV_CURRENT_SIGNING_KEY,
                                                     DEV_NEXT_SIGNING_KEY])))
    claims = {}
    for name, good in valid.items():
        choice = draw(st.sampled_from(["good", "good", "good", "odd", "missing"]))
        if choice == "good":
            claims[name] = good
        elif choice == "odd":
            claims[name] = draw(ODD)
    if kind == "alg-none":
        return _encode(claims, None)
    return _encode(claims, draw(st.sampled_from(
        [DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY, "sig_" + "o" * 28])))


def _encode(claims: dict[str, Any], key: str | None) -> str:
    """A JWT of any claims (PyJWT's ``encode`` refuses a non-string ``iss``; its JWS layer
    signs whatever bytes it is given); ``Infinity``/``NaN`` as Python's json writes them."""
    payload = json.dumps(claims, allow_nan=True).encode()
    if key is None:
        return jwt.api_jws.encode(payload, None, algorithm="none")  # type: ignore[arg-type]
    return jwt.api_jws.encode(payload, key, algorithm="HS256")


@st.composite
def requests(draw: st.DrawFn) -> ReceivedRequest:
    body = draw(BODIES)
    headers: dict[str, str] = {}
    token = draw(tokens(body))
    if token is not None:
        headers["Upstash-Signature"] = token
    message_id = draw(st.one_of(st.none(), st.just("msg_1"), st.text(HEADER_TEXT, max_size=30)))
    if message_id is not None:
        headers["Upstash-Message-Id"] = message_id
    if draw(st.booleans()):
        headers["Upstash-Retried"] = draw(st.sampled_from(["-1", "x", "9" * 5000, "3", ""]))
    method = draw(st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]))
    return ReceivedRequest(method, URL, headers, body)


# -- the app under attack ---------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_app() -> Iterator[Celery]:
    app = Celery("fuzz", set_as_current=False)
    app.conf.update(qstash_current_signing_key=DEV_CURRENT_SIGNING_KEY,
                    qstash_next_signing_key=DEV_NEXT_SIGNING_KEY,
                    qstash_callback_url=URL, qstash_token="t", task_always_eager=False)

    @app.task(base=DeferredTask, name="fuzz.deferred", shared=False)
    def deferred(*args: Any, **kwargs: Any) -> None:
        RAN.append("fuzz.deferred")

    class Plain(app.Task):  # type: ignore[misc,name-defined]
        def on_success(self, *args: Any) -> None:
            RAN.append("fuzz.plain.on_success")

        def on_failure(self, *args: Any) -> None:
            RAN.append("fuzz.plain.on_failure")

    @app.task(base=Plain, name="fuzz.plain", shared=False)
    def plain(*args: Any, **kwargs: Any) -> None:
        RAN.append("fuzz.plain")

    def ran(sender: Any = None, **kwargs: Any) -> None:
        RAN.append(f"signal from {getattr(sender, 'name', sender)}")

    task_prerun.connect(ran, weak=False)
    task_success.connect(ran, weak=False)
    yield app
    task_prerun.disconnect(ran)
    task_success.disconnect(ran)


def _options() -> dict[str, Any]:
    return {"clock": FakeClock(NOW), "ledger": MemoryLedger()}


def _held(status: int) -> None:
    assert 200 <= status < 500, status
    assert RAN == [], RAN


FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(request=requests())
def test_the_core_answers_4xx_and_runs_nothing(fuzz_app: Celery,
                                               request: ReceivedRequest) -> None:
    RAN.clear()
    _held(CallbackReceiver(fuzz_app, **_options()).handle(request).status)


# -- each adapter, as its framework hands it a request ------------------------------------

Send = Callable[[ReceivedRequest], int]


def _asgi(app: Celery) -> Send:
    endpoint = asgi_app(app, **_options())

    def send(request: ReceivedRequest) -> int:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": request.body, "more_body": False}

        async def collect(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": request.method, "scheme": "http", "path": PATH,
                 "root_path": "", "query_string": b"",
                 "headers": [(b"host", b"testserver"),
                             *((k.lower().encode(), v.encode("latin-1"))
                               for k, v in request.headers.items())]}
        asyncio.run(endpoint(scope, receive, collect))
        return int(sent[0]["status"])

    return send


def _wsgi(app: Celery) -> Send:
    endpoint = wsgi_app(app, **_options())

    def send(request: ReceivedRequest) -> int:
        statuses: list[str] = []
        environ = {"REQUEST_METHOD": request.method, "wsgi.url_scheme": "http",
                   "HTTP_HOST": "testserver", "PATH_INFO": PATH, "SCRIPT_NAME": "",
                   "CONTENT_LENGTH": str(len(request.body)), "wsgi.input": io.BytesIO(request.body),
                   **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in request.headers.items()}}
        b"".join(endpoint(environ, lambda status, headers: statuses.append(status)))
        return int(statuses[0].split()[0])

    return send


def _flask(app: Celery) -> Send:
    from flask import Flask

    web = Flask("fuzz")
    flask_route(web, PATH, app, **_options())
    client = web.test_client()

    def send(request: ReceivedRequest) -> int:
        return int(client.open(PATH, method=request.method, data=request.body,
                               headers=dict(request.headers)).status_code)

    return send


def _fastapi(app: Celery) -> Send:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from celery_qstash.receiver import fastapi_route

    web = FastAPI()
    fastapi_route(web, PATH, app, **_options())
    client = TestClient(web)

    def send(request: ReceivedRequest) -> int:
        headers = {k: v.encode("latin-1") for k, v in request.headers.items()}
        return int(client.request(request.method, PATH, content=request.body,
                                  headers=headers).status_code)

    return send


def _django(app: Celery) -> Send:
    import django
    from django.conf import settings as django_settings

    if not django_settings.configured:
        django_settings.configure(
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
            INSTALLED_APPS=[], ALLOWED_HOSTS=["testserver"], ROOT_URLCONF=__name__,
        )
        django.setup()
    from django.test import RequestFactory
    from django.test.utils import override_settings

    from celery_qstash.contrib.django.receiver import make_view

    view = make_view(app, **_options())
    factory = RequestFactory()

    def send(request: ReceivedRequest) -> int:
        meta = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in request.headers.items()}
        built = factory.generic(request.method, PATH, data=request.body,
                                content_type="application/json", **meta)
        with override_settings(ALLOWED_HOSTS=["testserver"]):  # whoever configured Django
            return int(view(built).status_code)

    return send


@pytest.mark.parametrize("adapter", [_asgi, _wsgi, _flask, _fastapi, _django],
                         ids=["asgi", "wsgi", "flask", "fastapi", "django"])
@FUZZ
@given(request=requests())
def test_every_adapter_answers_4xx_and_runs_nothing(
        fuzz_app: Celery, adapter: Callable[[Celery], Send], request: ReceivedRequest) -> None:
    RAN.clear()
    _held(_send_through(adapter, fuzz_app)(request))


_SENDERS: dict[Any, Send] = {}


def _send_through(adapter: Callable[[Celery], Send], app: Celery) -> Send:
    """One adapter instance per framework (building a FastAPI app per example is slow)."""
    if adapter not in _SENDERS:
        _SENDERS[adapter] = adapter(app)
    return _SENDERS[adapter]


# -- the findings, replayed one by one ---------------------------------------------------


def _signed(claims: dict[str, Any], body: bytes) -> ReceivedRequest:
    token = _encode(claims, DEV_CURRENT_SIGNING_KEY)
    return ReceivedRequest("POST", URL, {"Upstash-Signature": token,
                                         "Upstash-Message-Id": "msg_f"}, body)


@pytest.mark.parametrize("change", [
    {"body": None}, {"body": 7}, {"body": ["x"]}, {"sub": 1}, {"sub": None}, {"iss": None},
    {"iss": 5}, {"exp": float("nan")}, {"nbf": float("nan")}, {"exp": "soon"},
    {"exp": float("inf")},
], ids=str)
def test_odd_claims_are_401(fuzz_app: Celery, change: dict[str, Any]) -> None:
    body = json.dumps(task_message("fuzz.deferred", "t-2", [], {})).encode()
    claims = {"iss": "Upstash", "sub": URL, "exp": NOW + 300, "nbf": NOW, "body": _hash(body)}
    claims.update(change)
    claims = {k: v for k, v in claims.items() if v is not None}
    RAN.clear()
    assert CallbackReceiver(fuzz_app, **_options()).handle(_signed(claims, body)).status == 401
    assert RAN == []


def test_a_signed_body_5000_deep_is_a_400(fuzz_app: Celery) -> None:
    body = _deep(5000)
    claims = {"iss": "Upstash", "sub": URL, "exp": NOW + 300, "nbf": NOW, "body": _hash(body)}
    assert CallbackReceiver(fuzz_app, **_options()).handle(_signed(claims, body)).status == 400


def test_a_task_message_with_an_unknown_field_is_a_400(fuzz_app: Celery) -> None:
    message = {**task_message("fuzz.deferred", "t-3", [], {}), "__reduce__": "os.system"}
    body = json.dumps(message).encode()
    claims = {"iss": "Upstash", "sub": URL, "exp": NOW + 300, "nbf": NOW, "body": _hash(body)}
    RAN.clear()
    answer = CallbackReceiver(fuzz_app, **_options()).handle(_signed(claims, body))
    assert answer.status == 400 and "__reduce__" in answer.payload["error"]
    assert RAN == []


def test_a_signed_task_name_that_is_not_a_string_is_a_4xx(fuzz_app: Celery) -> None:
    """``app.tasks.get(["x"])`` raised TypeError (a 500) while choosing the lease."""
    message = {**task_message("fuzz.deferred", "t-4", [], {}), "task": ["fuzz.deferred"]}
    body = json.dumps(message).encode()
    claims = {"iss": "Upstash", "sub": URL, "exp": NOW + 300, "nbf": NOW, "body": _hash(body)}
    assert CallbackReceiver(fuzz_app, **_options()).handle(_signed(claims, body)).status == 400
