"""Property-based tests (hypothesis) over email fields and every ``apply_async`` option.

For any input, a call either publishes exactly one valid QStash request (captured
with respx: the request AutoSend's sandbox would accept, the task id as
deduplication id, label and Idempotency-Key, well-formed QStash headers), ends
``REVOKED`` without publishing (an ``expires`` already past), or raises one of our
typed errors with nothing published. An error never follows a publish. Eager mode
gives the same outcome (and the same error type) without any network.

The option strategies come from the option table in ``celery_qstash/publish/options.py``:
every option there is drawn, with values that fit it and values that do not.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import respx
from celery import Celery, states
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from celery_qstash import BulkEmail, Email, QStashTask
from celery_qstash.email import wire_errors
from celery_qstash.errors import CeleryQStashError
from celery_qstash.publish.options import APPLY_ASYNC_OPTIONS
from celery_qstash.testing import outbox

QSTASH_URL = "http://qstash-props.test"
TOKEN = "props-token-S3CRET-9e1f"
KEY = "props-key-S3CRET-3b7a"
NOW = datetime.now(timezone.utc)

PROPS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- values -------------------------------------------------------------------------------

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**15), max_value=10**15),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=8),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.builds(object),
)
seconds = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**9),
    st.floats(min_value=-1e6, max_value=1e9, allow_nan=False),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["10", "1.5", "-1", "soon", ""]),
)
moments = st.one_of(
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1),
                 timezones=st.one_of(st.none(), st.just(timezone.utc),
                                     st.just(timezone(timedelta(hours=5))))),
    st.timedeltas(min_value=timedelta(days=-30), max_value=timedelta(days=400)).map(
        lambda d: NOW + d),
    st.timedeltas(min_value=timedelta(days=-30), max_value=timedelta(days=400)).map(
        lambda d: (NOW + d).isoformat()),
    st.sampled_from(["tomorrow", "2024-13-01", "", "2030-01-01T00:00:00Z"]),
    seconds,
)
names = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1,
                max_size=40)
urls = st.one_of(
    st.builds(lambda host, path: f"https://{host}.example/{path}",
              st.from_regex(r"[a-z]{1,10}", fullmatch=True),
              st.from_regex(r"[a-z0-9/]{0,20}", fullmatch=True)),
    st.sampled_from(["http://127.0.0.1:9/cb", "ftp://x.example/", "not a url", "https://",
                     "https://a.example/\r\nX: y", "javascript:alert(1)"]),
    st.text(max_size=30),
)

OPTION_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "countdown": seconds,
    "eta": moments,
    "expires": moments,
    "queue": st.one_of(st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True), names, junk),
    "task_id": st.one_of(st.uuids().map(str), names, st.text(max_size=300), junk),
    "headers": st.one_of(
        st.dictionaries(st.one_of(st.from_regex(r"X-[A-Za-z0-9-]{1,12}", fullmatch=True), names),
                        st.one_of(names, st.text(max_size=20), junk), max_size=3),
        junk),
    "link": st.one_of(urls, junk),
    "link_error": st.one_of(urls, junk),
    "time_limit": st.one_of(seconds, junk),
    "retry": st.one_of(st.booleans(), junk),
    "retry_policy": st.one_of(
        st.fixed_dictionaries({}, optional={
            "max_retries": st.one_of(st.none(), st.integers(-2, 5), junk),
            "interval_start": st.one_of(st.floats(0, 1), junk),
            "interval_step": st.one_of(st.floats(0, 1), junk),
            "interval_max": st.one_of(st.floats(0, 1), junk),
            "retry_errors": junk,
        }),
        junk),
    "ignore_result": st.one_of(st.booleans(), junk),
    "serializer": st.one_of(st.sampled_from(["json", "pickle", "yaml", "msgpack"]), junk),
    "shadow": st.one_of(names, st.text(max_size=20), junk),
}
#: Options Celery's canvas and retry machinery set: drawn as Celery sets them (Celery's
#: own eager path breaks on, say, ``stamped_headers=None``; no caller passes that).
INTERNAL_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "stamped_headers": st.lists(names, max_size=2),
    "stamps": st.dictionaries(names, st.lists(names, max_size=2), max_size=2),
    "group_index": st.integers(0, 50),
    "retries": st.integers(0, 5),
    "replaced_task_nesting": st.integers(0, 3),
}
#: Every other option of the table (rejected, ignored, internal) gets any value.
OPTIONS = {name: OPTION_VALUES.get(name, INTERNAL_VALUES.get(name, junk))
           for name in APPLY_ASYNC_OPTIONS}


def test_every_option_of_the_table_is_drawn() -> None:
    assert set(OPTIONS) == set(APPLY_ASYNC_OPTIONS)


option_sets = st.lists(st.sampled_from(sorted(OPTIONS)), max_size=4, unique=True).flatmap(
    lambda keys: st.fixed_dictionaries({k: OPTIONS[k] for k in keys}))

addresses = st.one_of(
    st.emails().map(lambda a: a[:250]),
    st.builds(lambda n, a: f"{n} <{a}>", st.text(max_size=10), st.emails()),
    st.fixed_dictionaries({"email": st.emails()}, optional={"name": st.text(max_size=10)}),
    st.text(max_size=20),
    junk,
)
good_address = st.from_regex(r"[a-z][a-z0-9._+-]{0,10}@[a-z][a-z0-9-]{0,10}\.(com|org|net|io)",
                             fullmatch=True)
good_text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1,
                    max_size=60)
#: Mostly valid emails, each field sometimes replaced by something else.
plausible_email = st.fixed_dictionaries(
    {"to": st.one_of(good_address, st.lists(good_address, min_size=1, max_size=3)),
     "from": st.one_of(good_address, st.builds(lambda n, a: f"{n} <{a}>",
                                               st.from_regex(r"[A-Za-z ]{1,10}", fullmatch=True),
                                               good_address)),
     "subject": good_text},
    optional={
        "html": good_text,
        "text": good_text,
        "cc": st.lists(good_address, max_size=2),
        "replyTo": good_address,
        "dynamicData": st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True),
                                       st.one_of(st.text(max_size=8), st.integers()),
                                       max_size=3),
        "attachments": st.lists(st.fixed_dictionaries(
            {"fileName": st.from_regex(r"[a-z]{1,8}\.pdf", fullmatch=True),
             "content": st.just("aGVsbG8=")}), max_size=2),
    },
).map(lambda d: d if ("html" in d or "text" in d) else {**d, "text": "hello"})
any_email_fields = st.fixed_dictionaries(
    {"to": st.one_of(addresses, st.lists(addresses, max_size=3)), "from": addresses},
    optional={
        "subject": st.one_of(st.text(max_size=60), junk),
        "html": st.one_of(st.text(max_size=60), junk),
        "text": st.one_of(st.text(max_size=60), junk),
        "templateId": st.one_of(names, junk),
        "dynamicData": st.one_of(st.dictionaries(st.text(max_size=5), st.text(max_size=5),
                                                 max_size=3), junk),
        "cc": st.one_of(addresses, st.lists(addresses, max_size=2)),
        "bcc": st.one_of(addresses, st.lists(addresses, max_size=2)),
        "replyTo": addresses,
        "attachments": st.one_of(st.lists(st.fixed_dictionaries(
            {"fileName": st.one_of(names, junk)},
            optional={"content": st.one_of(st.just("aGVsbG8="), junk),
                      "fileUrl": st.one_of(urls, junk)}), max_size=2), junk),
        "scheduledAt": st.one_of(moments, junk),
        "unknownField": junk,
    },
)
email_fields = st.one_of(plausible_email, plausible_email, plausible_email, any_email_fields)


# --- the app --------------------------------------------------------------------------------


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("props", set_as_current=True)
    app.conf.update(qstash_url=QSTASH_URL, qstash_token=TOKEN, autosend_api_key=KEY,
                    task_eager_propagates=True)
    yield app
    app.close()


#: What the task body returns: set by each example (arguments go through Celery's JSON
#: round trip, which is Celery's business, not what is tested here).
_EMAIL: dict[str, Any] = {}


def _task(app: Celery) -> Any:
    @app.task(base=QStashTask, name="props.send", shared=False)
    def send() -> Any:
        return _EMAIL["value"]

    return send


@contextmanager
def _capture() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        router.post(url__startswith=f"{QSTASH_URL}/v2/").mock(
            return_value=httpx.Response(200, json={"messageId": "msg_prop"}))
        # result.state of a published task: QStash knows nothing of it yet (PENDING).
        router.get(url__startswith=f"{QSTASH_URL}/v2/events").mock(
            return_value=httpx.Response(200, json={"events": []}))
        yield router


def _run(task: Any, email: Any, options: dict[str, Any]) -> tuple[str, Any]:
    """("published", result) / ("revoked", result) / ("error", exception)."""
    _EMAIL["value"] = email
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = task.apply_async((), **options)
        except CeleryQStashError as exc:
            event(f"error: {type(exc).__name__}")
            return "error", exc
    if result.state == states.REVOKED:
        event("revoked")
        return "revoked", result
    event("published")
    return "published", result


def _assert_valid(request: httpx.Request, task_id: str) -> None:
    """What QStash and then AutoSend would accept."""
    path = request.url.path
    match = re.fullmatch(r"/v2/(publish|enqueue/[A-Za-z0-9._-]+)/(https?://.+)", path)
    assert match, path
    destination = match.group(2)
    assert destination in ("https://api.autosend.com/v1/mails/send",
                           "https://api.autosend.com/v1/mails/bulk")
    h = request.headers
    assert h["Authorization"] == f"Bearer {TOKEN}"
    assert h["Upstash-Forward-Authorization"] == f"Bearer {KEY}"
    assert h["Content-Type"] == "application/json"
    assert h["Upstash-Deduplication-Id"] == task_id == h["Upstash-Label"]
    assert h["Upstash-Forward-Idempotency-Key"] == task_id
    assert re.fullmatch(r"[\x21-\x7e]{1,256}", task_id) and "," not in task_id
    for name, pattern in (("Upstash-Delay", r"\d+s"), ("Upstash-Not-Before", r"\d+"),
                          ("Upstash-Timeout", r"\d+s?"), ("Upstash-Retries", r"\d+")):
        if name in h:
            assert re.fullmatch(pattern, h[name]), (name, h[name])
    for name in ("Upstash-Callback", "Upstash-Failure-Callback"):
        if name in h:
            assert h[name].startswith(("http://", "https://")), h[name]
    for name, value in h.items():
        assert value.isascii() and "\r" not in value and "\n" not in value, name
    body = json.loads(request.content)
    bulk = destination.endswith("/bulk")
    assert wire_errors(body, bulk=bulk) == []
    (BulkEmail if bulk else Email).model_validate(body)


# --- the properties -------------------------------------------------------------------------


@PROPS
@given(email=email_fields, options=option_sets)
def test_publish_valid_or_typed_error_never_both(app: Celery, email: Any, options: dict[str, Any]) -> None:
    send = _task(app)
    with _capture() as mock:
        outcome, value = _run(send, email, options)
        publishes = mock.routes[0].calls
        if outcome == "published":
            assert len(publishes) == 1
            _assert_valid(publishes.last.request, value.id)
        else:
            assert len(publishes) == 0, f"{outcome} after a publish: {value!r}"


@PROPS
@given(email=email_fields, options=option_sets)
def test_eager_mode_gives_the_same_outcome_without_the_network(app: Celery, email: Any, options: dict[str, Any]) -> None:
    send = _task(app)
    with _capture() as mock:
        live, live_value = _run(send, email, options)
    app.conf.task_always_eager = True
    outbox.clear()
    try:
        with _capture() as mock:
            eager, eager_value = _run(send, email, options)
            assert mock.calls.call_count == 0
    finally:
        app.conf.task_always_eager = False
    assert eager == live, (live_value, eager_value)
    if live == "error":
        assert type(eager_value) is type(live_value)
        assert str(eager_value) == str(live_value)
    elif live == "published":
        assert len(outbox) == 1


@PROPS
@given(email=email_fields)
def test_any_email_alone_publishes_valid_or_fails_typed(app: Celery, email: Any) -> None:
    send = _task(app)
    with _capture() as mock:
        outcome, value = _run(send, email, {})
        if outcome == "published":
            assert mock.routes[0].call_count == 1
            _assert_valid(mock.routes[0].calls.last.request, value.id)
        else:
            assert mock.routes[0].call_count == 0


# --- what the properties found (each was a bare TypeError/ValueError, or a crash) -----------


GOOD = {"to": "jane@example.com", "from": "shop@example.com", "subject": "Hi", "text": "hello"}


@pytest.mark.parametrize(
    ("options", "option", "words"),
    [
        ({"headers": {"X-Obj": object()}}, "headers", "X-Obj (object) cannot be sent"),
        ({"headers": {"X-Nan": float("nan")}}, "headers", "X-Nan (float) cannot be sent"),
        ({"retry_policy": 1}, "retry_policy", "expected a dict"),
        ({"retry_policy": {"max_retries": ""}}, "retry_policy", "max_retries"),
        ({"retry_policy": {"max_retries": object()}}, "retry_policy", "max_retries"),
        ({"retry_policy": {"interval_step": "soon"}}, "retry_policy", "interval_step"),
        ({"retry_policy": {"interval_max": float("inf")}}, "retry_policy", "interval_max"),
        ({"retry_policy": {"max_retry": 3}}, "retry_policy", "unknown key"),
        ({"shadow": object()}, "shadow", "as a string"),
        ({"shadow": 5}, "shadow", "as a string"),
    ],
)
def test_bad_option_values_are_typed_errors_before_anything_is_sent(
    app: Celery, options: dict[str, Any], option: str, words: str
) -> None:
    from celery_qstash import UnsupportedOption

    send = _task(app)
    _EMAIL["value"] = GOOD
    for eager in (False, True):
        app.conf.task_always_eager = eager
        with _capture() as mock:
            with pytest.raises(UnsupportedOption) as info:
                send.apply_async((), **options)
            assert mock.routes[0].call_count == 0
        assert info.value.option == option and words in str(info.value)
    app.conf.task_always_eager = False
    assert len(outbox) == 0


def test_a_stamped_headers_value_that_is_not_a_list_stamps_nothing(app: Celery) -> None:
    send = _task(app)
    _EMAIL["value"] = GOOD
    with _capture() as mock:
        send.apply_async((), stamped_headers=True)
        assert mock.routes[0].call_count == 1
