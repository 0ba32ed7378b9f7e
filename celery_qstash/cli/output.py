"""What the CLI prints with: the terminal's width, tables that fit it, colour, times, and
help listings whose summaries are whole.

Tables fit the terminal (80 columns at least, ``COLUMNS`` honoured, 80 when piped):
columns named ``shrink`` give up characters widest first, down to a floor; a column
that keeps its end (task names: ``…after_qstash.send_welcome``) is cut at the start,
never losing the informative end; when even the floors do not fit, the ``drop``
columns go, least useful first. ``--wide`` shows everything.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import click

from ..clock import utc_moment

__all__ = [
    "MIN_WIDTH",
    "WholeHelpGroup",
    "budget",
    "colour",
    "cut",
    "cut_start",
    "iso",
    "out",
    "paint",
    "short_id",
    "table",
    "terminal_width",
    "when",
    "when_short",
]

#: Tables fit at least this many columns (a terminal's classic width).
MIN_WIDTH = 80
_STATE_COLOURS = {"SUCCESS": "green", "FAILURE": "red", "RETRY": "yellow", "REVOKED": "magenta",
                  "STARTED": "cyan", "PENDING": "blue", "PAUSED": "yellow", "ACTIVE": "green"}


def terminal_width() -> int:
    """The terminal's columns (``COLUMNS`` first, as ``shutil`` reads it), never under 80."""
    return max(MIN_WIDTH, shutil.get_terminal_size((MIN_WIDTH, 24)).columns)


def budget(wide: bool) -> int | None:
    """The width a table must fit in: ``None`` (anything) with ``--wide``."""
    return None if wide else terminal_width()


def colour() -> bool:
    """Colour on a terminal only: never with ``NO_COLOR`` (no-color.org), forced with
    ``FORCE_COLOR``, otherwise only when stdout is a TTY."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return sys.stdout.isatty()


def out(text: str) -> None:
    click.echo(text, color=colour())


def paint(text: str, state: str) -> str:
    hue = _STATE_COLOURS.get(state.strip())
    return click.style(text, fg=hue, bold=state.strip() == "FAILURE" or None) if hue else text


def cut(text: str, width: int) -> str:
    """``text`` in ``width`` characters, its end replaced by "…" when longer."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def cut_start(text: str, width: int) -> str:
    """``text`` in ``width`` characters, keeping its end: a dotted name's last parts
    (``…after_qstash.send_welcome``) say more than its package."""
    if len(text) <= width:
        return text
    return "…" + text[len(text) - max(width - 1, 0):] if width > 1 else "…"[:width]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, width: int | None = None,
          shrink: Mapping[int, int] | Sequence[int] = (), paint_cols: Sequence[int] = (),
          keep_end: Sequence[int] = (), drop: Sequence[int] = ()) -> str:
    """A plain-text table that fits ``width`` columns (see the module doc).

    ``shrink`` maps a column to its floor (a sequence: floor 6, or the header's length);
    ``keep_end`` columns are cut at the start; ``drop`` columns are removed in that order
    while the floors alone are too wide; ``paint_cols`` are coloured by state.
    """
    floors = dict(shrink) if isinstance(shrink, Mapping) else {i: 6 for i in shrink}
    floors = {i: max(f, len(headers[i])) for i, f in floors.items()}
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    keep = list(range(len(headers)))
    natural = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def least(i: int) -> int:
        return min(floors.get(i, natural[i]), natural[i])

    if width is not None:
        for victim in drop:
            if sum(least(i) for i in keep) + 2 * (len(keep) - 1) <= width:
                break
            keep.remove(victim)
    widths = {i: natural[i] for i in keep}
    if width is not None:
        while sum(widths.values()) + 2 * (len(keep) - 1) > width:
            candidates = [i for i in keep if i in floors and widths[i] > least(i)]
            if not candidates:
                break
            widths[max(candidates, key=lambda i: widths[i])] -= 1
    lines = []
    for n, row in enumerate(cells):
        parts = []
        for i in keep:
            w = widths[i]
            text = (cut_start if i in keep_end else cut)(row[i], w).ljust(w)
            parts.append(paint(text, row[i]) if n and i in paint_cols else text)
        lines.append("  ".join(parts).rstrip())
    lines.insert(1, "  ".join("-" * widths[i] for i in keep))
    return "\n".join(lines)


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    moment = utc_moment(ts)
    return str(ts) if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def when_short(ts: float | None, wide: bool) -> str:
    """``MM-DD HH:MM:SS`` (the year only with ``--wide``): times in tables."""
    return when(ts) if wide or ts is None else when(ts)[5:]


def short_id(identifier: str, wide: bool) -> str:
    """A UUID's first 8 characters (like ``git log --oneline``); whole with ``--wide``.
    ``inspect`` takes it back: any unique prefix names a task."""
    return identifier if wide or len(identifier) <= 9 else identifier[:8] + "…"


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 in UTC (``2024-05-06T12:53:20.120000+00:00``)."""
    moment = None if ts is None else utc_moment(ts)
    return None if moment is None else moment.isoformat()


class WholeHelpGroup(click.Group):
    """A command group whose ``--help`` lists each command's whole first sentence,
    wrapped to the terminal, instead of click's summary cut at the column's width."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            rows.append((name, command.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
