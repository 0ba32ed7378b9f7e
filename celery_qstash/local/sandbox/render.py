"""Fill Handlebars-style ``{{placeholders}}`` from ``dynamicData`` the way AutoSend would.

Only what a captured email needs to be readable is supported:

- ``{{name}}``, ``{{ name }}``, ``{{user.first}}``, ``{{items.0}}``, ``{{this.name}}``:
  a value looked up in the data; missing values render as the empty string.
- ``{{{name}}}``: the same value, never escaped.
- ``{{! comment }}`` and ``{{!-- comment --}}``: removed.
- In an HTML body ``{{name}}`` is HTML-escaped with Handlebars' own escape table;
  in a subject or a text body nothing is escaped (they are plain text; whoever
  shows them in HTML escapes them then, as the inbox page does).

Block helpers (``{{#if}}``, ``{{#each}}``), partials and helper calls with
arguments are left in the output untouched, so a template that relies on them is
visibly "not rendered by the sandbox" rather than silently wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["escape_handlebars", "merge_data", "render"]

# Handlebars.Utils.escapeExpression's table: the five HTML specials plus ` and =.
_ESCAPES = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    '"': "&quot;",
    "'": "&#x27;",
    "`": "&#x60;",
    "=": "&#x3D;",
}
_ESCAPE_RE = re.compile("[" + re.escape("".join(_ESCAPES)) + "]")

_COMMENT_RE = re.compile(r"\{\{!--.*?--\}\}|\{\{![^}]*\}\}", re.DOTALL)
# Triple braces first so "{{{x}}}" is never read as "{" + "{{x}}" + "}".
_TOKEN_RE = re.compile(r"\{\{\{~?\s*(?P<raw>[^{}]*?)\s*~?\}\}\}|\{\{~?\s*(?P<esc>[^{}]*?)\s*~?\}\}")
# A plain path: segments of word characters, $, @ or -, separated by dots (or
# Handlebars' legacy slashes). Anything else (a space, #, /, >, ^) is a helper.
_PATH_RE = re.compile(r"^[\w$@-]+(?:[./][\w$@-]+)*$")


def escape_handlebars(value: str) -> str:
    """Escape ``value`` exactly as Handlebars does for ``{{x}}`` in HTML."""
    return _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(0)], value)


def merge_data(
    root: Mapping[str, Any] | None, recipient: Mapping[str, Any] | None
) -> dict[str, Any]:
    """A bulk recipient's data: the root ``dynamicData`` with the recipient's keys on top."""
    return {**(root or {}), **(recipient or {})}


def _lookup(data: Mapping[str, Any], path: str) -> Any:
    parts = re.split(r"[./]", path)
    if parts and parts[0] == "this":
        parts = parts[1:]
    value: Any = data
    for part in parts:
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
        if value is None:
            return None
    return value


def _to_text(value: Any) -> str:
    # Stringify as JavaScript would, since that is what AutoSend's Handlebars sees.
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ",".join(_to_text(item) for item in value)
    if isinstance(value, Mapping):
        return "[object Object]"
    return str(value)


def render(template: str | None, data: Mapping[str, Any] | None, *, html: bool) -> str | None:
    """``template`` with its placeholders filled from ``data``.

    ``html=True`` escapes ``{{x}}`` values (an HTML body); ``html=False`` leaves
    them as they are (a subject or a text body). ``None`` stays ``None``.
    """
    if template is None:
        return None
    values: Mapping[str, Any] = data or {}

    def fill(match: re.Match[str]) -> str:
        raw = match.group("raw")
        path = raw if raw is not None else match.group("esc")
        if not _PATH_RE.match(path) or path == "else":
            return match.group(0)  # a helper, block or partial: not ours to run
        text = _to_text(_lookup(values, path))
        return escape_handlebars(text) if html and raw is None else text

    return _TOKEN_RE.sub(fill, _COMMENT_RE.sub("", template))
