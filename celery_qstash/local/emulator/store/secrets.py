"""Forwarded secrets kept apart from everything the API shows.

``Upstash-Forward-Authorization`` and every header named in ``Upstash-Redact-Fields``
(on the message and on its callbacks) is a secret: the stored message, its DLQ entry
and its schedule hold only ``REDACTED:<sha256>`` in its place, the value itself sits
in the ``secrets`` table under the owner's key (``msg:<id>`` or ``scd:<user>:<id>``),
and it is put back only where it is needed: to deliver the message, to retry it from
the DLQ, to fire a schedule. The logs and DLQ APIs read the stored form only.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any

from ..wire import redacted
from .db import JSON, Database

__all__ = ["Secrets"]

#: Where header maps live inside a stored message's ``opts``.
_HEADER_PATHS = (("headers",), ("callback", "headers"), ("failure_callback", "headers"))


def _header_maps(opts: JSON) -> Iterator[tuple[str, dict[str, list[str]]]]:
    for path in _HEADER_PATHS:
        node: Any = opts
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            yield ".".join(path), node


def _json_copy(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, immutable leaves): ``copy.deepcopy`` without
    its memo and dispatch, on every publish."""
    if isinstance(value, dict):
        return {k: _json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_copy(v) for v in value]
    return value


class Secrets:
    def __init__(self, db: Database) -> None:
        self.db = db

    def seal_opts(self, cur: sqlite3.Cursor, key: str, opts: JSON) -> JSON:
        """A copy of ``opts`` without secret values; the values are stored under ``key``.

        Only what changes is copied (``opts`` itself and the header maps holding a
        secret); the rest is shared with ``opts``, which is left as it was. Every publish
        comes through here: a deep copy of every message's options was a tenth of a
        batch's ingest."""
        redact = opts.get("redact") or {}
        every = bool(redact.get("all_headers"))
        names = redact.get("headers") or ()
        sealed: JSON = dict(opts)
        if not every and not names:
            return sealed  # nothing hidden, nothing kept
        kept: dict[str, dict[str, list[str]]] = {}
        for where, headers in _header_maps(opts):
            hidden = {name: list(values) for name, values in headers.items()
                      if values and (every or name.lower() in names)}
            if not hidden:
                continue
            kept[where] = hidden
            shown = {name: [redacted(v) for v in values] if name in hidden else values
                     for name, values in headers.items()}
            if where == "headers":
                sealed["headers"] = shown
            else:  # a callback's headers: the callback's own dict is copied too
                owner = where.split(".", 1)[0]
                sealed[owner] = {**sealed[owner], "headers": shown}
        if kept:
            cur.execute("INSERT OR REPLACE INTO secrets (key, data) VALUES (?, ?)",
                        (key, json.dumps(kept)))
        return sealed

    def unseal_opts(self, cur: sqlite3.Cursor, key: str, opts: JSON) -> JSON:
        """``opts`` with the secret values stored under ``key`` put back."""
        row = cur.execute("SELECT data FROM secrets WHERE key = ?", (key,)).fetchone()
        if row is None:
            return opts
        kept: dict[str, dict[str, list[str]]] = json.loads(row["data"])
        opened: JSON = _json_copy(opts)
        for where, headers in _header_maps(opened):
            headers.update(kept.get(where, {}))
        return opened

    def seal(self, cur: sqlite3.Cursor, message: JSON) -> JSON:
        return {**message, "opts": self.seal_opts(cur, f"msg:{message['id']}", message["opts"])}

    def unseal(self, cur: sqlite3.Cursor, message: JSON) -> JSON:
        return {**message, "opts": self.unseal_opts(cur, f"msg:{message['id']}",
                                                    message["opts"])}

    def drop(self, cur: sqlite3.Cursor, key: str) -> None:
        cur.execute("DELETE FROM secrets WHERE key = ?", (key,))
