"""A plain script: send one welcome email and wait until AutoSend has it.

    celery-qstash dev                                # in another terminal
    QSTASH_DEV=true python examples/send_one.py jane@example.com Jane

With ``QSTASH_TOKEN`` and ``AUTOSEND_API_KEY`` set instead, the same script sends
through real QStash to real AutoSend. No broker, no worker: the call publishes one
QStash message, and ``get()`` reads the outcome from QStash's logs API.
"""

from __future__ import annotations

import argparse
import sys

from celery import Celery

from celery_qstash import Email, QStashTask

app = Celery("send_one")  # settings come from the environment (QSTASH_DEV, QSTASH_TOKEN...)


@app.task(base=QStashTask, name="send_one.send_welcome", max_retries=3)
def send_welcome(email: str, first_name: str) -> Email:
    return Email(
        to=f"{first_name} <{email}>",
        from_="Acme <hello@acme.example>",
        subject=f"Welcome to Acme, {first_name}!",
        html="<p>Welcome, {{first_name}}!</p>",
        text="Welcome, {{first_name}}!",
        dynamic_data={"first_name": first_name},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("email")
    parser.add_argument("first_name", nargs="?", default="there")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for delivery")
    args = parser.parse_args(argv)

    result = send_welcome.delay(args.email, args.first_name)
    print(f"published task {result.id} (QStash message {result.message_id})")
    data = result.get(timeout=args.timeout)  # DeliveryFailed if AutoSend said no
    print(f"{result.state}: AutoSend queued email {data['emailId']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
