"""A notification digest rendered when it goes out (the openwisp-notifications shape).

Before, on Celery: the first unread notification schedules a digest three hours later;
the digest task reads what is unread *then* (more may have piled up, or the user may
have read everything) and sends one email, or none::

    @shared_task
    def send_email_digest(user_id):
        items = Notification.objects.filter(recipient=user_id, unread=True, emailed=False)
        if not items:
            return
        send_mail(...); items.update(emailed=True)

    send_email_digest.apply_async((user.id,), countdown=3 * 60 * 60)

After: the same task under ``@autosend_task(deferred=True)``. Its body runs at delivery
on the app's receiver, so it reads the state at that moment; it returns the email (or
None) and the email goes to AutoSend through QStash with an idempotency key derived from
the task id (a redelivered digest is never sent twice). The daily digest in
``beat_schedule`` becomes a QStash schedule (``celery-qstash beat sync``) that runs the
body every morning, each firing sent at most once.

Run it offline: ``python -m examples.notification_digest`` (the emulator, the sandbox and
the app's receiver on loopback, on a clock it moves instead of waiting three hours).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from celery import Celery
from celery.schedules import crontab

from celery_qstash import Email, autosend_task

if TYPE_CHECKING:
    from celery_qstash.testing import DevServers

app = Celery("notifications")
app.conf.timezone = "UTC"
app.conf.beat_schedule = {
    "morning digest": {
        "task": "examples.notification_digest.send_email_digest",
        "schedule": crontab(minute=0, hour=7),
        "args": (1,),
    },
}

#: Three hours, as openwisp-notifications' EMAIL_BATCH_INTERVAL default.
BATCH_INTERVAL = 3 * 60 * 60


@dataclass
class Notification:
    recipient: int
    verb: str
    unread: bool = True
    emailed: bool = False


#: The app's database, in miniature.
NOTIFICATIONS: list[Notification] = []
USERS = {1: "ada@example.com"}


def notify(user_id: int, verb: str) -> None:
    """A new notification; the first unread one schedules the digest."""
    pending = [n for n in NOTIFICATIONS if n.recipient == user_id and not n.emailed]
    NOTIFICATIONS.append(Notification(user_id, verb))
    if not pending:
        send_email_digest.apply_async((user_id,), countdown=BATCH_INTERVAL)


@autosend_task(deferred=True, name="examples.notification_digest.send_email_digest")
def send_email_digest(user_id: int) -> Email | None:
    items = [n for n in NOTIFICATIONS if n.recipient == user_id and n.unread and not n.emailed]
    if not items:
        return None  # read meanwhile: nothing to send
    for item in items:
        item.emailed = True
    lines = "\n".join(f"- {n.verb}" for n in items)
    return Email(
        to=USERS[user_id],
        from_="Notifications <notify@yourdomain.example>",
        subject=f"{len(items)} new notification{'s' * (len(items) > 1)}",
        text=f"Since your last digest:\n{lines}",
    )


@contextmanager
def offline() -> Iterator[DevServers]:
    """The emulator and the sandbox on a fake clock, and this app's receiver, on loopback."""
    from celery_qstash.clock import FakeClock
    from celery_qstash.testing import DevServers

    # The receiver keeps the emulator's (fake) time: QStash's signatures are valid for
    # five minutes of it.
    with DevServers(clock=FakeClock()) as servers, servers.receiver(app):
        servers.configure(app)
        yield servers


def main() -> None:
    with offline() as servers:
        notify(1, "Grace commented on your post")
        notify(1, "Linus liked your post")
        servers.advance(60 * 60)
        notify(1, "Ken shared your post")  # piles up before the digest goes out
        servers.advance(BATCH_INTERVAL)
        for email in servers.emails():
            print(f"{email['to']['email']}: {email['subject']}")
        notify(1, "Barbara followed you")
        NOTIFICATIONS[-1].unread = False  # read on the site before the digest
        servers.advance(BATCH_INTERVAL)
        print(f"{len(servers.emails())} digest(s) in all")


if __name__ == "__main__":
    main()
