"""The dashboard and the sandbox inbox in headless Chromium (Debian's ``chromium``).

Every page and control a person uses: the tasks list (it must show 15 tasks at
1280x900 without scrolling sideways), counts, the chart, filters, a task's page
with its revoke confirm step, Retry and the links to its dead letter and its
email, the DLQ's filter and bulk actions, a queue's pause/resume, and the inbox's
search, tabs, widths, newer/older, delete, clear all and Rejected view. Everything
here is links and forms; the one script (``/live.js``) only updates lists in place
(``test_browser_live.py``). The ``browser`` fixture is in ``conftest.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import Stack

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"

pytestmark = pytest.mark.browser


def test_find_a_task_see_its_timeline_and_revoke_it(browser: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    result = stack.send.apply_async(("grace@example.com", "See you in an hour"), countdown=3600)
    page = browser.new_page()
    try:
        # The tasks page, filtered the way a user would: by state, then by search.
        page.goto(f"{stack.dashboard_url}/tasks")
        expect(page.locator("h1")).to_have_text("Tasks")
        page.select_option("select[name=state]", "PENDING")
        page.fill("input[name=search]", "grace@example.com")
        page.click("button[type=submit]")
        row = page.locator("table.tasks tbody tr", has_text=result.id)
        expect(row).to_have_count(1)
        expect(row).to_contain_text("PENDING")

        # Its page: the timeline, the request summary, the revoke button.
        row.get_by_role("link", name=result.id).click()
        expect(page).to_have_url(f"{stack.dashboard_url}/tasks/{result.id}")
        timeline = page.locator("table.timeline")
        expect(timeline).to_contain_text("CREATED")
        expect(page.locator("dl.kv").nth(1)).to_contain_text("See you in an hour")
        expect(page.locator("body")).not_to_contain_text("AS_test")

        page.click("#revoke")  # opens the confirm step; nothing is cancelled yet
        assert stack.app.AsyncResult(result.id).state == "PENDING"
        page.get_by_role("button", name="Yes, revoke").click()
        expect(page.locator(".notice")).to_contain_text("Revoke requested")
        expect(page.locator("h1 .badge")).to_have_text("REVOKED")
        expect(timeline).to_contain_text("CANCEL_REQUESTED")
        expect(page.locator("#revoke")).to_have_count(0)

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-task.png"), full_page=True)
    finally:
        page.close()

    assert stack.app.AsyncResult(result.id).state == "REVOKED"
    assert (ARTIFACTS / "dashboard-task.png").stat().st_size > 0


def wait_for(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def _fail(stack: Stack, to: str, subject: str) -> Any:
    """A task whose two attempts both fail: it lands in the DLQ."""
    stack.chaos(fail_next=2, status=503)
    try:
        result = stack.send.delay(to, subject)
        assert wait_for(result.ready)
    finally:
        stack.calm()
    return result


def test_the_tasks_page_shows_15_tasks_at_1280x900_without_scrolling_sideways(
    browser: Any, stack: Stack
) -> None:
    from playwright.sync_api import expect

    for i in range(26):
        stack.send.apply_async((f"person{i}-with-a-rather-long-address@example.com",
                                f"A long subject line that goes on and on, number {i}"),
                               countdown=3600)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(f"{stack.dashboard_url}/tasks?refresh=0")
        expect(page.locator("table.tasks tbody tr")).to_have_count(25)
        fit = page.evaluate("""() => ({
            scroll: document.documentElement.scrollWidth,
            client: document.documentElement.clientWidth,
            rows: [...document.querySelectorAll('table.tasks tbody tr')]
                .filter(r => r.getBoundingClientRect().bottom <= window.innerHeight).length,
            lineHeights: [...document.querySelectorAll('table.tasks tbody tr')]
                .map(r => r.getBoundingClientRect().height),
        })""")
        assert fit["scroll"] <= fit["client"], fit
        assert fit["rows"] >= 15, fit
        assert max(fit["lineHeights"]) < 40  # one line per task: nothing wraps
        # The full id is in the link (hover title and copy), the cell shows it cut short.
        first = page.locator("table.tasks a.id").first
        assert first.get_attribute("title") == first.inner_text()
        expect(page.locator("svg.throughput, .chart figcaption").first).to_be_visible()
        expect(page.locator("header .utc")).to_have_text("All times UTC")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-tasks.png"))
    finally:
        page.close()


def test_counts_filter_and_a_task_name_links_to_its_filter(browser: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    failed = _fail(stack, "fay@example.com", "Counts")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(f"{stack.dashboard_url}/tasks?refresh=0")
        page.click('a.count[data-state="FAILURE"]')
        expect(page.locator('a.count.on[data-state="FAILURE"]')).to_have_count(1)
        rows = page.locator("table.tasks tbody tr")
        expect(rows.filter(has_text=failed.id)).to_have_count(1)
        expect(rows.filter(has_text="PENDING")).to_have_count(0)
        rows.first.locator("td").nth(1).get_by_role("link").click()
        expect(page).to_have_url(f"{stack.dashboard_url}/tasks?name=it.send_welcome")
        expect(page.locator("select[name=name]")).to_have_value("it.send_welcome")
    finally:
        page.close()


def test_a_failed_task_page_links_its_dead_letter_and_retries(browser: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    failed = _fail(stack, "gus@example.com", "Retry me")
    page = browser.new_page()
    try:
        page.goto(f"{stack.dashboard_url}/tasks/{failed.id}")
        timeline = page.locator("table.timeline tbody tr")
        expect(timeline.filter(has_text="ERROR")).to_have_count(2)
        expect(timeline.filter(has_text="ERROR").nth(1)).to_contain_text("Service unavailable")
        expect(timeline.filter(has_text="ERROR").nth(1).locator("td").nth(2)).to_have_text("2")
        expect(page.locator("#inbox-link")).to_have_count(0)
        page.click("#dlq-link")
        expect(page.locator("table.dlq tbody tr")).to_have_count(1)
        expect(page.locator("table.dlq tbody tr")).to_contain_text("gus@example.com")
        page.go_back()
        page.click("#retry")
        expect(page.locator(".notice")).to_contain_text("Retried")
        assert wait_for(lambda: stack.app.AsyncResult(failed.id).state == "SUCCESS")
        page.reload()
        expect(page.locator("h1 .badge")).to_have_text("SUCCESS")
        # Delivered now: its page links the email, and the email links back.
        page.click("#inbox-link")  # the email itself, not a one-row list
        expect(page.locator("h1")).to_have_text("Retry me")
        page.click("#task-link")
        expect(page).to_have_url(f"{stack.dashboard_url}/tasks/{failed.id}")
    finally:
        page.close()


def test_dlq_filter_bulk_retry_and_confirmed_bulk_delete(browser: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    first = _fail(stack, "hal@example.com", "Bulk one")
    second = _fail(stack, "hal@example.com", "Bulk two")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(f"{stack.dashboard_url}/dlq")
        page.fill("input[name=q]", "hal@example.com")
        page.click("form.filters button[type=submit]")
        rows = page.locator("table.dlq tbody tr")
        expect(rows).to_have_count(2)
        rows.filter(has_text=first.id).locator("input[type=checkbox]").check()
        page.get_by_role("button", name="Retry selected").click()
        expect(page.locator(".notice")).to_have_text("Retried 1 dead letter.")
        expect(page.locator("input[name=q]")).to_have_value("hal@example.com")  # kept
        expect(rows).to_have_count(1)
        page.get_by_role("button", name="Delete all 1 shown").click()
        expect(page.locator("h1")).to_have_text("Delete 1 dead letters?")
        page.click("#confirm")
        expect(page.locator(".notice")).to_have_text("Deleted 1 dead letter.")
        expect(page.locator(".empty")).to_contain_text("No dead letter matches")
    finally:
        page.close()
    assert wait_for(lambda: stack.app.AsyncResult(first.id).state == "SUCCESS")
    assert stack.app.AsyncResult(second.id).state == "FAILURE"


def test_a_queue_page_pauses_and_resumes_and_lists_its_tasks(browser: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    stack.status.client.queue.upsert("browser-q", parallelism=1)
    page = browser.new_page()
    try:
        page.goto(f"{stack.dashboard_url}/queues")
        page.get_by_role("link", name="browser-q").click()
        page.click("#pause")
        expect(page.locator(".notice")).to_have_text("Paused queue browser-q.")
        result = stack.send.apply_async(("ivy@example.com", "Queued"), queue="browser-q")
        page.reload()
        expect(page.locator("table.tasks")).to_contain_text(result.id)
        expect(page.locator("table.tasks")).to_contain_text("PENDING")
        page.click("#resume")
        expect(page.locator(".notice")).to_have_text("Resumed queue browser-q.")
        assert wait_for(lambda: stack.app.AsyncResult(result.id).state == "SUCCESS")
    finally:
        page.close()


def test_inbox_search_tabs_widths_and_newer_older(browser: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    for who in ("jo", "kim", "lee"):
        stack.send.delay(f"{who}@inbox.example", f"Inbox test for {who}").get(timeout=15)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(f"{stack.sandbox.url}/inbox")
        expect(page.locator("#live")).to_contain_text("Live")
        page.fill("input[name=q]", "inbox.example")
        page.get_by_role("button", name="Search").click()
        rows = page.locator("table.inbox tbody tr")
        expect(rows).to_have_count(3)
        page.fill("input[name=q]", "kim@inbox")
        page.get_by_role("button", name="Search").click()
        expect(rows).to_have_count(1)
        rows.locator("td.subject a").click()
        expect(page.locator("h1")).to_have_text("Inbox test for kim")
        expect(page.locator("#tab-text")).to_have_class("here")  # no HTML part: text first
        expect(page.locator(".panel pre")).to_contain_text("Welcome!")
        page.click("#tab-source")
        expect(page.locator("pre.source")).to_contain_text("Subject: Inbox test for kim")
        page.click("#tab-headers")
        expect(page.locator(".panel dl.headers")).to_contain_text("Idempotency key")
        page.click("#tab-request")
        expect(page.locator(".panel")).to_contain_text('"subject": "Inbox test for kim"')
        page.click("#newer")
        expect(page.locator("h1")).to_have_text("Inbox test for lee")
        page.click("#older")
        page.click("#older")
        expect(page.locator("h1")).to_have_text("Inbox test for jo")
    finally:
        page.close()


def test_inbox_html_preview_at_desktop_and_mobile_widths(browser: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    headers = {"Authorization": "Bearer AS_test"}
    httpx.post(f"{stack.sandbox.url}/v1/mails/send", headers=headers, json={
        "to": {"email": "wide@inbox.example"}, "from": {"email": "a@acme.example"},
        "subject": "Rich", "html": "<h1 id=x>Hello</h1><script>parent.x=1</script>",
    }).raise_for_status()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(f"{stack.sandbox.url}/inbox?q=wide%40inbox.example")
        page.locator("td.subject a").click()
        frame = page.frame_locator("iframe[sandbox]")
        expect(frame.locator("h1")).to_have_text("Hello")
        desktop = page.locator("iframe[sandbox]").bounding_box()
        page.click("#width-mobile")
        mobile = page.locator("iframe[sandbox]").bounding_box()
        assert desktop is not None and mobile is not None
        assert desktop["width"] > 1000 and mobile["width"] == 375
        assert page.evaluate("() => window.x") is None  # the email's script never ran
    finally:
        page.close()


def test_inbox_blocks_remote_content_until_asked_for_this_email(browser: Any,
                                                                  stack: Stack) -> None:
    """Issue 23: a previewed email loaded images and CSS from any host (a tracking pixel
    fired from the developer's browser). Blocked by default; "Load remote content"
    loads them for this email."""
    from playwright.sync_api import expect
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from celery_qstash.local.serving import ThreadedServer

    fetched: list[str] = []

    async def record(request: Request) -> Response:
        fetched.append(request.url.path)
        return Response(b"", media_type="text/css" if request.url.path.endswith(".css")
                        else "image/gif")

    remote = ThreadedServer(Starlette(routes=[Route("/{p:path}", record)])).start()
    html = (f'<link rel="stylesheet" href="{remote.url}/style.css">'
            f'<h1>Pixel</h1><img src="{remote.url}/pixel.gif" width="1" height="1">')
    httpx.post(f"{stack.sandbox.url}/v1/mails/send", headers={"Authorization": "Bearer AS_t"},
               json={"to": {"email": "pixel@inbox.example"}, "from": {"email": "a@acme.example"},
                     "subject": "Tracked", "html": html}).raise_for_status()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(f"{stack.sandbox.url}/inbox?q=pixel%40inbox.example")
        page.locator("td.subject a").click()
        expect(page.frame_locator("iframe[sandbox]").locator("h1")).to_have_text("Pixel")
        page.wait_for_load_state("networkidle")
        assert fetched == []
        page.click("#remote-on")
        expect(page.frame_locator("iframe[sandbox]").locator("h1")).to_have_text("Pixel")
        page.wait_for_load_state("networkidle")
        assert sorted(set(fetched)) == ["/pixel.gif", "/style.css"]
        expect(page.locator("#remote-off")).to_be_visible()
    finally:
        page.close()
        remote.stop()


def test_inbox_delete_one_clear_all_and_the_rejected_view(browser: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    stack.send.delay("del@inbox.example", "Delete me").get(timeout=15)
    failed = _fail(stack, "rej@inbox.example", "Refused twice")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(f"{stack.sandbox.url}/rejected")
        rows = page.locator("table.rejected tbody tr").filter(has_text="Refused twice")
        expect(rows).to_have_count(2)
        expect(rows.first).to_contain_text("503 chaos")
        expect(rows.first).to_contain_text("Service unavailable")
        rows.first.get_by_role("link", name=failed.id).click()
        expect(page).to_have_url(f"{stack.dashboard_url}/tasks/{failed.id}")

        page.goto(f"{stack.sandbox.url}/inbox?q=del%40inbox.example")
        page.locator("td.subject a").click()
        page.click("#delete")
        expect(page.locator(".notice")).to_have_text("Deleted 1 email.")

        page.goto(f"{stack.sandbox.url}/inbox")
        page.click("#clear-all")  # opens the confirmation
        assert httpx.get(f"{stack.sandbox.url}/api/v1/messages").json()["total"] > 0
        page.click("#clear-confirm")
        expect(page.locator(".notice")).to_contain_text("Deleted")
        expect(page.locator("main")).to_contain_text("No emails captured yet")
    finally:
        page.close()
