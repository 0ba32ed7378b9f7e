"""The retry-delay evaluator, the default backoff and Retry-After parsing, by value."""

from __future__ import annotations

import email.utils
import math

import pytest

from celery_qstash.local.emulator.retry_delay import (
    RetryDelayError,
    compile_retry_delay,
    default_backoff_ms,
    parse_retry_after,
    retry_after_from_headers,
)

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("expr", "retried", "expected"),
    [
        ("1000", 0, 1000),
        ("1000 * (1 + retried)", 2, 3000),
        ("pow(2, retried) * 1000", 3, 8000),
        ("max(1000, pow(2, retried) * 100)", 1, 1000),
        ("min(5000, 100 * retried)", 100, 5000),
        ("-retried + 10", 4, 6),
        ("10 % 3 + 7 / 2", 0, 4.5),
        ("sqrt(16) + abs(-2) + floor(1.7) + ceil(1.2) + round(2.5)", 0, 4 + 2 + 1 + 2 + 3),
        ("exp(0) * 1000", 0, 1000),
    ],
)
def test_expressions_evaluate_to_milliseconds(expr: str, retried: int, expected: float) -> None:
    assert compile_retry_delay(expr)(retried) == pytest.approx(expected)


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os')",
        "().__class__",
        "retried.real",
        "open('x')",
        "x + 1",
        "attempts * 2",
        "2 ** 10",
        "lambda: 1",
        "[1, 2]",
        "'1000'",
        "True",
        "pow(2)",
        "max(1, 2, 3)",
        "pow(x=1, y=2)",
        "1000; 2",
        "",
        "1 if retried else 2",
        "retried == 1",
    ],
)
def test_anything_outside_the_grammar_is_rejected(expr: str) -> None:
    with pytest.raises(RetryDelayError):
        compile_retry_delay(expr)


def test_huge_values_are_capped_and_errors_are_reported_not_raised_as_python_errors() -> None:
    assert compile_retry_delay("pow(10, 1000)")(0) == 86_400_000
    with pytest.raises(RetryDelayError):
        compile_retry_delay("1 / retried")(0)


def test_default_backoff_matches_qstash_table() -> None:
    assert default_backoff_ms(1) == pytest.approx(math.exp(2.5) * 1000)  # ~12 s
    assert round(default_backoff_ms(2) / 1000) == 148  # 2 m 28 s
    assert round(default_backoff_ms(3) / 1000) == 1808  # 30 m 8 s
    assert default_backoff_ms(5) == 86_400_000
    assert default_backoff_ms(50) == 86_400_000


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("6m5s", 365.0),
        ("1h", 3600.0),
        ("250ms", 0.25),
        ("1.5s", 1.5),
        ("86401", None),  # more than a day: fall back to the backoff
        ("48h", None),
        ("soon", None),
        ("", None),
    ],
)
def test_retry_after_values(value: str, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_retry_after_http_date_is_relative_to_now() -> None:
    date = email.utils.formatdate(NOW + 90, usegmt=True)
    assert parse_retry_after(date, NOW) == pytest.approx(90)
    past = email.utils.formatdate(NOW - 90, usegmt=True)
    assert parse_retry_after(past, NOW) == 0


def test_rate_limit_reset_headers_are_used_when_retry_after_is_absent() -> None:
    assert retry_after_from_headers({"X-RateLimit-Reset-Tokens": "6m0s"}, NOW) == 360
    assert retry_after_from_headers({"Retry-After": "3", "X-RateLimit-Reset": "9"}, NOW) == 3
    assert retry_after_from_headers({"Content-Type": "text/plain"}, NOW) is None
