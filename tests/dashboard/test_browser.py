"""The dashboard in headless Chromium (Debian's ``chromium``; no browser download).

Opens the tasks page, finds a pending task, opens its page, sees the event
timeline and revokes it with the button, saving ``artifacts/dashboard-task.png``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Stack

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        # scripts/test installs it; a missing browser is a broken setup, not a reason to skip.
        pytest.fail(f"no Chromium at {CHROMIUM}: run scripts/test, or apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
        yield chromium
        chromium.close()


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

        page.click("#revoke")
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
