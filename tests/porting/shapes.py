"""Email tasks written the way saleor, PostHog and pretix write theirs, ported to celery-qstash.

Each block names the original shape; the port is what docs/porting.md describes: the
helper that sent returns an :class:`Email`, side effects "after sending" run at call
time, and "nothing to send" is ``return None`` or ``raise Ignore()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from celery import Task, group
from celery.exceptions import Ignore

from celery_qstash import Email, QStashTask, autosend_task

#: What the tasks did besides returning an email (account events, records, ids seen).
events: list[tuple[str, Any]] = []


# --- saleor: plugins/user_email/tasks.py ------------------------------------------------------
# Before: a helper `send_email(config, recipient_list, context, subject, template_str)`
# rendered the template and called Django's send_mail; the task then recorded an event.


def build_email(recipient: str, context: dict[str, Any], subject: str, template: str) -> Email:
    """The helper, ported: same arguments, returns the email instead of sending it."""
    return Email(
        to=recipient,
        from_="Saleor <noreply@saleor.example>",
        subject=subject.format(**context),
        html=template.format(**context),
    )


@autosend_task(compression="zlib")  # saleor's option: accepted and ignored (warned once)
def send_account_confirmation_email_task(recipient_email: str, payload: dict[str, Any]) -> Email:
    email = build_email(
        recipient_email, payload, "Confirm your account, {name}", "<a href='{url}'>Confirm</a>"
    )
    # Before: recorded after send_mail returned. Now at call time (the delivery callback
    # receiver is the place for "after AutoSend accepted it").
    events.append(("account_confirmation_link_sent", payload["user_id"]))
    return email


@autosend_task
def send_staff_order_notification(staff_email: str, order_number: int) -> Email:
    return build_email(
        staff_email, {"n": order_number}, "Order #{n} placed", "<p>Order #{n} was placed</p>"
    )


def notify_staff(order_number: int, staff: list[str]) -> Any:
    """saleor sends one task per staff member; a group is the canvas that still works."""
    return group(send_staff_order_notification.s(a, order_number) for a in staff).apply_async()


# --- PostHog: posthog/email.py ----------------------------------------------------------------
# Before: @shared_task(**EMAIL_TASK_KWARGS) def _send_email(...), deduplicated by a
# MessagingRecord, and EmailMessage.send(send_async=False) called _send_email.apply(...).

# PostHog also sets "queue": "email" here. Celery 5.7 deprecates the `queue` task
# attribute (and warns for every app a shared task is bound to), so the port routes
# with task_routes, as Celery recommends; celery-qstash maps both the same way.
EMAIL_TASK_KWARGS: dict[str, Any] = {
    "ignore_result": True,
    "autoretry_for": (Exception,),
    "max_retries": 3,
    "retry_backoff": True,
}

#: PostHog's MessagingRecord: campaign keys already sent (a duplicate job sends nothing).
sent_campaigns: set[str] = set()
#: Users who opted out of this kind of email.
opted_out: set[str] = set()


@autosend_task(**EMAIL_TASK_KWARGS)
def _send_email(campaign_key: str, to: str, subject: str, html_body: str) -> Email | None:
    if campaign_key in sent_campaigns:
        return None  # a duplicate job: nothing to send
    if to in opted_out:
        raise Ignore()  # the other way to say it
    if "@" not in to:
        raise ValueError(f"not an address: {to}")  # autoretry_for: reaches the caller
    # Before: marked sent after connection.send_messages(); now when the email is handed over.
    sent_campaigns.add(campaign_key)
    return Email(to=to, from_="PostHog <hey@posthog.example>", subject=subject, html=html_body)


class EmailMessage:
    def __init__(self, campaign_key: str, to: str, subject: str, html_body: str) -> None:
        self.kwargs = {"campaign_key": campaign_key, "to": to, "subject": subject,
                       "html_body": html_body}

    def send(self, send_async: bool = True) -> Any:
        if send_async:
            return _send_email.delay(**self.kwargs)
        # The synchronous path: outside eager mode this publishes through QStash too.
        return _send_email.apply(kwargs=self.kwargs)


# --- pretix: base/services/mail.py ------------------------------------------------------------
# Before: @app.task(base=TransactionAwareTask, bind=True, acks_late=True) def mail_send_task
# (self, ...): `raise self.retry(...)` while a ticket PDF was not rendered yet; the base
# class deferred apply_async to transaction.on_commit.


class Transaction:
    """Django's ``transaction.on_commit``/``atomic`` as pretix uses them, in memory."""

    def __init__(self) -> None:
        self._pending: list[list[Callable[[], Any]]] = []

    @property
    def in_atomic_block(self) -> bool:
        return bool(self._pending)

    def on_commit(self, fn: Callable[[], Any]) -> None:
        if self._pending:
            self._pending[-1].append(fn)
        else:
            fn()  # outside a transaction: at once, as Django does

    @contextmanager
    def atomic(self) -> Iterator[None]:
        self._pending.append([])
        try:
            yield
        except BaseException:
            self._pending.pop()  # rolled back: the callbacks never run
            raise
        for fn in self._pending.pop():
            fn()


transaction = Transaction()


class TransactionAwareTask(Task):  # type: ignore[misc]
    """pretix's base: publish only once the surrounding transaction has committed."""

    abstract = True

    def apply_async(self, *args: Any, **kwargs: Any) -> Any:
        if transaction.in_atomic_block:
            transaction.on_commit(lambda: super(TransactionAwareTask, self).apply_async(*args, **kwargs))
            return None
        return super().apply_async(*args, **kwargs)


class MailTask(TransactionAwareTask, QStashTask):  # the port: the custom base, combined
    abstract = True


#: Ticket PDFs rendered so far (pretix renders them in another task).
rendered_tickets: set[str] = set()


@autosend_task(base=MailTask, bind=True, acks_late=True)
def mail_send_task(self: Task, to: str, subject: str, body: str, ticket: str | None = None) -> Email:
    events.append(("mail_send_task", self.request.id))
    if ticket is not None and ticket not in rendered_tickets:
        raise self.retry(max_retries=5, countdown=10)  # refused: RetryNotSupported
    return Email(to=to, from_="pretix <tickets@pretix.example>", subject=subject, text=body)


@autosend_task(bind=True)
def mail_send_unless_pdf_missing(self: Task, to: str, ticket: str) -> Email | None:
    """The port of the retry above: skip now, send again once the PDF exists."""
    events.append(("mail_send_unless_pdf_missing", self.request.id))
    if ticket not in rendered_tickets:
        return None
    return Email(to=to, from_="pretix <tickets@pretix.example>", subject="Your ticket",
                 text=f"Ticket {ticket}")


def reset() -> None:
    events.clear()
    sent_campaigns.clear()
    opted_out.clear()
    rendered_tickets.clear()
