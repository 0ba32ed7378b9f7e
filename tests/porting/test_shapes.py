"""saleor-, PostHog- and pretix-shaped tasks: the same outcome in eager mode and end to end."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
from celery import chain, states

from celery_qstash import CeleryQStashWarning, RetryNotSupported, UnsupportedOption
from celery_qstash.publish.options import canvas_error

from . import shapes
from .conftest import Port

pytestmark = [
    pytest.mark.filterwarnings("ignore::celery_qstash.CeleryQStashWarning"),
]


def test_saleor_helper_that_returns_an_email(port: Port) -> None:
    result = shapes.send_account_confirmation_email_task.delay(
        "ada@example.com", {"user_id": 7, "name": "Ada", "url": "https://shop.example/c/1"}
    )

    assert "emailId" in port.value(result)
    assert port.inbox(1) == [
        {"to": "ada@example.com", "subject": "Confirm your account, Ada", "task_id": result.id}
    ]
    # the side effect that ran "after send_mail" now runs at call time, once
    assert shapes.events == [("account_confirmation_link_sent", 7)]


def test_saleor_compression_option_is_accepted_and_warned_once(port: Port) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        shapes.send_account_confirmation_email_task.delay("a@example.com", {"user_id": 1, "name": "A", "url": "u"})
        shapes.send_account_confirmation_email_task.delay("b@example.com", {"user_id": 2, "name": "B", "url": "u"})
    ours = [str(w.message) for w in caught if issubclass(w.category, CeleryQStashWarning)]
    assert [m for m in ours if ": compression: " in m] == [
        "celery-qstash: compression: ignored: the body is AutoSend's JSON and must stay "
        "readable by AutoSend"
    ]
    assert len(port.inbox(2)) == 2


def test_saleor_group_of_staff_notifications(port: Port) -> None:
    result = shapes.notify_staff(42, ["a@example.com", "b@example.com", "c@example.com"])

    values = [port.value(r) for r in result.results]
    assert all("emailId" in v for v in values)
    inbox = port.inbox(3)
    assert sorted(e["to"] for e in inbox) == ["a@example.com", "b@example.com", "c@example.com"]
    assert {e["subject"] for e in inbox} == {"Order #42 placed"}
    assert sorted(e["task_id"] for e in inbox) == sorted(r.id for r in result.results)


def test_posthog_synchronous_apply_path_sends_for_real(port: Port) -> None:
    # Before issue 7, outside eager mode this only wrote to the in-memory outbox.
    message = shapes.EmailMessage("welcome:1", "max@example.com", "Welcome", "<p>Hi</p>")
    result = message.send(send_async=False)

    # ignore_result=True (EMAIL_TASK_KWARGS): what reached AutoSend is the answer
    assert port.inbox(1) == [{"to": "max@example.com", "subject": "Welcome", "task_id": result.id}]
    assert port.published() == [result.id]


def test_posthog_async_path_goes_to_its_queue(port: Port) -> None:
    port.app.conf.task_routes = {shapes._send_email.name: {"queue": "email"}}
    result = shapes.EmailMessage("digest:1", "max@example.com", "Digest", "<p>3 new</p>").send()

    assert port.inbox(1)[0]["task_id"] == result.id
    assert port.queue(result.id) == "email"


def test_task_routes_choose_the_queue(port: Port) -> None:
    port.app.conf.task_routes = {f"{shapes.__name__}.send_staff_order_*": {"queue": "staff"}}
    result = shapes.send_staff_order_notification.delay("a@example.com", 1)

    assert port.inbox(1)[0]["task_id"] == result.id
    assert port.queue(result.id) == "staff"


@pytest.mark.parametrize("reason", ["duplicate job (return None)", "opted out (raise Ignore)"])
def test_posthog_nothing_to_send_is_ignored(port: Port, reason: str) -> None:
    if reason.startswith("duplicate"):
        shapes.sent_campaigns.add("welcome:1")
    else:
        shapes.opted_out.add("max@example.com")

    result = shapes.EmailMessage("welcome:1", "max@example.com", "Welcome", "<p>Hi</p>").send()

    assert result.state == states.IGNORED
    assert result.ready()
    assert result.get(timeout=1) is None
    assert port.published() == []


def test_posthog_autoretry_for_exception_reaches_the_caller(port: Port) -> None:
    with pytest.raises(ValueError, match="not an address: nobody"):
        shapes.EmailMessage("x:1", "nobody", "Hi", "<p>Hi</p>").send()
    assert port.published() == []


def test_pretix_bound_task_sees_its_own_request_id(port: Port) -> None:
    result = shapes.mail_send_task.delay("eve@example.com", "Your order", "Thanks")

    assert "emailId" in port.value(result)
    assert shapes.events == [("mail_send_task", result.id)]
    assert port.inbox(1) == [{"to": "eve@example.com", "subject": "Your order", "task_id": result.id}]


def test_pretix_self_retry_is_refused_and_publishes_nothing(port: Port) -> None:
    # Before issue 7: the body ran ~200 times and died in RecursionError live, and
    # ended quietly in eager mode.
    with pytest.raises(RetryNotSupported) as info:
        shapes.mail_send_task.delay("eve@example.com", "Your ticket", "PDF", ticket="T-1")

    assert str(info.value).startswith("self.retry(): the task body runs at call time")
    assert [name for name, _ in shapes.events] == ["mail_send_task"]  # ran once
    assert port.published() == []


def test_pretix_retry_ported_to_return_none_then_send_again(port: Port) -> None:
    first = shapes.mail_send_unless_pdf_missing.delay("eve@example.com", "T-2")
    assert first.state == states.IGNORED
    assert port.published() == []

    shapes.rendered_tickets.add("T-2")
    second = shapes.mail_send_unless_pdf_missing.delay("eve@example.com", "T-2")
    assert "emailId" in port.value(second)
    assert port.inbox(1) == [{"to": "eve@example.com", "subject": "Your ticket", "task_id": second.id}]


def test_pretix_custom_base_publishes_on_commit_only(port: Port) -> None:
    with shapes.transaction.atomic():
        shapes.mail_send_task.delay("eve@example.com", "Order placed", "Thanks")
        assert port.published() == []  # not before the commit
    [task_id] = port.published()
    assert port.inbox(1)[0]["task_id"] == task_id

    with pytest.raises(RuntimeError), shapes.transaction.atomic():
        shapes.mail_send_task.delay("eve@example.com", "Never", "Rolled back")
        raise RuntimeError("rollback")
    assert port.published() == [task_id]  # nothing more on rollback


def test_a_chain_of_email_tasks_is_refused_the_same_way(port: Port) -> None:
    with pytest.raises(UnsupportedOption) as info:
        chain(
            shapes.send_staff_order_notification.s("a@example.com", 1),
            shapes.send_staff_order_notification.si("b@example.com", 2),
        ).delay()
    assert str(info.value) == str(canvas_error("chain"))
    assert port.published() == []


def test_warnings_point_at_the_line_that_called(port: Port) -> None:
    # Before issue 7 they pointed into celery/app/task.py (delay) or celery/canvas.py.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1
        shapes.EmailMessage("w:1", "max@example.com", "Hi", "<p>Hi</p>").send()
        shapes.send_account_confirmation_email_task.s("a@example.com", {"user_id": 1, "name": "A", "url": "u"}).delay()
    ours = {str(w.message).split(":")[1].strip(): w for w in caught if issubclass(w.category, CeleryQStashWarning)}
    assert set(ours) == {"autoretry_for", "retry_jitter", "compression"}
    # PostHog's call goes through its own EmailMessage.send: the warning names that line
    assert (ours["autoretry_for"].filename, ours["autoretry_for"].lineno) == (shapes.__file__, SEND_LINE)
    assert (ours["compression"].filename, ours["compression"].lineno) == (__file__, line + 1)


SEND_LINE = next(
    i for i, text in enumerate(Path(shapes.__file__).read_text().splitlines(), 1)
    if "return _send_email.delay(**self.kwargs)" in text
)
