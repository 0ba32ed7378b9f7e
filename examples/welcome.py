"""A signup welcome email, deduplicated per user: a second signup sends nothing.

From AutoSend's guide "Send Emails with QStash" (on docs.autosend.com): "Using
Deduplication" and its signup example, ``deduplicationId: `welcome-${userId}```.

The task id is the deduplication id: QStash drops a second publish with the same id
within its window, and AutoSend's ``Idempotency-Key`` (the same id) replays the first
answer if QStash ever delivers twice.

Run it offline (emulator + sandbox in-process): ``python -m examples.welcome``
"""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery

from celery_qstash import Email, QStashTask

app = Celery("welcome")


@dataclass
class User:
    id: int
    email: str
    name: str


@app.task(base=QStashTask, name="examples.welcome.send_welcome")
def send_welcome(user_id: int, email: str, name: str) -> Email:
    return Email(
        to=f"{name} <{email}>",
        from_="Your Company <hello@yourdomain.example>",
        subject="Welcome, {{name}}!",
        html="<h1>Welcome aboard, {{name}}!</h1><p>Thanks for signing up.</p>",
        dynamic_data={"name": name},
    )


def on_signup(user: User) -> str:
    """Call this from the signup view; calling it twice for one user sends one email."""
    result = send_welcome.apply_async(
        (user.id, user.email, user.name), task_id=f"welcome-{user.id}"
    )
    return str(result.message_id)


def main() -> None:
    from celery_qstash.testing import DevServers

    with DevServers() as servers:
        servers.configure(app)
        ada = User(42, "ada@example.com", "Ada")
        first, second = on_signup(ada), on_signup(ada)
        print(f"first signup -> QStash message {first}; second -> {second} (the same message)")
        result = send_welcome.AsyncResult(f"welcome-{ada.id}")
        print(f"delivered: {result.get(timeout=10)}")
        for email in servers.wait_for_emails(1):
            print(f"inbox: {email['to']['email']}: {email['renderedSubject']}")


if __name__ == "__main__":
    main()
