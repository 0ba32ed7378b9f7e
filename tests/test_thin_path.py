"""The thin publish path: what is cached or skipped per call still behaves as before."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest
from celery import Celery
from kombu.serialization import dumps, loads

from celery_qstash import (
    ConfigurationError,
    Email,
    EmailValidationError,
    QStashTask,
    UnsupportedOption,
    autosend_task,
)
from celery_qstash.config import load_settings
from celery_qstash.email import Address
from celery_qstash.errors import CeleryQStashWarning
from celery_qstash.tasks.planning import _roundtrip
from celery_qstash.testing import outbox


def kombu_roundtrip(args: Any, kwargs: Any) -> tuple[Any, Any]:
    content_type, encoding, payload = dumps((list(args), dict(kwargs)), serializer="json")
    a, k = loads(payload, content_type, encoding, accept=[content_type])
    return a, k


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((1, "a", None, True, 2.5), {}),
        ((), {"user": {"id": 1, "tags": ["x", "y"], "nested": [[1], {"k": None}]}}),
        (((1, 2), [3, (4,)]), {"t": (5,)}),  # tuples come back as lists
        (({1: "int keys"},), {}),  # keys become strings
        ((datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc),), {}),
        ((uuid.UUID(int=5), Decimal("1.5")), {}),
        ((math.inf, -0.0, 10**30), {}),
        (("ünïcødé ✉",), {"emoji": "📧"}),
    ],
)
def test_roundtrip_matches_kombu(args: Any, kwargs: Any) -> None:
    assert _roundtrip(args, kwargs, "json") == kombu_roundtrip(args, kwargs)


def test_roundtrip_of_nan_matches_kombu() -> None:
    [ours], _ = _roundtrip((math.nan,), {}, "json")
    [theirs], _ = kombu_roundtrip((math.nan,), {})
    assert math.isnan(ours) and math.isnan(theirs)


def test_roundtrip_copies(app: Celery) -> None:
    data = {"ids": [1, 2]}
    args, _ = _roundtrip((data,), {}, "json")
    args[0]["ids"].append(3)
    assert data == {"ids": [1, 2]}


def test_task_body_cannot_mutate_the_callers_args(app: Celery) -> None:
    seen: list[Any] = []

    @autosend_task(name="thin.mutating", shared=False)
    def mutating(items: list[int]) -> Email:
        items.append(99)
        seen.append(items)
        return Email(to="a@example.com", from_="b@example.com", subject="s", text="t")

    app.conf.task_always_eager = True
    mine = [1]
    mutating.delay(mine)
    assert mine == [1]
    assert seen == [[1, 99]]
    assert len(outbox) == 1


def test_settings_follow_the_conf_between_calls(app: Celery) -> None:
    first = load_settings(app.conf)
    assert load_settings(app.conf) is first  # unchanged conf: the cached settings
    app.conf.autosend_rate_limit = "10/s"
    assert load_settings(app.conf).rate_limit == "10/s"
    app.conf.qstash_publish_timeout = "nope"
    with pytest.raises(ConfigurationError, match="qstash_publish_timeout"):
        load_settings(app.conf)
    with pytest.raises(ConfigurationError):  # errors are not cached away either
        load_settings(app.conf)


def test_settings_follow_the_environment(app: Celery, monkeypatch: pytest.MonkeyPatch) -> None:
    app.conf.autosend_default_from = None
    assert load_settings(app.conf).default_from is None
    monkeypatch.setenv("AUTOSEND_DEFAULT_FROM", "env@example.com")
    assert load_settings(app.conf).default_from == "env@example.com"


def test_settings_read_a_namespaced_conf(monkeypatch: pytest.MonkeyPatch) -> None:
    class Config:
        CELERY_QSTASH_TOKEN = "ns-token"
        CELERY_AUTOSEND_RATE_LIMIT = "off"

    app = Celery("ns", set_as_current=False)
    app.config_from_object(Config, namespace="CELERY")
    settings = load_settings(app.conf)
    assert settings.qstash_token == "ns-token"
    assert settings.rate_limit is None


def test_settings_from_a_plain_dict() -> None:
    assert load_settings({"QSTASH_TOKEN": "upper", "autosend_rate_limit": "3/s"}).qstash_token == "upper"


def test_cached_addresses_validate_the_same() -> None:
    for _ in range(2):
        assert Address(email="Jane@EXAMPLE.com").email == "Jane@example.com"
        with pytest.raises(EmailValidationError, match="email"):
            Address(email="not an address")


LONG_LOCAL = "a" * 64
ADDRESSES = [
    "a@b.com", "Jane@EXAMPLE.com", "a.b+c@x.io", "a..b@x.com", ".a@x.com", "a.@x.com",
    "a@localhost", "a@x", "a@test", "a@x.test", "a@example", "a@ëxample.com", "ü@x.com",
    "a@xn--80ak6aa92e.com", "a@-x.com", "a@x-.com", "a@x..com", "a@x.123", "a" * 65 + "@x.com",
    LONG_LOCAL + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + ".com", "a@[1.2.3.4]",
    '"a b"@x.com', "a@B.COM", "a@exa_mple.com", "a@x.invalid", "a@x.onion", "A@X.Co.Uk",
    "a=b@x.com", "{a}@x.com", "a@x.com.", "@x.com", "a@", "",
]


@pytest.mark.parametrize("address", ADDRESSES)
def test_fast_address_check_agrees_with_email_validator(address: str) -> None:
    from celery_qstash.email import _full_validation, _validated_address

    _full_validation.cache_clear()
    expected = _full_validation(address)
    _full_validation.cache_clear()
    assert _validated_address(address) == expected


def plain_reads(conf: Any) -> list[Any]:
    """What the settings were read as before: conf.get(key), else conf.get(KEY)."""
    from celery_qstash.config import _KEYS

    out = []
    for name, _ in _KEYS:
        value = conf.get(name)
        out.append(conf.get(name.upper()) if value is None else value)
    return out


class UpperConfig:
    QSTASH_TOKEN = "from-object"
    AUTOSEND_RATE_LIMIT = "7/s"


class NamespacedConfig:
    CELERY_QSTASH_URL = "http://ns.example"
    CELERY_AUTOSEND_API_KEY = "ns-key"


@pytest.mark.parametrize(
    ("source", "namespace", "changes"),
    [
        (None, None, {"qstash_token": "t", "AUTOSEND_API_KEY": "K"}),
        (UpperConfig, None, {}),
        (UpperConfig, None, {"qstash_token": "changed"}),  # a change wins over the object
        (UpperConfig, None, {"qstash_token": None}),  # None in the changes: the upper spelling
        (NamespacedConfig, "CELERY", {}),
        (NamespacedConfig, "CELERY", {"qstash_url": "http://changed.example"}),
    ],
)
def test_fast_conf_reads_agree_with_celerys_lookup(source: Any, namespace: str | None, changes: dict[str, Any]) -> None:
    from celery_qstash.config import _conf_values

    app = Celery("reads", set_as_current=False)
    if source is not None:
        app.config_from_object(source, namespace=namespace)
    app.conf.update(changes)
    assert _conf_values(app.conf) == plain_reads(app.conf)
    app.close()


# --- the cached option plan -------------------------------------------------------------


def _thin_task(app: Celery) -> Any:
    @app.task(base=QStashTask, name="thin.plan", shared=False)
    def welcome(i: int) -> Email:
        return Email(to=f"u{i}@example.com", from_="shop@example.com", subject="s", text="t")

    return welcome


def test_a_cached_plan_is_the_plan_of_the_call(app: Celery) -> None:
    from celery_qstash.publish.plan import plan_publish
    from celery_qstash.tasks.planning import task_attrs

    welcome = _thin_task(app)
    settings = load_settings(app.conf)
    merged = welcome._merged_options((1,), None, None, {"countdown": 60})
    first = welcome._plan("id-1", merged, settings, 0.0, (1,), None)
    second = welcome._plan("id-2", merged, settings, 0.0, (1,), None)
    fresh = plan_publish(task=task_attrs(welcome), task_id="id-2", options=merged,
                         settings=settings, now=0.0, shadow="thin.plan")
    assert (first.task_id, second.task_id) == ("id-1", "id-2")
    assert second == fresh


def test_a_cached_plan_still_checks_the_task_id(app: Celery, qstash_mock: Any) -> None:
    welcome = _thin_task(app)
    welcome.apply_async((1,), countdown=5, task_id="good-id")
    with pytest.raises(UnsupportedOption, match="task_id"):
        welcome.apply_async((1,), countdown=5, task_id="has a space")


def test_a_cached_plan_does_not_stand_in_for_an_equal_value_of_another_type(app: Celery, qstash_mock: Any) -> None:
    welcome = _thin_task(app)
    welcome.apply_async((1,), countdown=1)
    # True == 1, but a bool is not a number of seconds: refused as without the cache.
    with pytest.raises(UnsupportedOption, match="countdown"):
        welcome.apply_async((1,), countdown=True)


def test_a_changed_task_attribute_or_setting_gives_a_new_plan(app: Celery, qstash_mock: Any) -> None:
    welcome = _thin_task(app)
    welcome.apply_async((1,), countdown=60)
    assert qstash_mock["publish"].calls.last.request.headers["Upstash-Retries"] == "3"
    welcome.max_retries = 7
    welcome.apply_async((1,), countdown=60)
    assert qstash_mock["publish"].calls.last.request.headers["Upstash-Retries"] == "7"
    app.conf.autosend_rate_limit = "9/s"
    welcome.apply_async((1,), countdown=60)
    request = qstash_mock["publish"].calls.last.request
    assert request.headers["Upstash-Flow-Control-Value"] == "rate=9, period=1s"


def test_an_expiry_is_computed_from_each_calls_clock(app: Celery) -> None:
    welcome = _thin_task(app)
    settings = load_settings(app.conf)
    merged = welcome._merged_options((1,), None, None, {"countdown": 10, "expires": 30})
    with pytest.warns(CeleryQStashWarning, match="expires"):
        early = welcome._plan("id-1", merged, settings, 1000.0, (1,), None)
    later = welcome._plan("id-2", merged, settings, 2000.0, (1,), None)
    assert (early.expires_at, later.expires_at) == (1030.0, 2030.0)


def test_warnings_come_again_after_reset_warnings_with_a_cached_plan(app: Celery, qstash_mock: Any) -> None:
    from celery_qstash.publish import options as qstash_options

    welcome = _thin_task(app)
    with pytest.warns(CeleryQStashWarning, match="priority"):
        welcome.apply_async((1,), priority=5)
    qstash_options.reset_warnings()
    with pytest.warns(CeleryQStashWarning, match="priority"):
        welcome.apply_async((1,), priority=5)


def test_the_plan_cache_of_a_task_is_bounded(app: Celery, qstash_mock: Any) -> None:
    from celery_qstash.tasks.planning import _MAX_PLANS

    welcome = _thin_task(app)
    for n in range(_MAX_PLANS + 10):
        welcome.apply_async((1,), countdown=n + 1)
    assert 0 < len(welcome.__dict__["_celery_qstash_plans"]) <= _MAX_PLANS


# --- the request pushed for the body ------------------------------------------------------


def test_the_request_pushed_for_the_body_is_celerys(app: Celery) -> None:
    from celery_qstash.tasks.tracing import _push_request

    welcome = _thin_task(app)
    seen = []
    for push in (
        lambda: welcome.push_request(id="t", args=[1], kwargs={}, called_directly=False, is_eager=False),
        lambda: _push_request(welcome, "t", [1], {}),
    ):
        push()
        seen.append((dict(welcome.request.__dict__), welcome.request.headers, welcome.request.retries))
        welcome.pop_request()
    assert seen[0] == seen[1]


def test_a_call_inside_the_same_tasks_request_keeps_celerys_merge(app: Celery) -> None:
    from celery_qstash.tasks.tracing import _push_request

    welcome = _thin_task(app)
    welcome.push_request(id="outer", hostname="w1", custom="x")
    try:
        _push_request(welcome, "inner", [1], {})
        try:
            assert welcome.request.id == "inner"
            assert welcome.request.hostname == "w1"  # merged from the outer request, as Celery does
            assert welcome.request.headers == {"custom": "x"}
        finally:
            welcome.pop_request()
    finally:
        welcome.pop_request()


# --- one pass over the conf -----------------------------------------------------------------


class OldNames:
    CELERY_ALWAYS_EAGER = True
    CELERY_ROUTES = {"thin.*": {"queue": "emails"}}


@pytest.mark.parametrize(
    ("source", "namespace", "changes"),
    [
        (None, None, {}),
        (None, None, {"task_always_eager": True, "task_publish_retry": False,
                      "task_publish_retry_policy": {"max_retries": 1}}),
        (OldNames, None, {}),
        (NamespacedConfig, "CELERY", {"task_routes": {"x": {"queue": "q"}}}),
    ],
)
def test_call_conf_reads_celerys_keys_as_celery_does(source: Any, namespace: str | None, changes: dict[str, Any]) -> None:
    from celery_qstash.config import call_conf

    app = Celery("callconf", set_as_current=False)
    if source is not None:
        app.config_from_object(source, namespace=namespace)
    app.conf.update(changes)
    conf = call_conf(app.conf)
    assert conf.always_eager == bool(app.conf.task_always_eager)
    assert conf.routes == app.conf.task_routes
    assert conf.publish_retry == app.conf.task_publish_retry
    assert conf.publish_retry_policy == app.conf.task_publish_retry_policy
    assert conf.settings == load_settings(app.conf)
    app.close()


def test_call_conf_follows_the_conf_between_calls(app: Celery) -> None:
    from celery_qstash.config import call_conf

    assert call_conf(app.conf).always_eager is False
    app.conf.task_always_eager = True
    assert call_conf(app.conf).always_eager is True


def test_settings_see_an_environment_variable_set_between_calls(app: Celery, monkeypatch: pytest.MonkeyPatch) -> None:
    app.conf.autosend_rate_limit = None
    assert load_settings(app.conf).rate_limit == "0.5/s"
    monkeypatch.setenv("AUTOSEND_RATE_LIMIT", "4/s")
    assert load_settings(app.conf).rate_limit == "4/s"
    monkeypatch.setenv("AUTOSEND_RATE_LIMIT", "5/s")  # a changed value, not only a new name
    assert load_settings(app.conf).rate_limit == "5/s"
    monkeypatch.delenv("AUTOSEND_RATE_LIMIT")
    assert load_settings(app.conf).rate_limit == "0.5/s"


# --- signals only when someone listens ---------------------------------------------------


def test_publish_signals_reach_a_receiver_connected_after_earlier_calls(app: Celery, qstash_mock: Any) -> None:
    from celery.signals import after_task_publish, before_task_publish

    welcome = _thin_task(app)
    welcome.delay(1)  # no receiver: nothing built
    seen: list[str] = []

    def before(headers: dict[str, Any], **kwargs: Any) -> None:
        seen.append("before:" + headers["id"])
        headers["traceparent"] = "00-abc-def-01"

    def after(headers: dict[str, Any], **kwargs: Any) -> None:
        seen.append("after:" + headers["id"])

    before_task_publish.connect(before, weak=False)
    after_task_publish.connect(after, weak=False)
    try:
        result = welcome.delay(2)
    finally:
        before_task_publish.disconnect(before)
        after_task_publish.disconnect(after)
    assert seen == [f"before:{result.id}", f"after:{result.id}"]
    assert qstash_mock["publish"].calls.last.request.headers["Upstash-Forward-traceparent"] == "00-abc-def-01"


@pytest.mark.parametrize("request_dict", [
    {"id": "t1", "task": "x", "retries": 0, "is_eager": True, "headers": None,
     "timelimit": [10, 5], "delivery_info": {"is_eager": True}},
    {"id": "t2", "task": "x", "headers": None, "traceparent": "00-abc", "x_custom": 1},
    {"id": "t3", "task": "x", "headers": {"given": "yes"}, "x_custom": 1},
    {"id": "t4", "task": "x", "headers": None, "timelimit": None},
])
def test_the_lean_request_context_is_celerys(request_dict: dict[str, Any]) -> None:
    from celery.app.task import Context

    from celery_qstash.tasks.tracing import _context

    more = {"args": (1,), "called_directly": False, "kwargs": {"a": 2}}
    ours, celerys = _context(request_dict, **more), Context(request_dict, **more)
    assert vars(ours) == vars(celerys)
    # Only newer Celery releases give Context time_limit/soft_time_limit properties.
    limits = ("time_limit", "soft_time_limit")
    assert [getattr(ours, n, None) for n in limits] == [getattr(celerys, n, None) for n in limits]
