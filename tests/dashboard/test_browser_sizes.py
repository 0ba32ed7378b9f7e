"""Every dashboard and inbox page at a desktop's 1280x900 and a phone's 390x844 (headless
Chromium): nothing sticks out past the viewport's edge, the page never scrolls sideways,
no control is cut off by the box it sits in, and what a reader comes for is on screen
(a task's subject, the chart, a card per task). Each page is screenshotted at both sizes
into ``artifacts/pages/`` for a person to look at.

The pages are seeded with the shapes that used to break them: an id of 120 characters,
long addresses and subjects, a dead letter, a waiting task in a queue, a schedule, a
refused request and an email in every tab.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery.schedules import crontab

from celery_qstash.schedules.beat import sync

from .conftest import Stack
from .test_browser import _fail, wait_for

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "pages"
SIZES = {"desktop": (1280, 900), "phone": (390, 844)}
LONG_ID = "order-" + "x" * 114  # 120 characters, no space to break at

#: Whatever sticks out: an element past the viewport's edge (unless a box that clips or
#: scrolls holds it), and a control cut off by such a box.
OVERFLOW = """(width) => {
  const controls = 'button, select, summary, input:not([type=hidden]), .button, .pill, .count';
  const name = (el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
      + (el.className && typeof el.className === 'string' ? '.' + el.className.split(' ')[0] : '');
  const out = [];
  for (const el of document.body.querySelectorAll('*')) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.height === 0 || !el.checkVisibility()) continue;
    let clip = null;
    for (let up = el.parentElement; up && up !== document.body; up = up.parentElement) {
      if (getComputedStyle(up).overflowX !== 'visible') { clip = up; break; }
    }
    if (!clip && (box.right > width + 0.5 || box.left < -0.5)) {
      out.push(name(el) + ' spans ' + Math.round(box.left) + '..' + Math.round(box.right));
    } else if (clip && el.matches(controls)) {
      const outer = clip.getBoundingClientRect();
      if (box.right > outer.right + 0.5 || box.left < outer.left - 0.5) {
        out.push(name(el) + ' cut off by ' + name(clip));
      }
    }
  }
  return {scroll: document.documentElement.scrollWidth, overflow: out.slice(0, 10)};
}"""


@dataclass
class Seeded:
    pages: dict[str, str]  # name -> URL
    subject: str


@pytest.fixture(scope="module")
def seeded(stack: Stack) -> Iterator[Seeded]:
    subject = "Your receipt for order 1999: three items, shipped to a long address"
    ok = stack.send.apply_async(
        ("someone.with.a.really.long.name@subdomain.example-company.com", subject),
        task_id=LONG_ID)
    ok.get(timeout=15)
    waiting = stack.send.apply_async(("later@example.com", "Waiting in a queue"),
                                     countdown=3600, queue="phone-queue")
    failed = _fail(stack, "failing.person@example.com", "This one fails twice")
    assert wait_for(lambda: stack.status.dlq(count=100)[0])
    httpx.post(f"{stack.sandbox.url}/v1/mails/send", headers={"Authorization": "Bearer AS_x"},
               json={"to": {"email": "not-an-address"}, "from": {"email": "a@acme.example"},
                     "subject": "Refused", "text": "x"})
    stack.app.conf.beat_schedule = {
        "a nightly digest with a long name": {
            "task": "it.send_welcome", "schedule": crontab(hour=3, minute=0),
            "args": ("digest@example.com", "Nightly digest")},
    }
    sync(stack.app)
    # An HTML email as marketing tools make them: a 600px table, wider than a phone.
    sent = httpx.post(f"{stack.sandbox.url}/v1/mails/send", headers={"Authorization": "Bearer AS_x"},
                      json={"to": {"email": "reader@example.com"},
                            "from": {"email": "news@acme.example", "name": "Acme News"},
                            "subject": "The spring newsletter",
                            "html": '<table width="600"><tr><td><h1>Spring</h1><p>'
                                    + "Long words: " + "x" * 200 + "</p></td></tr></table>",
                            "text": "Spring news " + "y" * 300})
    assert sent.status_code == 200, sent.text
    emails = httpx.get(f"{stack.sandbox.url}/api/v1/messages").json()["messages"]
    email = next(m for m in emails if m["subject"] == "The spring newsletter")["id"]
    board, inbox = stack.dashboard_url, stack.sandbox.url
    pages = {
        "tasks": f"{board}/tasks?refresh=0",
        "task-success": f"{board}/tasks/{LONG_ID}",
        "task-failed": f"{board}/tasks/{failed.id}",
        "task-waiting": f"{board}/tasks/{waiting.id}",
        "task-unknown": f"{board}/tasks/no-such-task",
        "dlq": f"{board}/dlq?refresh=0",
        "queues": f"{board}/queues?refresh=0",
        "queue": f"{board}/queues/phone-queue?refresh=0",
        "schedules": f"{board}/schedules?refresh=0",
        "inbox": f"{inbox}/inbox?refresh=0",
        "rejected": f"{inbox}/rejected",
        "email-unknown": f"{inbox}/inbox/no-such-email",
        **{f"email-{tab}": f"{inbox}/inbox/{email}?tab={tab}"
           for tab in ("html", "text", "source", "headers", "request")},
        "email-html-mobile": f"{inbox}/inbox/{email}?tab=html&width=mobile",
    }
    try:
        yield Seeded(pages, subject)
    finally:
        stack.app.conf.beat_schedule = {}
        sync(stack.app)


@pytest.fixture(scope="module", params=list(SIZES))
def size(request: pytest.FixtureRequest, browser: Any) -> Iterator[tuple[str, Any]]:
    width, height = SIZES[request.param]
    phone = request.param == "phone"
    context = browser.new_context(viewport={"width": width, "height": height},
                                  is_mobile=phone, has_touch=phone,
                                  device_scale_factor=2 if phone else 1)
    page = context.new_page()
    try:
        yield request.param, page
    finally:
        context.close()


@pytest.mark.parametrize("name", [
    "tasks", "task-success", "task-failed", "task-waiting", "task-unknown", "dlq", "queues",
    "queue", "schedules", "inbox", "rejected", "email-unknown", "email-html", "email-text",
    "email-source", "email-headers", "email-request", "email-html-mobile",
])
def test_nothing_overflows_the_viewport(seeded: Seeded, size: tuple[str, Any], name: str
                                        ) -> None:
    label, page = size
    width = SIZES[label][0]
    page.goto(seeded.pages[name])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}-{label}.png"), full_page=True)
    found = page.evaluate(OVERFLOW, width)
    assert found["overflow"] == [], found
    assert found["scroll"] <= width, found  # no sideways scrolling
    # And with every confirmation open (Revoke, Delete, Clear all): its button fits too.
    if page.evaluate("document.querySelectorAll('details.confirm').length"):
        page.evaluate("document.querySelectorAll('details.confirm').forEach(d => d.open = true)")
        page.screenshot(path=str(ARTIFACTS / f"{name}-{label}-confirm.png"), full_page=True)
        opened = page.evaluate(OVERFLOW, width)
        assert opened["overflow"] == [], opened
        assert opened["scroll"] <= width, opened


def test_on_a_phone_each_task_is_a_card_with_its_subject(seeded: Seeded,
                                                         size: tuple[str, Any]) -> None:
    label, page = size
    page.goto(seeded.pages["tasks"] + f"&search={LONG_ID}")
    row = page.locator("table.tasks tbody tr").first
    cell = row.locator('td[data-label="Subject"]')
    box = cell.bounding_box()
    assert box is not None and box["width"] > 0
    if label == "phone":
        # The whole subject is readable, wrapped, not cut to a few characters.
        assert seeded.subject in cell.inner_text()
        assert row.bounding_box()["width"] >= SIZES["phone"][0] * 0.9  # a card: the full width
        assert page.locator("table.tasks thead").is_hidden()
        assert row.locator('td[data-label="Status"]').is_hidden()  # low priority: left out
    # The chart fits, at either size.
    chart = page.locator("svg.throughput").bounding_box()
    assert chart is not None and chart["x"] + chart["width"] <= SIZES[label][0]


def test_on_a_phone_the_inbox_shows_subject_and_sender(seeded: Seeded,
                                                       size: tuple[str, Any]) -> None:
    label, page = size
    page.goto(seeded.pages["inbox"])
    row = page.locator("table.inbox tbody tr", has_text=seeded.subject).first
    assert seeded.subject in row.locator("td.subject").inner_text()
    sender = row.locator('td[data-label="From"]')
    assert sender.is_visible() and "hello@acme.example" in sender.inner_text()
    label_shown = sender.evaluate("td => getComputedStyle(td, '::before').content")
    if label == "phone":
        assert label_shown == '"From"'  # a card: each line says what it is
        assert page.locator("table.inbox thead").is_hidden()
    else:
        assert label_shown in ("none", "normal")  # a table: the column header says it
