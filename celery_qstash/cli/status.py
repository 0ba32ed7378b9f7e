"""Status commands: filled in by the status/dashboard work (issue 4)."""

from __future__ import annotations

import click

__all__ = ["register"]


def register(group: click.Group) -> None:
    """Add the status commands to the ``celery-qstash`` group."""
