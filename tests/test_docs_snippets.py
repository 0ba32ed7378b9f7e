"""Every Python snippet of the README and the guides in ``docs/`` runs, so none can drift
from the code.

A snippet runs as it is, in a fresh interpreter. The comment line right above its fence
may say what it takes for granted, and nothing else is assumed:

* ``<!-- snippet: prelude=NAME -->``: run after the prelude ``NAME`` below (an app, the
  README's ``send_welcome``...: ``tests/docs/snippet_world.py``). Top-level ``await``
  works (the snippet then runs in ``asyncio.run``).
* ``<!-- snippet: pytest prelude=NAME -->``: the snippet is a test module; pytest runs it
  (with celery-qstash's plugin, as a user's suite would) and every test must pass.
* ``<!-- snippet: fragment: REASON -->``: not Python that runs (the README's side-by-side
  before/after). Fragments must say why, and stay rare.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
WORLD = Path(__file__).resolve().parent / "docs"
MAX_FRAGMENTS = 2

PRELUDES = {
    # An eager app and nothing else: the porting guide's snippets import what they use.
    "eager": (
        "from celery import Celery\n"
        "app = Celery('docs')\n"
        "app.conf.update(task_always_eager=True, autosend_api_key='AS_docs')\n"
    ),
    # The README's world, in eager mode (no server): send_welcome, users, the app.
    "readme": "from snippet_world import *\napp.conf.task_always_eager = True\n",
    # The same world published for real: the emulator and the sandbox in-process.
    "readme-dev": (
        "from snippet_world import *\n"
        "from celery_qstash.testing import DevServers\n"
        "_servers = DevServers().start()\n"
        "_servers.configure(app)\n"
    ),
    # A Django settings module's surroundings (django-environ's env()).
    "django-settings": "import os\nenv = os.environ.get\n",
    # The web frameworks the receiver mounts in, with an app to receive for.
    "receiver": (
        "import django\n"
        "from django.conf import settings\n"
        "settings.configure(ROOT_URLCONF=[], ALLOWED_HOSTS=['*'])\n"
        "django.setup()\n"
        "from django.urls import include, path\n"
        "from fastapi import FastAPI\n"
        "from flask import Flask\n"
        "from snippet_world import celery_app\n"
        "celery_app.conf.update(qstash_current_signing_key='sig_docs_current',\n"
        "                       qstash_next_signing_key='sig_docs_next')\n"
        "api = FastAPI()\n"
        # instance_path given: Flask 3.0 (the floor) cannot guess one for a module that is
        # not a file.
        "import tempfile\n"
        "flask_app = Flask('docs', instance_path=tempfile.gettempdir())\n"
    ),
}
#: What a pytest snippet's module starts with: the README's world and its ``app`` fixture.
PYTEST_PRELUDES = {
    "readme": (
        "import pytest\n"
        "import snippet_world\n"
        "from snippet_world import *\n\n\n"
        "@pytest.fixture\n"
        "def app():\n"
        "    return snippet_world.app\n\n\n"
    ),
}

RUNNER = """
import ast, asyncio, sys
source = open(sys.argv[1], encoding="utf-8").read()
code = compile(source, sys.argv[2], "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
result = eval(code, {"__name__": "__main__"})
if asyncio.iscoroutine(result):
    asyncio.run(result)
"""

_MARKER = re.compile(r"<!--\s*snippet:\s*(.*?)\s*-->")


@dataclass(frozen=True)
class Snippet:
    where: str  # README.md:129
    code: str
    kind: str  # "run", "pytest" or "fragment"
    prelude: str = ""
    reason: str = ""


def _snippets() -> list[Snippet]:
    found = []
    for doc in DOCS:
        lines = doc.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            if lines[i].strip() != "```python":
                i += 1
                continue
            start = i
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            code = "\n".join(lines[start + 1:end]) + "\n"
            where = f"{doc.relative_to(ROOT)}:{start + 1}"
            marker = _MARKER.fullmatch(lines[start - 1].strip()) if start else None
            found.append(_parse(where, code, marker[1] if marker else ""))
            i = end + 1
    return found


def _parse(where: str, code: str, marker: str) -> Snippet:
    if marker.startswith("fragment"):
        return Snippet(where, code, "fragment", reason=marker.partition(":")[2].strip())
    words = dict(w.partition("=")[::2] for w in marker.split())
    kind = "pytest" if "pytest" in words else "run"
    prelude = words.get("prelude", "")
    unknown = set(words) - {"pytest", "prelude"}
    assert not unknown, f"{where}: unknown snippet marker words {sorted(unknown)}"
    known = PYTEST_PRELUDES if kind == "pytest" else PRELUDES
    assert not prelude or prelude in known, f"{where}: no {kind} prelude {prelude!r}"
    return Snippet(where, code, kind, prelude)


SNIPPETS = _snippets()


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("QSTASH_", "AUTOSEND_", "CELERY_", "DJANGO_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(WORLD), str(ROOT)])
    return env


def test_the_docs_have_snippets_and_fragments_stay_rare() -> None:
    assert len(SNIPPETS) >= 14
    fragments = [s for s in SNIPPETS if s.kind == "fragment"]
    assert len(fragments) <= MAX_FRAGMENTS, [s.where for s in fragments]
    for s in fragments:
        assert len(s.reason) > 10, f"{s.where}: a fragment says why it cannot run"


@pytest.mark.parametrize("snippet", [s for s in SNIPPETS if s.kind == "run"],
                         ids=lambda s: s.where)
def test_the_snippet_runs(snippet: Snippet, tmp_path: Path) -> None:
    source = tmp_path / "snippet.py"
    source.write_text(PRELUDES.get(snippet.prelude, "") + snippet.code, encoding="utf-8")
    done = subprocess.run([sys.executable, "-c", RUNNER, str(source), snippet.where],
                          cwd=tmp_path, env=_environment(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"{snippet.where}:\n{done.stdout}\n{done.stderr}"


@pytest.mark.slow  # a pytest run each, some starting the emulator and the sandbox
@pytest.mark.parametrize("snippet", [s for s in SNIPPETS if s.kind == "pytest"],
                         ids=lambda s: s.where)
def test_the_test_snippet_passes(snippet: Snippet, tmp_path: Path) -> None:
    module = tmp_path / "test_snippet.py"
    module.write_text(PYTEST_PRELUDES[snippet.prelude] + snippet.code, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "no:django", str(module)], cwd=tmp_path, env=_environment(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{snippet.where}:\n{done.stdout[-4000:]}\n{done.stderr}"
    assert re.search(r"\b[1-9]\d* passed\b", done.stdout), done.stdout
