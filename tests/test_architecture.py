"""Imports flow one way: the core never reaches into the servers, the dashboard or the CLI.

Checked on the source (every import statement, function-level ones included), so a
lazy import hidden in a function is caught as well as a top-level one.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "celery_qstash"
SERVER_SIDE = ("local", "cli")
#: Modules that may import server-side code: the server side itself, and test helpers.
ALLOWED = {"testing.py", "__main__.py"}


def _imports(path: Path) -> set[str]:
    """Every celery_qstash module a file imports, as a dotted path below the package."""
    module = path.relative_to(PACKAGE).with_suffix("").parts
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(module[: len(module) - node.level])
                if path.name == "__init__.py":
                    base = list(module[: len(module) - node.level + 1])
                target = [*base, *(node.module.split(".") if node.module else [])]
            elif node.module and node.module.startswith("celery_qstash"):
                target = node.module.split(".")[1:]
            else:
                continue
            found.add(".".join(target))
            found.update(".".join([*target, alias.name]) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".", 1)[1] for a in node.names if a.name.startswith("celery_qstash."))
    return found


def _core_files() -> list[Path]:
    return [
        p for p in sorted(PACKAGE.rglob("*.py"))
        if p.relative_to(PACKAGE).parts[0] not in {f"{s}.py" for s in SERVER_SIDE} | set(SERVER_SIDE)
        and p.name not in ALLOWED
    ]


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_module_imports_no_server_side_code(path: Path) -> None:
    bad = {m for m in _imports(path) if m.split(".")[0] in SERVER_SIDE}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_the_emulator_depends_on_nothing_but_clock_devserver_and_the_server_helpers() -> None:
    # redaction: the one rule of which headers are credentials (stdlib only).
    allowed = {"clock", "devserver", "redaction", "local.serving", "local.files"}
    for path in (PACKAGE / "local" / "emulator").rglob("*.py"):
        outside = {m for m in _imports(path) if not m.startswith("local.emulator")}
        assert {".".join(m.split(".")[:2]) if m.startswith("local.") else m.split(".")[0]
                for m in outside} <= allowed | {""}, (path.name, outside)


def test_the_check_sees_a_lazy_import(tmp_path: Path) -> None:
    """Guard the guard: a function-level relative import of the CLI is reported."""
    fake = PACKAGE / "_architecture_probe.py"
    fake.write_text("def f():\n    from .cli import main\n    return main\n")
    try:
        assert "cli.main" in _imports(fake)
    finally:
        fake.unlink()


def test_a_production_install_works_without_the_local_extra() -> None:
    """Without starlette/uvicorn (no ``local`` extra) the shim, results and status CLI still work."""
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("starlette", "uvicorn"):
            raise ImportError(f"{name} is blocked: no local extra")
sys.meta_path.insert(0, Block())
import celery_qstash
from celery_qstash import Email, QStashTask, autosend_task, QStashBackend
from celery_qstash.cli import main
from click.testing import CliRunner
runner = CliRunner()
assert runner.invoke(main, ["status", "--help"]).exit_code == 0
result = runner.invoke(main, ["emulator"])
assert result.exit_code != 0 and "celery-qstash[local]" in result.output, result.output
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")


# -- the layout: what a production install runs, and no circles ----------------------


ROOT = PACKAGE.parent
#: A core module longer than this has more than one duty (issue 17): split it.
MAX_CORE_LINES = 600


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["celery_qstash", *parts])


def _top_level_imports(path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``path`` imports when it is itself imported: module-level
    statements, inside ``if``/``try`` too, but not ``if TYPE_CHECKING:`` blocks or
    functions (those run later, when every module is loaded)."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    found.add(full if full in known else target)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)

    visit(ast.parse(path.read_text()).body)
    return {m for m in found if m in known and m != me}


def import_circles(files: list[Path]) -> list[list[str]]:
    """Every set of modules that import each other at import time (Tarjan's SCCs)."""
    modules = {_module_name(p): p for p in files}
    known = set(modules)
    graph = {m: _top_level_imports(p, known) for m, p in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return circles


def test_no_import_circles() -> None:
    assert import_circles(sorted(PACKAGE.rglob("*.py"))) == []


def test_the_circle_check_sees_a_circle() -> None:
    """Guard the guard: two probe modules importing each other are reported."""
    first, second = PACKAGE / "_probe_a.py", PACKAGE / "_probe_b.py"
    first.write_text("from ._probe_b import B\nA = 1\n")
    second.write_text("import typing\nif typing.TYPE_CHECKING:\n    pass\nfrom ._probe_a import A\nB = 2\n")
    try:
        assert ["celery_qstash._probe_a", "celery_qstash._probe_b"] in import_circles(
            sorted(PACKAGE.rglob("*.py"))
        )
    finally:
        first.unlink()
        second.unlink()


def _production_modules() -> list[str]:
    return sorted(
        _module_name(p) for p in PACKAGE.rglob("*.py")
        if p.relative_to(PACKAGE).parts[0] != "local" and p.name != "__main__.py"
    )


_BLOCKED_IMPORT = """
import importlib, json, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("starlette", "uvicorn") or name.startswith("celery_qstash.local"):
            raise ImportError(f"{name} is blocked: not a production dependency")
sys.meta_path.insert(0, Block())
failed = {}
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = repr(exc)
print(json.dumps(failed))
"""


def test_every_production_module_imports_without_the_local_servers() -> None:
    """Each module outside ``local/`` imports with starlette, uvicorn and
    ``celery_qstash.local`` hidden: a production install never needs them."""
    modules = _production_modules()
    assert "celery_qstash.receiver.core" in modules and "celery_qstash.cli" in modules
    env = {"DJANGO_SETTINGS_MODULE": ""}
    done = subprocess.run(
        [sys.executable, "-c", _BLOCKED_IMPORT, json.dumps(modules)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {}


def test_the_blocked_import_check_sees_a_local_import() -> None:
    """Guard the guard: a module that imports the emulator at import time is reported."""
    probe = PACKAGE / "_probe_local.py"
    probe.write_text("from .local.emulator import Emulator\n")
    try:
        done = subprocess.run(
            [sys.executable, "-c", _BLOCKED_IMPORT, json.dumps(["celery_qstash._probe_local"])],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
        )
        assert "celery_qstash._probe_local" in json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        probe.unlink()


@pytest.mark.parametrize(
    "path",
    [p for p in sorted(PACKAGE.rglob("*.py"))
     if p.relative_to(PACKAGE).parts[0] not in {"local", "cli"}],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_no_core_module_is_long(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_CORE_LINES, f"{path.name}: {lines} lines; split it along its seams"


def _layout_section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("## Layout", 1)[1].split("\n## ", 1)[0]


def _package_folders() -> list[str]:
    return sorted(
        str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*")
        if p.is_dir() and (p / "__init__.py").exists()
    )


def test_the_readme_layout_names_every_folder_and_nothing_else() -> None:
    section = _layout_section()
    named = set(re.findall(r"^\s*([a-z_]+(?:/[a-z_]+)*)/\s", section, re.M))
    tree = {f for f in _package_folders() if f.count("/") <= 1}
    # The tree is shown indented: a nested folder appears under its parent by its own name.
    shown = {f for f in tree if f.rsplit("/", 1)[-1] in {n.rsplit("/", 1)[-1] for n in named}}
    assert shown == tree, f"folders missing from README's Layout: {sorted(tree - shown)}"


def test_the_architecture_doc_names_every_top_level_folder() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    top = {f for f in _package_folders() if "/" not in f}
    missing = {f for f in top if f"{f}/" not in doc}
    assert not missing, f"docs/architecture.md does not mention {sorted(missing)}"


def _documented_paths() -> set[str]:
    """Every ``celery_qstash...`` name the README and docs show a user: ``from X import
    a, b`` lines and dotted or ``module:attr`` references in the text."""
    found: set[str] = set()
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        for module, names in re.findall(r"from (celery_qstash[\w.]*) import (\([^)]*\)|[^\n]+)", text):
            names = names.strip("()").split("#")[0]
            found.update(f"{module}:{n.split(' as ')[0].strip()}"
                         for n in names.replace("\n", ",").split(",")
                         if n.split(" as ")[0].strip().isidentifier())
        found.update(re.findall(r"\b(celery_qstash(?:\.\w+)+(?::\w+)?)", text))
    return found


def _resolves(path: str) -> bool:
    import importlib

    module, _, attr = path.partition(":")
    parts = module.split(".")
    # The longest importable prefix, then attributes (``celery_qstash.signals.email_event``).
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in [*parts[cut:], *([attr] if attr else [])]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def test_every_public_path_in_the_docs_resolves() -> None:
    paths = _documented_paths()
    assert "celery_qstash.receiver:asgi_app" in paths or "celery_qstash.receiver" in paths
    broken = sorted(p for p in paths if not _resolves(p))
    assert not broken, f"documented but not importable: {broken}"


def test_the_path_check_sees_a_broken_path() -> None:
    assert _resolves("celery_qstash.receiver:asgi_app")
    assert not _resolves("celery_qstash.receiver:no_such_adapter")
    assert not _resolves("celery_qstash.no_such_module")
