"""Package hygiene: the installed metadata says what pyproject.toml promises, the
LICENSE file is the MIT text it declares, and the entry points load."""

from __future__ import annotations

import re
from importlib.metadata import entry_points, metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_license_file_is_mit_as_declared() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "THE SOFTWARE IS PROVIDED \"AS IS\"" in text
    meta = metadata("celery-qstash")
    assert "MIT" in (meta.get("License-Expression") or meta.get("License") or "")


def test_python_versions_and_urls() -> None:
    meta = metadata("celery-qstash")
    classifiers = meta.get_all("Classifier") or []
    for version in ("3.10", "3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert {"Homepage", "Source", "Issues", "Changelog"} <= set(urls)
    assert all(u.startswith("https://") for u in urls.values())


def test_changelog_keeps_a_changelog_with_an_unreleased_section() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "keepachangelog.com" in text
    unreleased = text.split("## [Unreleased]", 1)[1].split("\n## [", 1)[0]
    assert "### Added" in unreleased
    assert re.search(r"^\[Unreleased\]: https://", text, re.M)


def test_entry_points_load() -> None:
    import click

    [plugin] = [ep for ep in entry_points(group="pytest11") if ep.name == "celery_qstash"]
    assert hasattr(plugin.load(), "autosend_outbox")
    [command] = [ep for ep in entry_points(group="celery.commands") if ep.name == "qstash"]
    group = command.load()
    assert isinstance(group, click.Group)
    assert {"status", "inspect", "revoke", "dlq", "dev"} <= set(group.commands)
