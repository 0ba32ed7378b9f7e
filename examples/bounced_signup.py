"""A signup whose welcome email bounces: the user's address is marked bad, by the signal.

Seed: ``000_6dd35d62fa563f86.txt`` (AutoSend's "Send Emails with QStash": the signup
welcome email, and "What QStash Does Not Handle": delivery to the inbox, bounces and
complaints, "refer to the webhooks documentation").

QStash's logs say AutoSend accepted the email; whether it reached the inbox only
AutoSend knows, and tells the app through signed webhooks. Mount
``celery_qstash.webhooks`` (here: ``asgi_app``), set ``autosend_webhook_secret``, and
connect ``email_event``: a Permanent bounce marks the address bad, so the app stops
sending to it and can ask the user for another one.

Run it offline (emulator, sandbox and the app's endpoint in-process, on one fake clock):
``python -m examples.bounced_signup``. The sandbox bounces ``bounce@…`` as AWS SES's
mailbox simulator does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from celery import Celery

from celery_qstash import Email, QStashTask
from celery_qstash.signals import email_event

app = Celery("bounced_signup")


@dataclass
class User:
    id: int
    email: str
    name: str
    email_bad: bool = False


#: The app's database, as far as this example needs one.
USERS: dict[int, User] = {}


@app.task(base=QStashTask, name="examples.bounced_signup.send_welcome")
def send_welcome(user_id: int) -> Email:
    user = USERS[user_id]
    return Email(to=user.email, from_="hello@yourdomain.example",
                 subject=f"Welcome, {user.name}!", text="Thanks for signing up.")


def sign_up(user: User) -> str:
    USERS[user.id] = user
    return str(send_welcome.apply_async((user.id,), task_id=f"welcome-{user.id}").id)


@email_event.connect
def mark_bounced_addresses(sender: Any = None, *, event: str, recipient: str | None,
                           bounce_type: str | None, **kwargs: Any) -> None:
    """A Permanent bounce means the address does not exist: stop mailing it."""
    if event == "email.bounced" and bounce_type == "Permanent" and recipient:
        for user in USERS.values():
            if user.email.lower() == recipient.lower():
                user.email_bad = True


def run() -> dict[int, User]:
    """Two signups, one to an address that bounces; returns the users afterwards."""
    from celery_qstash.clock import FakeClock
    from celery_qstash.local.serving import ThreadedServer
    from celery_qstash.testing import DevServers
    from celery_qstash.webhooks import asgi_app

    clock = FakeClock(time.time())
    with DevServers(clock=clock) as servers:
        servers.configure(app)    # QStash, AutoSend and the webhook secret
        with ThreadedServer(asgi_app(app, clock=clock)) as endpoint:
            servers.send_webhooks_to(endpoint.url)
            sign_up(User(1, "ada@example.com", "Ada"))
            sign_up(User(2, "bounce@example.com", "Bo"))
            # QStash delivers both emails (AutoSend's rate limit, 2 a second, may space
            # them), then AutoSend's webhooks come: sent, then delivered, and bounced.
            for _ in range(5):
                servers.advance(1)
    return USERS


def main() -> None:
    for user in run().values():
        print(f"{user.name} <{user.email}>: " + ("address marked bad (bounced)"
                                                 if user.email_bad else "address fine"))


if __name__ == "__main__":
    main()
