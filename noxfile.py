"""The test matrix: every Python we support, the lowest and the newest dependencies, each Django.

``nox -l`` lists the sessions; ``nox -s lowest`` runs one (extra arguments after ``--``
go to pytest). Each session is a fresh virtualenv made and filled by uv, and runs the
whole suite. ``scripts/matrix`` runs several at once (what ``scripts/test`` and CI do).

Interpreters are found by full path (pyenv's install folders first, then ``python3.X``
on ``PATH`` outside a shims folder), never through pyenv's shims, which answer only
for the versions ``pyenv global`` names; nothing is ever downloaded.
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
nox.options.download_python = "never"
# A Python we claim but cannot find is a failure, not a skipped session.
nox.options.error_on_missing_interpreters = True
nox.options.sessions = []  # every session registered below: `nox` alone runs them all

PYTHONS = ("3.10", "3.11", "3.12", "3.13")
# Each Django series we support, on a Python that series supports.
DJANGOS = {"4.2": "3.12", "5.2": "3.13", "6.1": "3.13"}
PYTEST = ("python", "-m", "pytest", "-q", "-p", "no:cacheprovider")


def interpreter(version: str) -> str:
    """CPython ``version`` ("3.12") by full path, the newest patch release found."""
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")

    def patch(path: str) -> tuple[int, ...]:
        release = Path(path).parents[1].name  # .../versions/3.12.1/bin/python3.12
        return tuple(int(part) for part in release.split(".") if part.isdigit())

    found = glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", f"python{version}"))
    found = [path for path in found if Path(path).parents[1].name.replace(".", "").isdigit()]
    if found:
        return max(found, key=patch)
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if Path(folder).name == "shims":
            continue
        if path := shutil.which(f"python{version}", path=folder):
            return path
    return version  # nox's own discovery then says plainly that it is missing


# What a session got, on one line in its log: the first thing to read when it fails.
_VERSIONS = (
    "import importlib.metadata as m; "
    "print(' '.join(sorted(f\"{d.metadata['Name']}=={d.version}\" for d in m.distributions())))"
)


def _suite(*requirements: str, resolution: str = "highest") -> Callable[[nox.Session], None]:
    """A session body: install ``.[dev]`` (plus ``requirements``) with uv, then the whole suite."""

    def body(session: nox.Session) -> None:
        session.install("--resolution", resolution, "-e", ".[dev]", *requirements)
        # tests/test_packaging.py checks the floors were installed when this is lowest-direct.
        session.env["CELERY_QSTASH_RESOLUTION"] = resolution
        session.run("python", "-c", _VERSIONS, silent=False)
        session.run(*PYTEST, *session.posargs)

    return body


def _register(name: str, python: str, body: Callable[[nox.Session], None], doc: str) -> None:
    body.__doc__ = doc
    body.__name__ = body.__qualname__ = name.replace("-", "_").replace(".", "")
    nox.session(name=name, python=interpreter(python))(body)
    nox.options.sessions.append(name)


for _version in PYTHONS:
    _register(f"tests-{_version}", _version, _suite(),
              f"Python {_version} with the newest dependencies it can install.")

# Every direct dependency at its floor in pyproject.toml (runtime, [local] and [dev]):
# a user whose project pins old versions gets exactly these, so they are tested.
_register("lowest", PYTHONS[0], _suite(resolution="lowest-direct"),
          "The oldest Python, every direct dependency at its floor.")
_register("newest", PYTHONS[-1], _suite("--upgrade", "--refresh"),
          "The newest Python, everything at its newest release (uv's cache refreshed).")

for _series, _python in DJANGOS.items():
    _register(f"django-{_series}", _python, _suite(f"django=={_series}.*"),
              f"Django {_series} (its newest patch release) on Python {_python}.")
