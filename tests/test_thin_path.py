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

from celery_qstash import ConfigurationError, Email, EmailValidationError, autosend_task
from celery_qstash.config import load_settings
from celery_qstash.email import Address
from celery_qstash.task import _roundtrip
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
