"""Finding the Celery app a command works on: ``-A module:app``, or the one ``celery -A``
already loaded (under ``celery -A proj qstash ...``)."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

__all__ = ["celery_cli_app", "import_app"]


def import_app(app_path: str, param_hint: str = "-A") -> Any:
    """The app at ``module[:attr]`` (``attr`` defaults to ``app``), as ``celery -A`` finds it."""
    module_name, _, attr = app_path.partition(":")
    if "." not in sys.path and "" not in sys.path:
        sys.path.insert(0, "")  # like `celery -A`: the current directory is importable
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr or "app")
    except (ImportError, AttributeError) as exc:
        raise click.BadParameter(
            f"cannot load {app_path!r}: {exc}", param_hint=param_hint
        ) from None


def celery_cli_app() -> Any:
    """The app ``celery -A proj`` loaded (Celery keeps it on the root click context's
    ``CLIContext``), or None under ``celery-qstash``, which has no such object."""
    ctx = click.get_current_context(silent=True)
    return getattr(ctx.find_root().obj, "app", None) if ctx is not None else None
