"""Live pages update in place (headless Chromium): what a reader typed, an open
confirmation and the scroll position survive two refresh periods and more, while new
rows arrive; without JavaScript the page still refreshes (whole).

No wall clock: each test waits for the events it needs (the page's own count of live
updates, a new row), and a marker set on ``window`` proves the page never reloaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from waiting import wait_until

from .conftest import Stack

pytestmark = pytest.mark.browser


@contextmanager
def _page(browser: Any, url: str, height: int = 900) -> Iterator[Any]:
    page = browser.new_page(viewport={"width": 1280, "height": height})
    try:
        page.goto(url)
        yield page
    finally:
        page.close()


def _updates(page: Any) -> int:
    return int(page.evaluate("Number(document.body.dataset.liveUpdates || 0)"))


def _wait_updates(page: Any, at_least: int) -> None:
    # Polled from here: the page's CSP (rightly) refuses playwright's eval-based waits.
    wait_until(lambda: _updates(page) >= at_least, f"{at_least} live updates", timeout=30)


def test_inbox_search_text_survives_two_refresh_periods(browser: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    stack.send.delay("live1@inbox.example", "Live inbox one").get(timeout=15)
    with _page(browser, f"{stack.sandbox.url}/inbox?refresh=1") as page:
        page.evaluate("window.__notReloaded = true")
        page.click("input[name=q]")
        page.keyboard.type("half-typed sear")
        seen = _updates(page)
        stack.send.delay("live2@inbox.example", "Live inbox two").get(timeout=15)
        _wait_updates(page, seen + 2)  # two refresh periods, at least
        # The new email arrived in place; the page never reloaded; the text is still there.
        expect(page.locator("table.inbox")).to_contain_text("Live inbox two")
        assert page.evaluate("window.__notReloaded") is True
        assert page.input_value("input[name=q]") == "half-typed sear"
        assert page.evaluate("document.activeElement.name") == "q"


def test_inbox_clear_all_confirmation_stays_open(browser: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    stack.send.delay("keep@inbox.example", "Keep me").get(timeout=15)
    with _page(browser, f"{stack.sandbox.url}/inbox?refresh=1") as page:
        page.click("#clear-all")
        seen = _updates(page)
        _wait_updates(page, seen + 2)
        expect(page.locator("#clear-confirm")).to_be_visible()


def test_tasks_search_and_scroll_survive_two_refresh_periods(browser: Any, stack: Stack
                                                              ) -> None:
    from playwright.sync_api import expect

    for n in range(30):
        stack.send.apply_async((f"scroll{n}@live.example", f"Scroll {n}"), countdown=3600)
    with _page(browser, f"{stack.dashboard_url}/tasks?refresh=1&per_page=50", height=500) as page:
        page.evaluate("window.__notReloaded = true")
        page.click("input[name=search]")
        page.keyboard.type("scroll1")
        page.evaluate("window.scrollTo(0, 400)")  # after typing: a click scrolls to the box
        scrolled = page.evaluate("window.scrollY")
        assert scrolled > 0
        seen = _updates(page)
        late = stack.send.apply_async(("late@live.example", "Arrives late"), countdown=3600)
        _wait_updates(page, seen + 2)
        expect(page.locator("#live-list")).to_contain_text(late.id[:8])
        assert page.evaluate("window.__notReloaded") is True
        assert page.input_value("input[name=search]") == "scroll1"
        assert page.evaluate("window.scrollY") == scrolled


def test_a_task_revoke_confirmation_stays_open(browser: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    result = stack.send.apply_async(("confirm@live.example", "Confirm me"), countdown=3600)
    with _page(browser, f"{stack.dashboard_url}/tasks/{result.id}") as page:
        page.evaluate("document.body.dataset.refresh")  # the pending task's page is live
        page.click("#revoke")
        seen = _updates(page)
        _wait_updates(page, seen + 1)  # the task page refreshes every 10 s
        expect(page.get_by_role("button", name="Yes, revoke")).to_be_visible()


def test_without_javascript_the_page_still_refreshes(browser: Any, stack: Stack) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        page.goto(f"{stack.sandbox.url}/inbox?refresh=1")
        refresh = page.locator("noscript").first.inner_html()
        assert 'http-equiv="refresh" content="1"' in refresh
        with page.expect_navigation(timeout=20_000):
            pass  # the meta refresh reloads the page on its own
        stack.send.delay("nojs@inbox.example", "Seen without JS").get(timeout=15)
        with page.expect_navigation(timeout=20_000):
            pass
        assert "Seen without JS" in page.content()
    finally:
        context.close()
