"""Package hygiene: the installed metadata says what pyproject.toml promises, the
LICENSE file is the MIT text it declares, the entry points load, the floors are true
and the test matrix (noxfile.py) covers every Python the classifiers claim."""

from __future__ import annotations

import ast
import os
import re
import warnings
from importlib.metadata import PackageNotFoundError, entry_points, metadata, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

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
    for python in ("3.10", "3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {python}" in classifiers
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


def _constant(path: Path, name: str) -> object:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path.name} has no {name}")


def _noxfile_constant(name: str) -> object:
    return _constant(ROOT / "noxfile.py", name)


def test_the_matrix_runs_every_python_the_classifiers_claim_and_each_django_series() -> None:
    classifiers = metadata("celery-qstash").get_all("Classifier") or []
    claimed = sorted(
        (c.rsplit(" :: ", 1)[1] for c in classifiers
         if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)),
        key=lambda v: tuple(map(int, v.split("."))),
    )
    pythons = _noxfile_constant("PYTHONS")
    assert list(pythons) == claimed  # type: ignore[call-overload]
    assert metadata("celery-qstash")["Requires-Python"] == f">={claimed[0]}"
    djangos = _noxfile_constant("DJANGOS")
    assert isinstance(djangos, dict) and set(djangos.values()) <= set(claimed)
    django_floor = next(r for r in _direct_requirements() if r.name == "django")
    assert min(djangos, key=Version) == str(django_floor.specifier).removeprefix(">=")


def test_scripts_matrix_all_is_every_nox_session_and_ci_covers_every_python() -> None:
    # `scripts/matrix all` stands for `nox` alone: a session added to noxfile.py and not
    # here would never run before a release.
    pythons = _noxfile_constant("PYTHONS")
    djangos = _noxfile_constant("DJANGOS")
    assert isinstance(pythons, tuple) and isinstance(djangos, dict)
    registered = {f"tests-{p}" for p in pythons} | {"lowest", "newest"} | {
        f"django-{series}" for series in djangos
    }
    matrix = ROOT / "scripts" / "matrix"
    everything = _constant(matrix, "ALL_SESSIONS")
    assert isinstance(everything, tuple) and len(everything) == len(set(everything))
    assert set(everything) == registered
    ci = _constant(matrix, "CI_SESSIONS")
    assert isinstance(ci, tuple) and set(ci) <= registered
    # Together with scripts/test's default run (Python 3.11), CI's sessions reach every
    # Python the classifiers claim and every Django series.
    session_python = {f"tests-{p}": p for p in pythons} | {
        "lowest": pythons[0], "newest": pythons[-1],
    } | {f"django-{series}": python for series, python in djangos.items()}
    assert {session_python[name] for name in ci} | {"3.11"} == set(pythons)
    djangos_reached = {"4.2" if name == "lowest" else name.removeprefix("django-")
                       for name in ci if name == "lowest" or name.startswith("django-")}
    # The default run installs the newest Django 3.11 can (the 5.2 series); tests-3.12
    # gets the newest there is (6.x), so 4.2, 5.2 and 6.1 are each run by CI.
    assert djangos_reached | {"5.2"} == set(djangos)


def _direct_requirements() -> list[Requirement]:
    """What pyproject.toml asks for, runtime and the extras a test run installs."""
    wanted: dict[str, Requirement] = {}
    for line in metadata("celery-qstash").get_all("Requires-Dist") or []:
        requirement = Requirement(line)
        if requirement.name == "celery-qstash":
            continue  # the dev extra pulls in [local]: its own lines are listed too
        marker = requirement.marker
        if marker is None or any(marker.evaluate({"extra": e}) for e in ("", "local", "dev")):
            wanted[f"{requirement.name}{requirement.specifier}"] = requirement
    return list(wanted.values())


def test_installed_dependencies_satisfy_pyproject_and_the_lowest_session_sits_on_the_floors() -> None:
    # noxfile.py's lowest session installs with uv's lowest-direct resolution and says so:
    # there each direct dependency must be exactly its floor, or the floor is a promise
    # nothing tests (a requirement of another package pushed it up).
    lowest = os.environ.get("CELERY_QSTASH_RESOLUTION") == "lowest-direct"
    wrong = []
    for requirement in _direct_requirements():
        try:
            installed = Version(version(requirement.name))
        except PackageNotFoundError:
            wrong.append(f"{requirement.name}: not installed")
            continue
        if installed not in requirement.specifier:
            wrong.append(f"{requirement.name} {installed} is outside {requirement.specifier}")
        floors = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        if lowest and floors and installed != max(floors):
            wrong.append(f"{requirement.name} {installed}: its floor {max(floors)} was not installed")
    assert not wrong, "; ".join(wrong)


def test_a_deprecation_raised_from_our_code_fails_the_test() -> None:
    # pyproject.toml's filterwarnings: ours are errors, another package's stay warnings.
    for category in (DeprecationWarning, PendingDeprecationWarning):
        with pytest.raises(category):
            warnings.warn_explicit("old", category, "backend.py", 1,
                                   module="celery_qstash.contrib.django.backend")
        with pytest.warns(category):
            warnings.warn_explicit("old", category, "task.py", 1, module="celery.app.task")
