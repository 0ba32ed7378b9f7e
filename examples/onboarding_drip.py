"""An onboarding drip: emails at day 0, 1, 3 and 7 after signup, each sent once.

From AutoSend's guide "Send Emails with QStash" (on docs.autosend.com): the
"Onboarding Drip Sequence" example, ``delay: "1d" / "3d" / "7d"`` and
``deduplicationId: `onboard-day{n}-${user.id}```.

Each step is one ``apply_async`` with a ``countdown``: QStash holds the message until
it is due, so there is no beat process and no worker.

Run it offline: ``python -m examples.onboarding_drip`` (the emulator's clock is moved a
week forward instead of waiting one).
"""

from __future__ import annotations

from celery import Celery

from celery_qstash import Email, QStashTask

app = Celery("onboarding")

DAY = 24 * 60 * 60

#: (day, subject, html): the seed's sequence.
STEPS = [
    (0, "Welcome!", "<p>Hi {{name}}, welcome to our platform!</p>"),
    (1, "Getting started tips", "<p>Hi {{name}}, here are 3 things to try today...</p>"),
    (3, "How's it going?", "<p>Hi {{name}}, just checking in. Need any help?</p>"),
    (7, "Your first week", "<p>You've been with us for a week, {{name}}. Here's what's new...</p>"),
]


@app.task(base=QStashTask, name="examples.onboarding_drip.send_step")
def send_step(day: int, email: str, name: str) -> Email:
    subject, html = next((s, h) for d, s, h in STEPS if d == day)
    return Email(
        to=f"{name} <{email}>",
        from_="Your Company <hello@yourdomain.example>",
        subject=subject,
        html=html,
        dynamic_data={"name": name},
    )


def queue_onboarding(user_id: int, email: str, name: str) -> list[str]:
    """Publish the whole sequence at signup; returns the task ids."""
    return [
        send_step.apply_async(
            (day, email, name), countdown=day * DAY, task_id=f"onboard-day{day}-{user_id}"
        ).id
        for day, _, _ in STEPS
    ]


def main() -> None:
    from celery_qstash.clock import FakeClock
    from celery_qstash.testing import DevServers

    with DevServers(clock=FakeClock()) as servers:
        servers.configure(app)
        queue_onboarding(7, "grace@example.com", "Grace")
        elapsed = 0
        for day in (0, 1, 3, 7):
            servers.advance(day * DAY - elapsed)
            elapsed = day * DAY
            subjects = [e["subject"] for e in reversed(servers.emails())]
            print(f"day {day}: inbox holds {subjects}")


if __name__ == "__main__":
    main()
