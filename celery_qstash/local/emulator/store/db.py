"""The shared SQLite connection every resource module works through.

Durability: every state change is one transaction committed before the caller
returns, so a publish acknowledged by the API survives SIGKILL. The database
runs in WAL mode with ``synchronous=NORMAL``: in WAL mode a commit is written to
the log file before ``COMMIT`` returns, so a killed *process* loses nothing;
only an OS crash or power loss could drop the last commits, which is an
acceptable trade for a development emulator (FULL would fsync on every publish).

Concurrency: one connection guarded by a re-entrant lock; transactions are
short and never span network I/O.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from celery_qstash.clock import Clock, SystemClock
from celery_qstash.local.files import owner_only_db

from ..errors import BadRequest, NotFound
from .schema import SCHEMA, TABLES, migrate

try:  # the ``local`` extra brings it; without it, the stdlib's encoder does the same job
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None  # type: ignore[assignment]

__all__ = ["DB_FILENAME", "JSON", "Database", "decode_cursor", "encode_cursor", "json_text",
           "new_id"]

JSON = dict[str, Any]
DB_FILENAME = "emulator.sqlite3"


_id_lock = threading.Lock()
_id_last_us = 0
#: Random characters for ids, drawn from the OS 4 KiB at a time (one syscall and one
#: base64 pass per 256 ids instead of one each), consumed 16 at a time.
_id_random = ""
_id_used = 0


def new_id(prefix: str) -> str:
    """``prefix`` + a time stamp (13 hex digits of microseconds, strictly increasing in a
    process) + 16 random characters: unique, and each new id sorts after the ones before.

    The order is for SQLite: the ``UNIQUE`` index on message ids (and the log's index by
    message id) takes each new id at its right-hand end, so a batch dirties a few index
    pages instead of one page per message. With random ids that was about half the
    cost of a commit, and it grew with the number of messages stored. The wall clock
    only orders ids; nothing reads a time back from one."""
    global _id_last_us, _id_random, _id_used
    with _id_lock:
        now_us = time.time_ns() // 1000
        _id_last_us = now_us if now_us > _id_last_us else _id_last_us + 1
        if _id_used + 16 > len(_id_random):
            _id_random = secrets.token_urlsafe(3072).replace("-", "x").replace("_", "y")
            _id_used = 0
        tail = _id_random[_id_used:_id_used + 16]
        _id_used += 16
        return f"{prefix}{_id_last_us:013x}{tail}"


def json_text(value: Any) -> str:
    """``value`` as the JSON text a ``data`` column holds (what ``json.loads`` reads back).

    Every publish writes two (the message and its log entry): ``orjson`` writes them in
    about a ninth of the stdlib's time, a tenth of a batch's ingest. Anything it refuses
    (an integer past 64 bits, a lone surrogate) goes through ``json.dumps`` as before."""
    if _orjson is not None:
        try:
            return _orjson.dumps(value).decode()
        except TypeError:  # orjson.JSONEncodeError
            pass
    return json.dumps(value)


def _url_host(url: str | None) -> str | None:
    return urlsplit(url).hostname if url else None


def _url_path(url: str | None) -> str | None:
    return urlsplit(url).path if url else None


def encode_cursor(time_ms: int, seq: int) -> str:
    return f"{time_ms}-{seq}"


def decode_cursor(cursor: str | None) -> tuple[int, int] | None:
    if not cursor:
        return None
    if re.fullmatch(r"[0-9]{1,18}", cursor.strip()):
        # A bare unix-ms time (QStash's own cursors are one): continue before it.
        return int(cursor.strip()), 0
    match = re.fullmatch(r"([0-9]{1,18})-([0-9]{1,18})", cursor.strip())
    if not match:
        raise BadRequest("invalid cursor")
    return int(match.group(1)), int(match.group(2))


class Database:
    """One connection, its lock, the clock, and the small query helpers."""

    def __init__(self, path: str | Path | None = None, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self.lock = threading.RLock()
        target = ":memory:" if path is None else owner_only_db(path, DB_FILENAME)
        self.path = target
        self.conn = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        # The host and path filters of the logs and the DLQ match on parts of ``url``.
        self.conn.create_function("url_host", 1, _url_host, deterministic=True)
        self.conn.create_function("url_path", 1, _url_path, deterministic=True)
        if target != ":memory:":
            self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)
        migrate(self.conn)
        #: Bumped by reset(): what a resource keeps in memory is stale once it changes.
        self.generation = 0
        #: May destinations be link-local (the emulator's ``--allow-link-local``)?
        self.allow_link_local = False
        #: Called after a commit that may have made something due sooner (wakes the loop).
        self.on_change: Callable[[], None] | None = None

    def now_ms(self) -> int:
        return int(self.clock.now() * 1000)

    def one(self, sql: str, params: Sequence[Any], missing: str) -> sqlite3.Row:
        """The one row ``sql`` selects, or :class:`NotFound` with ``missing``."""
        with self.lock:
            row: sqlite3.Row | None = self.conn.execute(sql, params).fetchone()
        if row is None:
            raise NotFound(missing)
        return row

    def all(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    def page(
        self, table: str, time_col: str, where: list[str], params: list[Any],
        cursor: str | None, count: int,
    ) -> tuple[list[JSON], str | None]:
        """One page of ``table``'s ``data``, newest first, with QStash's opaque cursor."""
        position = decode_cursor(cursor)
        if position is not None:
            where = [*where, f"({time_col} < ? OR ({time_col} = ? AND seq < ?))"]
            params = [*params, position[0], position[0], position[1]]
        sql = (
            f"SELECT seq, {time_col}, data FROM {table} WHERE {' AND '.join(where)} "
            f"ORDER BY {time_col} DESC, seq DESC LIMIT ?"
        )
        rows = self.all(sql, (*params, count + 1))
        entries = [json.loads(row["data"]) for row in rows[:count]]
        next_cursor = None
        if len(rows) > count:
            last = rows[count - 1]
            next_cursor = encode_cursor(last[time_col], last["seq"])
        return entries, next_cursor

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Cursor]:
        with self.lock:
            cur = self.conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    def reset(self) -> None:
        """Forget everything (messages, logs, DLQ, queues, groups, keys, schedules)."""
        with self.tx() as cur:
            for table in TABLES:
                cur.execute(f"DELETE FROM {table}")
            self.generation += 1
        self.changed()
