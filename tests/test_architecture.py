"""Imports flow one way: the core never reaches into the servers, the dashboard or the CLI.

Checked on the source (every import statement, function-level ones included), so a
lazy import hidden in a function is caught as well as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "celery_qstash"
SERVER_SIDE = ("emulator", "sandbox", "dashboard", "cli", "_serving")
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


def test_the_emulator_depends_on_nothing_but_clock_devserver_and_serving() -> None:
    allowed = {"clock", "devserver", "_serving"}
    for path in (PACKAGE / "emulator").rglob("*.py"):
        outside = {m for m in _imports(path) if not m.startswith("emulator")}
        assert {m.split(".")[0] for m in outside} <= allowed | {""}, (path.name, outside)


def test_the_check_sees_a_lazy_import(tmp_path: Path) -> None:
    """Guard the guard: a function-level relative import of the CLI is reported."""
    fake = PACKAGE / "_architecture_probe.py"
    fake.write_text("def f():\n    from .cli import main\n    return main\n")
    try:
        assert "cli.main" in _imports(fake)
    finally:
        fake.unlink()
