"""A newsletter to a few thousand readers: AutoSend's bulk endpoint in chunks, through a queue.

From AutoSend's guide "Send Emails with QStash" (on docs.autosend.com): "Send a Bulk
Email" with a ``recipients`` array, and "Scheduling and Retries": ``enqueueJSON`` to an
``email-queue`` so the sends go one at a time.

AutoSend's bulk endpoint takes up to 100 recipients per call, so 3,000 readers are 30
messages, one per chunk. The queue delivers them in order, one at a time; when AutoSend
answers 429 (2 requests a second, 50 a minute), QStash retries after its ``Retry-After``.

Run it offline: ``python -m examples.newsletter`` (the emulator's and the sandbox's
shared clock is moved forward instead of waiting for the rate limits).
"""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery, group

from celery_qstash import BulkEmail, QStashTask
from celery_qstash.email import MAX_BULK_RECIPIENTS

app = Celery("newsletter")
app.conf.task_routes = {"examples.newsletter.*": {"queue": "email-queue"}}


@app.task(base=QStashTask, name="examples.newsletter.send_chunk", max_retries=10)
def send_chunk(issue: int, readers: list[dict[str, str]]) -> BulkEmail:
    return BulkEmail(
        from_="Your Company <news@yourdomain.example>",
        subject=f"Your monthly newsletter #{issue}",
        html="<h1>This month in product</h1><p>Hi {{name}}, here's what shipped...</p>",
        recipients=[
            {"email": r["email"], "name": r["name"], "dynamic_data": {"name": r["name"]}}
            for r in readers
        ],
    )


def send_newsletter(issue: int, readers: Sequence[dict[str, str]]) -> list[str]:
    """One bulk message per chunk of at most 100 readers, all in the queue."""
    chunks = [list(readers[i:i + MAX_BULK_RECIPIENTS])
              for i in range(0, len(readers), MAX_BULK_RECIPIENTS)]
    results = group(
        send_chunk.s(issue, chunk).set(task_id=f"newsletter-{issue}-{n}")
        for n, chunk in enumerate(chunks)
    ).apply_async()
    return [r.id for r in results.results]


def readers(count: int) -> list[dict[str, str]]:
    return [{"email": f"reader{i}@example.com", "name": f"Reader {i}"} for i in range(count)]


def main() -> None:
    import httpx

    from celery_qstash.clock import FakeClock
    from celery_qstash.testing import DevServers

    with DevServers(clock=FakeClock()) as servers:
        servers.configure(app)
        ids = send_newsletter(1, readers(3000))
        print(f"published {len(ids)} bulk messages to the queue")
        seconds = 0
        while True:
            servers.advance(1)
            seconds += 1
            total = httpx.get(f"{servers.sandbox.url}/api/v1/messages",
                              params={"limit": 1}).json()["total"]
            if total >= 3000 or seconds > 3600:
                break
        print(f"{total} emails in the sandbox after {seconds} s of (simulated) time")


if __name__ == "__main__":
    main()
