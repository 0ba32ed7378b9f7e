"""docs/porting.md's "Moving a whole Celery codebase" example, run as it is written."""

from __future__ import annotations

import re
from pathlib import Path

import celery

from celery_qstash.testing import outbox

PORTING = Path(__file__).resolve().parents[2] / "docs" / "porting.md"


def _example() -> str:
    block = PORTING.read_text().split("<!-- whole-codebase:start -->")[1].split(
        "<!-- whole-codebase:end -->")[0]
    match = re.search(r"```python\n(.*?)```", block, re.S)
    assert match
    return match.group(1)


def test_the_guide_example_runs_and_sends_the_reminder() -> None:
    outbox.clear()
    namespace: dict[str, object] = {"__name__": "porting_guide_example"}
    previous = celery.current_app
    try:
        exec(compile(_example(), str(PORTING), "exec"), namespace)
    finally:
        previous.set_current()
    [sent] = outbox
    assert sent.email.subject == "Your order is waiting"
    orders = namespace["ORDERS"]
    assert isinstance(orders, dict) and orders[1]["expired"] is True
