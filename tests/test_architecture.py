"""Imports flow one way: the core never reaches into the servers, the dashboard or the CLI.

Checked on the source (every import statement, function-level ones included), so a
lazy import hidden in a function is caught as well as a top-level one.
"""

from __future__ import annotations

import ast
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
    allowed = {"clock", "devserver", "local.serving", "local.files"}
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
    import subprocess
    import sys

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
