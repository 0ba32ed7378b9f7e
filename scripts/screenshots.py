"""Seed an emulator, a sandbox and a dashboard on loopback, then screenshot the pages.

Run through ``scripts/screenshots``. Everything stays on 127.0.0.1 (free ports, in
memory); about 30 emails are sent, a few of them made to fail with the sandbox's
chaos rules, so every state, the chart and the Rejected view have something to show.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx
from celery import Celery

from celery_qstash import Email, QStashTask
from celery_qstash.config import load_settings
from celery_qstash.local.dashboard import create_app
from celery_qstash.local.emulator import EmulatorServer
from celery_qstash.local.sandbox import SandboxServer
from celery_qstash.local.serving import ThreadedServer
from celery_qstash.publish.transports.qstash import client_for
from celery_qstash.status import StatusClient, TaskFilter

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "img"
#: The sandbox's destructive endpoints (chaos) take the key a send takes.
SANDBOX_AUTH = {"Authorization": "Bearer AS_screenshots"}
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
#: name -> (width, height, device pixel ratio): a desktop, and a phone (390x844, as an
#: iPhone 12-15 reports its viewport) drawn at twice the pixels, as the phone does.
SIZES = {"desktop": (1280, 900, 1), "phone": (390, 844, 2)}
PEOPLE = ["ada", "grace", "alan", "edsger", "barbara", "donald", "margaret", "ken", "dennis",
          "linus", "guido", "bjarne", "john", "frances", "radia", "shafi", "leslie", "tim"]


def _wait(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise SystemExit("the seeded tasks did not settle in time")


def seed(app: Celery, sandbox_url: str, status: StatusClient) -> None:
    @app.task(base=QStashTask, name="shop.send_welcome", max_retries=1, default_retry_delay=0)
    def send_welcome(name: str) -> Email:
        return Email(to=f"{name}@example.com", from_="hello@acme.example",
                     subject=f"Welcome to Acme, {name.title()}!",
                     html=f"<h1>Hi {name.title()}</h1><p>Thanks for signing up.</p>",
                     text=f"Hi {name.title()}, thanks for signing up.")

    @app.task(base=QStashTask, name="shop.send_receipt", max_retries=1, default_retry_delay=0)
    def send_receipt(name: str, order: int) -> Email:
        return Email(to=f"{name}@example.com", from_="billing@acme.example",
                     subject=f"Your receipt for order #{order}",
                     html=f"<p>Order <b>#{order}</b>: 3 items, 42.00 EUR.</p>",
                     text=f"Order #{order}: 3 items, 42.00 EUR.")

    @app.task(base=QStashTask, name="auth.send_password_reset", max_retries=1,
              default_retry_delay=0)
    def send_reset(name: str) -> Email:
        return Email(to=f"{name}@example.com", from_="security@acme.example",
                     subject="Reset your password", text="Click the link to reset it.")

    results = []
    for i, person in enumerate(PEOPLE):
        results.append(send_welcome.delay(person))
        if i % 2 == 0:
            results.append(send_receipt.delay(person, 1000 + i))
        if i % 5 == 0:
            results.append(send_reset.delay(person))
    _wait(lambda: all(r.ready() for r in results))
    # Two tasks that fail both attempts and land in the DLQ, one that needs a retry.
    httpx.post(f"{sandbox_url}/api/v1/chaos", json={"fail_next": 4, "status": 503},
               headers=SANDBOX_AUTH)
    doomed = [send_receipt.delay("mallory", 1999), send_welcome.delay("trudy")]
    _wait(lambda: all(r.ready() for r in doomed))
    httpx.post(f"{sandbox_url}/api/v1/chaos", json={"fail_next": 1, "status": 500},
               headers=SANDBOX_AUTH)
    flaky = send_reset.delay("eve")
    _wait(flaky.ready)
    # Waiting (countdown) and revoked ones.
    for person in ("oscar", "peggy", "victor"):
        send_welcome.apply_async((person,), countdown=3600)
    send_receipt.apply_async(("walter", 2001), countdown=3600).revoke()
    # Requests the sandbox refuses: a validation error and a missing key.
    httpx.post(f"{sandbox_url}/v1/mails/send", headers={"Authorization": "Bearer AS_x"},
               json={"to": {"email": "not-an-address"}, "from": {"email": "a@acme.example"},
                     "subject": "Oops", "text": "x"})
    httpx.post(f"{sandbox_url}/v1/mails/send", json={"subject": "No key"})


def main() -> None:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with SandboxServer(rate_per_second=None, rate_per_minute=None) as sandbox, \
            EmulatorServer(routes={"https://api.autosend.com": sandbox.url}) as emulator:
        app = Celery("screenshots", set_as_current=False)
        app.conf.update(qstash_url=emulator.url, qstash_token=emulator.token,
                        autosend_api_key="AS_screenshots", autosend_rate_limit="off",
                        result_backend="celery_qstash.status.result:QStashBackend")
        settings = load_settings(app.conf)
        status = StatusClient(client_for(settings))
        board_app = create_app(status, secrets=settings.secrets, inbox_url=sandbox.url)
        with ThreadedServer(board_app) as board:
            sandbox.sandbox.api.dashboard_url = board.url
            seed(app, sandbox.url, status)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
                shots = {
                    "dashboard": f"{board.url}/tasks?refresh=0",
                    "inbox": f"{sandbox.url}/inbox?refresh=0",
                }
                folder = OUT
                if "--more" in sys.argv:  # every other page, to artifacts/ (not committed)
                    failed = status.tasks(TaskFilter(state="FAILURE"))[0].task_id
                    first = httpx.get(f"{sandbox.url}/api/v1/messages").json()["messages"][0]
                    shots.update({
                        "task": f"{board.url}/tasks/{failed}",
                        "dlq": f"{board.url}/dlq?refresh=0",
                        "queues": f"{board.url}/queues?refresh=0",
                        "message": f"{sandbox.url}/inbox/{first['id']}",
                        "source": f"{sandbox.url}/inbox/{first['id']}?tab=source",
                        "rejected": f"{sandbox.url}/rejected",
                    })
                    folder = ROOT / "artifacts"
                    folder.mkdir(exist_ok=True)
                for size, (width, height, scale) in SIZES.items():
                    phone = size == "phone"
                    context = browser.new_context(viewport={"width": width, "height": height},
                                                  device_scale_factor=scale, is_mobile=phone,
                                                  has_touch=phone)
                    page = context.new_page()
                    for name, url in shots.items():
                        page.goto(url)
                        target = (folder / f"{name}{'-phone' if phone else ''}.png").resolve()
                        page.screenshot(path=str(target))
                        print(f"{target}: {target.stat().st_size // 1024} KiB")
                    context.close()
                browser.close()
        app.close()


if __name__ == "__main__":
    main()
