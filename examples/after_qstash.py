"""AFTER: the same task on QStash + AutoSend. One import and one decorator changed;
no broker, no worker. The body now *returns* the email instead of sending it: it
runs at call time in the caller's process, is validated there, and is published
as one QStash message whose destination is AutoSend's ``/v1/mails/send``.

Settings (Celery conf keys or environment variables): ``QSTASH_TOKEN``,
``AUTOSEND_API_KEY`` (and ``QSTASH_URL`` for another region), or
``QSTASH_DEV=true`` to use ``celery-qstash dev`` on this machine.
"""

from __future__ import annotations

from celery import Celery

from celery_qstash import BulkEmail, Email, autosend_task

app = Celery("shop")  # no broker needed for these tasks


@autosend_task(bind=True, max_retries=5, default_retry_delay=30, rate_limit="2/s")
def send_welcome(self: object, user_id: int, email: str, first_name: str) -> Email:
    return Email(
        to=f"{first_name} <{email}>",
        from_="Acme <hello@acme.example>",
        subject=f"Welcome to Acme, {first_name}!",
        html="<h1>Welcome, {{first_name}}!</h1><p>Thanks for signing up.</p>",
        text="Welcome, {{first_name}}! Thanks for signing up.",
        dynamic_data={"first_name": first_name},
        categories=["welcome"],
    )


@autosend_task(max_retries=3)
def send_newsletter(issue: int, readers: list[dict[str, str]]) -> BulkEmail:
    return BulkEmail(
        from_="Acme <news@acme.example>",
        subject=f"Acme monthly #{issue}",
        html="<p>Hi {{name}}, here is what shipped this month.</p>",
        recipients=[{"email": r["email"], "dynamic_data": {"name": r["name"]}} for r in readers],
    )


# Call sites, unchanged:
#   send_welcome.delay(user.id, user.email, user.first_name)
#   result = send_welcome.apply_async((user.id, user.email, user.first_name), countdown=90)
#   result.id          -> the Celery task id (also the QStash dedup id and AutoSend Idempotency-Key)
#   result.message_id  -> QStash's message id


@autosend_task(max_retries=3, retry_backoff=True, retry_jitter=False)
def send_password_reset(email: str, link: str) -> dict[str, object]:
    # A plain dict of AutoSend fields works too; it is validated the same way.
    # retry_backoff=True: QStash retries after 1 s, 2 s, 4 s (Celery's formula, in ms).
    return {
        "to": {"email": email},
        "from": {"email": "security@acme.example", "name": "Acme"},
        "subject": "Reset your password",
        "html": '<p><a href="{{link}}">Choose a new password</a></p>',
        "dynamicData": {"link": link},
    }
