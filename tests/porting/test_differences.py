"""Every row of docs/porting.md's difference table, run in eager mode and end to end.

The table's last-but-one column is the exact text a ported task meets (an error as
``Type: message``, a warning as ``CeleryQStashWarning: message``, or the state a
result reads); each row's key names one scenario below, and the test checks that the
scenario produces exactly that text in both modes. A row without a scenario, or a
scenario without a row, fails :func:`test_every_row_has_a_scenario`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from celery import Task, chain, chord, shared_task
from celery.exceptions import Ignore, Reject, Retry

from celery_qstash import CeleryQStashError, CeleryQStashWarning, Email, QStashTask, autosend_task

from .conftest import Port

PORTING = Path(__file__).resolve().parents[2] / "docs" / "porting.md"


def _email(subject: str = "Hi") -> Email:
    return Email(to="ann@example.com", from_="shop@example.com", subject=subject, text="hi")


@autosend_task
def send(n: int = 1) -> Email:
    return _email(f"#{n}")


@autosend_task(bind=True)
def send_bound(self: Task, how: str) -> Any:
    if how == "self.retry":
        raise self.retry(countdown=5)
    if how == "Retry":
        raise Retry()
    if how == "Reject":
        raise Reject("not now", requeue=False)
    if how == "Ignore":
        raise Ignore()
    if how == "None":
        return None
    if how == "text":
        return "Hello!"
    if how == "several":
        return Email(to=["ann@example.com", "bob@example.com"], from_="shop@example.com",
                     subject="Hi", text="hi")
    return _email()


@autosend_task(autoretry_for=(ConnectionError,))
def send_autoretry() -> Email:
    return _email()


@autosend_task(max_retries=None)
def send_forever() -> Email:
    return _email()


@autosend_task(retry_backoff=True)
def send_backoff() -> Email:
    return _email()


@autosend_task(acks_late=True)
def send_late() -> Email:
    return _email()


@autosend_task(retry_kwargs={"max_retries": 5, "countdown": 10, "exc": "x"})
def send_retry_kwargs() -> Email:
    return _email()


@autosend_task(rate_limit="10/m")
def send_limited() -> Email:
    return _email()


@shared_task
def plain(*args: Any) -> int:
    return 1


def _observe(port: Port, call: Callable[[], Any]) -> str:
    """What a caller meets: the error, else our warning, else the result's state."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = call()
        except CeleryQStashError as exc:
            return f"{type(exc).__name__}: {exc}"
    ours = [w for w in caught if issubclass(w.category, CeleryQStashWarning)]
    if ours:
        return f"CeleryQStashWarning: {ours[0].message}"
    if result.state not in ("IGNORED", "REVOKED"):
        port.value(result)  # wait for AutoSend's answer
    return f"state {result.state}"


def _app_pickle(port: Port) -> Any:
    # An app-wide task_serializer reaches each task as Celery binds it to the app.
    port.app.conf.task_serializer = "pickle"

    @port.app.task(base=QStashTask, name="porting.pickled", shared=False)
    def pickled() -> Email:
        return _email()

    return pickled.delay()


def _chord(port: Port) -> Any:
    # Production needs a result backend to start a chord at all (Celery refuses first
    # without one); with one, the header tasks are refused as below.
    port.app.conf.result_backend = "qstash://"
    return chord([send.si(1), send.si(2)])(plain.s())


SCENARIOS: dict[str, Callable[[Port], Any]] = {
    "chain": lambda port: chain(send.s(1), send.si(2)).delay(),
    "chord": _chord,
    "link-signature": lambda port: send.apply_async((1,), link=plain.s()),
    "link_error-signature": lambda port: send.apply_async((1,), link_error=plain.s()),
    "self.retry": lambda port: send_bound.delay("self.retry"),
    "raise-Retry": lambda port: send_bound.delay("Retry"),
    "raise-Reject": lambda port: send_bound.delay("Reject"),
    "return-None": lambda port: send_bound.delay("None"),
    "raise-Ignore": lambda port: send_bound.delay("Ignore"),
    "return-other": lambda port: send_bound.delay("text"),
    "apply": lambda port: send.apply((1,)),
    "typo": lambda port: send.apply_async((1,), countdwn=5),
    "unknown-option": lambda port: send.apply_async((1,), tenant="acme"),
    "serializer": lambda port: send.apply_async((1,), serializer="pickle"),
    "task_serializer": _app_pickle,
    "set-argument": lambda port: send.delay({1, 2}),
    "several-to": lambda port: send_bound.delay("several"),
    "priority": lambda port: send.apply_async((1,), priority=9),
    "routing_key": lambda port: send.apply_async((1,), routing_key="email.high"),
    "compression": lambda port: send.apply_async((1,), compression="zlib"),
    "soft_time_limit": lambda port: send.apply_async((1,), soft_time_limit=30),
    "autoretry_for": lambda port: send_autoretry.delay(),
    "max_retries-None": lambda port: send_forever.delay(),
    "retry_jitter": lambda port: send_backoff.delay(),
    "acks_late": lambda port: send_late.delay(),
    "retry_kwargs": lambda port: send_retry_kwargs.delay(),
    "rate_limit-queue": lambda port: send_limited.apply_async(queue="emails"),
    "queue-name": lambda port: send.apply_async((1,), queue="emails high"),
    "task_id": lambda port: send.apply_async((1,), task_id="order 42, welcome"),
    "expires": lambda port: send.apply_async((1,), countdown=60, expires=10),
    "custom-header": lambda port: send.apply_async((1,), headers={"X-Campaign": "spring"}),
    "reserved-header": lambda port: send.apply_async((1,), headers={"Reply-To": "a@b.c", "Authorization": "x"}),
}


def table_rows() -> list[tuple[str, str]]:
    """``(key, exact text)`` for each row of the difference table in docs/porting.md."""
    text = PORTING.read_text()
    body = text.split("<!-- differences:start -->")[1].split("<!-- differences:end -->")[0]
    rows = []
    for line in body.strip().splitlines()[2:]:  # skip the header and the rule
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        key = cells[0].strip("`")
        message = re.fullmatch(r"``\s?(.*?)\s?``", cells[-2])
        assert message, f"row {key}: the message cell is not a ``code`` span: {cells[-2]!r}"
        rows.append((key, message.group(1)))
    return rows


def test_every_row_has_a_scenario() -> None:
    keys = [key for key, _ in table_rows()]
    assert len(keys) == len(set(keys))
    assert sorted(keys) == sorted(SCENARIOS)


def test_every_row_names_this_test() -> None:
    body = PORTING.read_text().split("<!-- differences:start -->")[1].split("<!-- differences:end -->")[0]
    for line in body.strip().splitlines()[2:]:
        key = re.split(r"(?<!\\)\|", line.strip().strip("|"))[0].strip().strip("`")
        assert f"test_difference[{key}]" in line


@pytest.mark.parametrize(("key", "expected"), table_rows(), ids=[k for k, _ in table_rows()])
def test_difference(port: Port, key: str, expected: str) -> None:
    assert _observe(port, lambda: SCENARIOS[key](port)) == expected
    if expected.startswith(("UnsupportedOption", "RetryNotSupported", "EmailValidationError")) or (
        expected in ("state IGNORED", "state REVOKED")
    ):
        assert port.published() == []  # refused or nothing to send: nothing left the caller
