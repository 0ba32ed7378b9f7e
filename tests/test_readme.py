"""The README documents every row of both option tables (between the options-table markers)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from celery_qstash.publish.options import APPLY_ASYNC_OPTIONS, TASK_ATTRIBUTES

README = Path(__file__).resolve().parent.parent / "README.md"
START = "<!-- options-table:start -->"
END = "<!-- options-table:end -->"


def options_section() -> str:
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    stripped = [line.strip() for line in lines]
    assert START in stripped, f"README.md has no {START} line"
    assert END in stripped, f"README.md has no {END} line"
    start, end = stripped.index(START), stripped.index(END)
    assert start < end, "the options table end marker comes before its start"
    return "\n".join(lines[start + 1 : end])


@pytest.mark.parametrize("name", sorted(set(APPLY_ASYNC_OPTIONS) | set(TASK_ATTRIBUTES)))
def test_readme_documents_option(name: str) -> None:
    section = options_section()
    # the name as a word of its own: `time_limit` does not count for `soft_time_limit`
    assert re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", section), (
        f"{name} is missing from the README's options table"
    )


def test_readme_links_the_porting_guide() -> None:
    text = README.read_text(encoding="utf-8")
    assert "](docs/porting.md)" in text
    assert (README.parent / "docs" / "porting.md").is_file()
