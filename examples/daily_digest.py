"""A daily digest at 07:00 (Europe/Paris), sent by QStash's scheduler: ``celery-qstash beat sync``.

From QStash's getting-started examples (on upstash.com/docs/qstash): "Schedule to run
once a day", ``Upstash-Cron: 0 0 * * *`` / ``client.schedule.create(...)``; and
AutoSend's guide "Send Emails with QStash" (on docs.autosend.com): "Scheduled email
delivery - send emails at a specific time without a cron job".

The beat entry stays in ``beat_schedule`` as it would for celery beat;
``celery-qstash beat sync -A examples.daily_digest:app`` turns it into a QStash schedule
(``CRON_TZ=Europe/Paris 0 7 * * *``). The email is rendered at sync time: run sync again
(in your deploy step) when its content should change.

Run it offline: ``python -m examples.daily_digest`` (syncs to the emulator, then moves its
clock over two mornings).
"""

from __future__ import annotations

from celery import Celery
from celery.schedules import crontab

from celery_qstash import Email, QStashTask

app = Celery("digest")
app.conf.timezone = "Europe/Paris"
app.conf.beat_schedule = {
    "daily digest": {
        "task": "examples.daily_digest.send_digest",
        "schedule": crontab(minute=0, hour=7),
        "args": ("team@yourdomain.example",),
    },
}


@app.task(base=QStashTask, name="examples.daily_digest.send_digest")
def send_digest(to: str) -> Email:
    return Email(
        to=to,
        from_="Digest <digest@yourdomain.example>",
        subject="Your daily digest",
        html="<p>Here is what happened since yesterday.</p>",
    )


#: 2027-03-01 06:59 in Paris (05:59 UTC): a minute before the first digest.
START = 1_803_880_740.0


def main() -> None:
    from celery_qstash.clock import FakeClock
    from celery_qstash.schedules.beat import sync
    from celery_qstash.testing import DevServers

    with DevServers(clock=FakeClock(START)) as servers:
        servers.configure(app)
        for change in sync(app):
            print(f"beat sync: {change.action} {change.schedule_id} ({change.cron})")
        servers.advance(60)
        print(f"07:00 day 1: {len(servers.emails())} digest(s)")
        servers.advance(24 * 60 * 60)
        print(f"07:00 day 2: {len(servers.emails())} digest(s)")


if __name__ == "__main__":
    main()
