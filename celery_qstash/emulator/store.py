"""The emulator's state: messages, logs, DLQ, queues, URL groups, flow control,
schedules, signing keys and dedup ids, in SQLite. No HTTP here.

Durability: every state change is one transaction committed before the caller
returns, so a publish acknowledged by the API survives SIGKILL. The database
runs in WAL mode with ``synchronous=NORMAL``: in WAL mode a commit is written to
the log file before ``COMMIT`` returns, so a killed *process* loses nothing;
only an OS crash or power loss could drop the last commits, which is an
acceptable trade for a development emulator (FULL would fsync on every publish).

Scheduling is index-driven: a message waiting to be delivered has ``due_ms``
set and ``claim_due`` reads ``ORDER BY due_ms LIMIT n`` through an index, so the
cost of a tick does not grow with the number of future messages. Messages that
wait on something other than time (a queue's FIFO slot, a flow-control
parallelism slot, a paused key) are *parked* (``due_ms`` NULL) and unparked by
the event that frees them, never rescanned.

Concurrency: one connection guarded by a re-entrant lock; transactions are
short and never span network I/O.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery_qstash.clock import Clock, SystemClock

from .cron import CronError, next_after
from .errors import BadRequest, NotFound
from .publish import (
    MAX_PARALLELISM,
    PublishOptions,
    ScheduleOptions,
    check_header_value,
    check_url,
    content_dedup_id,
)
from .signing import generate_signing_key
from .wire import log_entry, response_fields, shown_body, shown_headers

__all__ = [
    "DEDUP_WINDOW_MS",
    "AttemptResult",
    "CallbackSpec",
    "EventFilter",
    "Published",
    "Store",
]

JSON = dict[str, Any]
DEDUP_WINDOW_MS = 10 * 60 * 1000
GLOBAL_PARALLELISM_MAX = 1000
DB_FILENAME = "emulator.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    user TEXT NOT NULL,
    due_ms INTEGER,
    ready_ms INTEGER NOT NULL,
    parked TEXT,
    inflight INTEGER NOT NULL DEFAULT 0,
    cancel INTEGER NOT NULL DEFAULT 0,
    queue TEXT,
    fc_key TEXT,
    created_ms INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_due ON messages(due_ms);
CREATE INDEX IF NOT EXISTS messages_queue ON messages(user, queue, parked, seq);
CREATE INDEX IF NOT EXISTS messages_flow_wait ON messages(user, fc_key, parked, ready_ms, seq);
CREATE INDEX IF NOT EXISTS messages_flow_inflight ON messages(user, fc_key, inflight);
DROP INDEX IF EXISTS messages_flow;
CREATE INDEX IF NOT EXISTS messages_user ON messages(user, created_ms);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    state TEXT NOT NULL,
    url TEXT,
    topic TEXT,
    queue TEXT,
    schedule_id TEXT,
    fc_key TEXT,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_time ON events(user, time_ms, seq);
CREATE INDEX IF NOT EXISTS events_message ON events(message_id, seq);
CREATE TABLE IF NOT EXISTS event_labels (
    user TEXT NOT NULL,
    label TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (user, label, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dlq (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    dlq_id TEXT NOT NULL UNIQUE,
    user TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    url TEXT,
    topic TEXT,
    queue TEXT,
    schedule_id TEXT,
    fc_key TEXT,
    caller_ip TEXT,
    response_status INTEGER,
    labels TEXT NOT NULL DEFAULT ',',
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dlq_user ON dlq(user, created_ms, seq);
CREATE TABLE IF NOT EXISTS queues (
    user TEXT NOT NULL,
    name TEXT NOT NULL,
    parallelism INTEGER NOT NULL DEFAULT 1,
    paused INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (user, name)
);
CREATE TABLE IF NOT EXISTS topics (
    user TEXT NOT NULL,
    name TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    endpoints TEXT NOT NULL,
    PRIMARY KEY (user, name)
);
CREATE TABLE IF NOT EXISTS flow (
    user TEXT NOT NULL,
    key TEXT NOT NULL,
    parallelism INTEGER,
    rate INTEGER,
    period_s INTEGER NOT NULL DEFAULT 1,
    pin_parallelism INTEGER,
    pin_rate INTEGER,
    pin_period_s INTEGER,
    paused INTEGER NOT NULL DEFAULT 0,
    rate_count INTEGER NOT NULL DEFAULT 0,
    period_start_ms INTEGER NOT NULL DEFAULT 0,
    wake_ms INTEGER,
    PRIMARY KEY (user, key)
);
CREATE TABLE IF NOT EXISTS schedules (
    user TEXT NOT NULL,
    id TEXT NOT NULL,
    next_ms INTEGER,
    paused INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (user, id)
);
CREATE INDEX IF NOT EXISTS schedules_next ON schedules(next_ms);
CREATE TABLE IF NOT EXISTS signing_keys (
    user TEXT PRIMARY KEY,
    current TEXT NOT NULL,
    next TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dedup (
    user TEXT NOT NULL,
    dedup_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (user, dedup_id)
);
CREATE INDEX IF NOT EXISTS dedup_expiry ON dedup(expires_ms);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_TABLES = ("messages", "events", "event_labels", "dlq", "queues", "topics", "flow",
           "schedules", "signing_keys", "dedup", "meta")
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")


def is_url(destination: str) -> bool:
    return "://" in destination


@dataclass
class Published:
    message_id: str
    url: str
    deduplicated: bool = False


@dataclass
class AttemptResult:
    """What one delivery attempt got back (``status`` None = no HTTP response)."""

    status: int | None
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None
    non_retryable: bool = False
    #: Delay before the next attempt if one is due, computed by the delivery loop.
    retry_delay_ms: int = 0

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class CallbackSpec:
    url: str
    options: PublishOptions
    kind: str


#: (message, final state, dlq id) -> callback messages to publish atomically.
CallbackFactory = Callable[[JSON, AttemptResult, str, "str | None"], list[CallbackSpec]]


@dataclass
class EventFilter:
    message_ids: list[str] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    url: str | None = None
    topic: str | None = None
    queue: str | None = None
    schedule_id: str | None = None
    from_ms: int | None = None
    to_ms: int | None = None
    labels: list[str] = field(default_factory=list)
    fc_key: str | None = None
    response_status: int | None = None
    caller_ip: str | None = None
    dlq_ids: list[str] = field(default_factory=list)


def _encode_cursor(time_ms: int, seq: int) -> str:
    return f"{time_ms}-{seq}"


def _decode_cursor(cursor: str | None) -> tuple[int, int] | None:
    if not cursor:
        return None
    match = re.fullmatch(r"([0-9]{1,18})-([0-9]{1,18})", cursor.strip())
    if not match:
        raise BadRequest("invalid cursor")
    return int(match.group(1)), int(match.group(2))


class Store:
    """All emulator state behind plain methods. ``path=None`` keeps it in memory."""

    def __init__(self, path: str | Path | None = None, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._lock = threading.RLock()
        if path is None:
            target = ":memory:"
        else:
            directory = Path(path)
            directory.mkdir(parents=True, exist_ok=True)
            target = str(directory / DB_FILENAME)
        self.path = target
        self._db = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        if target != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._migrate()
        #: Called after a commit that may have made something due sooner (wakes the loop).
        self.on_change: Callable[[], None] | None = None
        self._recover()

    # -- plumbing ---------------------------------------------------------------

    def now_ms(self) -> int:
        return int(self.clock.now() * 1000)

    def _one(self, sql: str, params: Sequence[Any], missing: str) -> sqlite3.Row:
        """The one row ``sql`` selects, or :class:`NotFound` with ``missing``."""
        with self._lock:
            row: sqlite3.Row | None = self._db.execute(sql, params).fetchone()
        if row is None:
            raise NotFound(missing)
        return row

    def _all(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _page(
        self, table: str, time_col: str, where: list[str], params: list[Any],
        cursor: str | None, count: int,
    ) -> tuple[list[JSON], str | None]:
        """One page of ``table``'s ``data``, newest first, with QStash's opaque cursor."""
        position = _decode_cursor(cursor)
        if position is not None:
            where = [*where, f"({time_col} < ? OR ({time_col} = ? AND seq < ?))"]
            params = [*params, position[0], position[0], position[1]]
        sql = (
            f"SELECT seq, {time_col}, data FROM {table} WHERE {' AND '.join(where)} "
            f"ORDER BY {time_col} DESC, seq DESC LIMIT ?"
        )
        rows = self._all(sql, (*params, count + 1))
        entries = [json.loads(row["data"]) for row in rows[:count]]
        next_cursor = None
        if len(rows) > count:
            last = rows[count - 1]
            next_cursor = _encode_cursor(last[time_col], last["seq"])
        return entries, next_cursor

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def reset(self) -> None:
        """Forget everything (messages, logs, DLQ, queues, groups, keys, schedules)."""
        with self._tx() as cur:
            for table in _TABLES:
                cur.execute(f"DELETE FROM {table}")
        self._changed()

    def _migrate(self) -> None:
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(flow)")}
        if "wake_ms" not in columns:  # a database from an older emulator
            self._db.execute("ALTER TABLE flow ADD COLUMN wake_ms INTEGER")
        self._db.execute("CREATE INDEX IF NOT EXISTS flow_wake ON flow(wake_ms)")

    def _recover(self) -> None:
        # An attempt interrupted by a crash is retried: at-least-once delivery.
        with self._tx() as cur:
            cur.execute(
                "UPDATE messages SET inflight = 0, due_ms = ready_ms, parked = NULL "
                "WHERE inflight = 1"
            )

    def explain_due_query(self) -> str:
        """The query plan of ``claim_due`` (tests assert it uses the index)."""
        with self._lock:
            rows = self._db.execute(
                "EXPLAIN QUERY PLAN SELECT seq FROM messages WHERE due_ms <= ? "
                "ORDER BY due_ms, seq LIMIT 10", (0,)
            ).fetchall()
        return " ".join(str(row[3]) for row in rows)

    # -- signing keys -----------------------------------------------------------

    def signing_keys(self, user: str, default: tuple[str, str] | None = None) -> tuple[str, str]:
        with self._tx() as cur:
            row = cur.execute(
                "SELECT current, next FROM signing_keys WHERE user = ?", (user,)
            ).fetchone()
            if row is not None:
                return str(row["current"]), str(row["next"])
            current, nxt = default or (generate_signing_key(), generate_signing_key())
            cur.execute("INSERT INTO signing_keys VALUES (?, ?, ?)", (user, current, nxt))
            return current, nxt

    def rotate_signing_keys(self, user: str) -> tuple[str, str]:
        _, nxt = self.signing_keys(user)
        fresh = generate_signing_key()
        with self._tx() as cur:
            cur.execute(
                "UPDATE signing_keys SET current = ?, next = ? WHERE user = ?", (nxt, fresh, user)
            )
        return nxt, fresh

    # -- events -----------------------------------------------------------------

    def _log(self, cur: sqlite3.Cursor, message: JSON, state: str, now_ms: int,
             extra: JSON | None = None) -> None:
        entry = log_entry(message, state, now_ms, extra)
        fc = message["opts"].get("flow_control") or {}
        cur.execute(
            "INSERT INTO events (user, time_ms, message_id, state, url, topic, queue, "
            "schedule_id, fc_key, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (message["user"], now_ms, message["id"], state, message["url"], message.get("topic"),
             message.get("queue"), message.get("schedule_id"), fc.get("key"),
             json.dumps(entry)),
        )
        seq = cur.lastrowid
        for label in message["opts"].get("labels") or []:
            cur.execute(
                "INSERT OR IGNORE INTO event_labels VALUES (?, ?, ?)", (message["user"], label, seq)
            )

    def list_events(self, user: str, flt: EventFilter, cursor: str | None,
                    count: int) -> tuple[list[JSON], str | None]:
        """Log entries, newest first, with an opaque cursor (None at the end)."""
        where = ["user = ?"]
        params: list[Any] = [user]
        if flt.message_ids:
            where.append(f"message_id IN ({','.join('?' * len(flt.message_ids))})")
            params += flt.message_ids
        states = set(flt.states)
        if "IN_PROGRESS" in states:
            states = (states - {"IN_PROGRESS"}) | {"ACTIVE", "RETRY", "ERROR"}
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            params += sorted(states)
        for column, value in (("url", flt.url), ("topic", flt.topic), ("queue", flt.queue),
                              ("schedule_id", flt.schedule_id), ("fc_key", flt.fc_key)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if flt.from_ms is not None:
            where.append("time_ms >= ?")
            params.append(flt.from_ms)
        if flt.to_ms is not None:
            where.append("time_ms <= ?")
            params.append(flt.to_ms)
        if flt.labels:
            where.append(
                "seq IN (SELECT seq FROM event_labels WHERE user = ? AND label IN "
                f"({','.join('?' * len(flt.labels))}))"
            )
            params += [user, *flt.labels]
        return self._page("events", "time_ms", where, params, cursor, count)

    # -- publishing -------------------------------------------------------------

    def publish(
        self,
        user: str,
        destination: str,
        options: PublishOptions,
        *,
        queue: str | None = None,
        schedule_id: str | None = None,
        caller_ip: str | None = None,
        kind: str = "message",
        now_ms: int | None = None,
    ) -> list[Published]:
        """Store one message per target (one, or one per URL-group endpoint), committed."""
        now = self.now_ms() if now_ms is None else now_ms
        with self._tx() as cur:
            result = self._publish(cur, user, destination, options, queue=queue,
                                   schedule_id=schedule_id, caller_ip=caller_ip, kind=kind,
                                   now_ms=now)
        self._changed()
        return result

    def _targets(self, cur: sqlite3.Cursor, user: str,
                 destination: str) -> list[tuple[str, str | None, str | None]]:
        if is_url(destination):
            return [(check_url(destination, "destination url"), None, None)]
        row = cur.execute(
            "SELECT endpoints FROM topics WHERE user = ? AND name = ?", (user, destination)
        ).fetchone()
        if row is None:
            if "/" in destination or "." in destination:
                raise BadRequest(
                    "invalid destination url: endpoint has invalid scheme, "
                    "add http:// or https://"
                )
            raise NotFound(f"url group {destination} not found")
        endpoints = json.loads(row["endpoints"])
        return [(e["url"], destination, e.get("name")) for e in endpoints]

    def _publish(self, cur: sqlite3.Cursor, user: str, destination: str,
                 options: PublishOptions, *, queue: str | None, schedule_id: str | None,
                 caller_ip: str | None, kind: str, now_ms: int) -> list[Published]:
        if queue is not None:
            self._ensure_queue(cur, user, queue, now_ms)
        cur.execute("DELETE FROM dedup WHERE expires_ms <= ?", (now_ms,))
        results: list[Published] = []
        for url, topic, endpoint in self._targets(cur, user, destination):
            dedup_key = None
            if options.dedup_id:
                dedup_key = "id:" + options.dedup_id + ("|" + url if topic else "")
            elif options.content_dedup:
                dedup_key = content_dedup_id(url, options)
            if dedup_key is not None:
                row = cur.execute(
                    "SELECT message_id FROM dedup WHERE user = ? AND dedup_id = ?",
                    (user, dedup_key),
                ).fetchone()
                if row is not None:
                    results.append(Published(str(row["message_id"]), url, deduplicated=True))
                    continue
            message_id = _new_id("msg_")
            not_before = options.not_before_ms
            if not_before is None:
                not_before = now_ms + options.delay_ms
            message: JSON = {
                "id": message_id, "user": user, "url": url, "topic": topic,
                "endpoint": endpoint, "queue": queue, "schedule_id": schedule_id,
                "caller_ip": caller_ip, "created_ms": now_ms, "not_before_ms": not_before,
                "retried": 0, "kind": kind, "opts": options.to_dict(),
            }
            self._insert(cur, message, ready_ms=not_before, now_ms=now_ms)
            if dedup_key is not None:
                cur.execute(
                    "INSERT OR REPLACE INTO dedup VALUES (?, ?, ?, ?)",
                    (user, dedup_key, message_id, now_ms + DEDUP_WINDOW_MS),
                )
            results.append(Published(message_id, url))
        return results

    def _insert(self, cur: sqlite3.Cursor, message: JSON, ready_ms: int, now_ms: int) -> None:
        options = PublishOptions.from_dict(message["opts"])
        fc = options.flow_control
        queue = message.get("queue")
        parked = "queue" if queue else None
        cur.execute(
            "INSERT INTO messages (id, user, due_ms, ready_ms, parked, queue, fc_key, "
            "created_ms, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (message["id"], message["user"], None if parked else ready_ms, ready_ms, parked,
             queue, fc.key if fc else None, message["created_ms"], json.dumps(message)),
        )
        if fc is not None:
            self._touch_flow(cur, message["user"], fc.key, fc.parallelism, fc.rate, fc.period_s)
        self._log(cur, message, "CREATED", now_ms)
        if queue:
            self._refill_queue(cur, message["user"], queue)

    # -- messages ---------------------------------------------------------------

    def get_message(self, user: str, message_id: str) -> JSON:
        row = self._one(
            "SELECT data FROM messages WHERE user = ? AND id = ? AND cancel = 0",
            (user, message_id), "message not found",
        )
        data: JSON = json.loads(row["data"])
        return data

    def pending_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])

    def cancel(self, user: str, message_ids: Sequence[str] | None = None,
               flt: EventFilter | None = None, count: int | None = None,
               host: str | None = None, path: str | None = None) -> int:
        """Record CANCEL_REQUESTED now; the next tick logs CANCELED and removes them.

        ``message_ids`` None and an empty filter cancel everything of ``user``.
        """
        now = self.now_ms()
        cancelled = 0
        with self._tx() as cur:
            sql = "SELECT seq, id, inflight, data FROM messages WHERE user = ? AND cancel = 0"
            params: list[Any] = [user]
            if message_ids is not None:
                if not message_ids:
                    return 0
                sql += f" AND id IN ({','.join('?' * len(message_ids))})"
                params += list(message_ids)
            rows = cur.execute(sql + " ORDER BY seq", params).fetchall()
            for row in rows:
                message = json.loads(row["data"])
                if flt is not None and not _message_matches(message, flt, host, path):
                    continue
                if count is not None and cancelled >= count:
                    break
                self._log(cur, message, "CANCEL_REQUESTED", now)
                if row["inflight"]:
                    cur.execute("UPDATE messages SET cancel = 1 WHERE seq = ?", (row["seq"],))
                else:
                    cur.execute(
                        "UPDATE messages SET cancel = 1, parked = NULL, due_ms = ? WHERE seq = ?",
                        (now, row["seq"]),
                    )
                cancelled += 1
        self._changed()
        return cancelled

    # -- delivery ---------------------------------------------------------------

    def next_due_ms(self) -> int | None:
        """Earliest time anything (message or schedule) is due, for the background loop."""
        with self._lock:
            row = self._db.execute("SELECT MIN(due_ms) FROM messages").fetchone()
            srow = self._db.execute(
                "SELECT MIN(next_ms) FROM schedules WHERE paused = 0"
            ).fetchone()
            frow = self._db.execute("SELECT MIN(wake_ms) FROM flow").fetchone()
        times = [t for t in (row[0], srow[0], frow[0]) if t is not None]
        return min(times) if times else None

    def claim_due(self, now_ms: int, limit: int = 256) -> list[JSON]:
        """Mark up to ``limit`` due messages in flight (logging ACTIVE) and return them.

        Cancelled messages are finished here (CANCELED). Queue pause, flow-control
        pause, parallelism and rate are enforced here by parking: once a flow key is
        full, all its due messages are parked with one UPDATE and woken by the event
        that frees them (a finished attempt, the next rate period), so a tick costs
        the same whether 1 or 100,000 messages wait on a key.
        """
        claimed: list[JSON] = []
        with self._tx() as cur:
            self._wake_rate_limited(cur, now_ms)
            rows = cur.execute(
                "SELECT seq, data, cancel, queue, fc_key, user FROM messages "
                "WHERE due_ms <= ? ORDER BY due_ms, seq LIMIT ?",
                (now_ms, limit),
            ).fetchall()
            gates: dict[tuple[str, str], _FlowGate | None] = {}
            for row in rows:
                seq, user = row["seq"], row["user"]
                if row["cancel"]:
                    self._finish_cancelled(cur, seq, json.loads(row["data"]), now_ms)
                    continue
                flow_key = (user, row["fc_key"]) if row["fc_key"] else None
                gate = None
                if flow_key is not None:
                    if flow_key not in gates:
                        gates[flow_key] = self._flow_gate(cur, user, flow_key[1])
                    gate = gates[flow_key]
                    if gate is not None and gate.closed:
                        continue  # parked together with the key's other due messages
                if row["queue"] and self._queue_paused(cur, user, row["queue"]):
                    cur.execute(
                        "UPDATE messages SET parked = 'queue', due_ms = NULL WHERE seq = ?", (seq,)
                    )
                    continue
                if gate is not None and not gate.admit(now_ms):
                    self._park_flow(cur, user, gate, now_ms)
                    continue
                message = json.loads(row["data"])
                cur.execute("UPDATE messages SET inflight = 1, due_ms = NULL WHERE seq = ?", (seq,))
                self._log(cur, message, "ACTIVE", now_ms)
                claimed.append(message)
            for (user, key), gate in gates.items():
                if gate is not None and gate.rate_used_changed:
                    cur.execute(
                        "UPDATE flow SET period_start_ms = ?, rate_count = ? "
                        "WHERE user = ? AND key = ?", (gate.start, gate.used, user, key),
                    )
        return claimed

    def _flow_gate(self, cur: sqlite3.Cursor, user: str, key: str) -> _FlowGate | None:
        """The admission state of one flow key, read once per claim."""
        flow = cur.execute("SELECT * FROM flow WHERE user = ? AND key = ?", (user, key)).fetchone()
        if flow is None:
            return None
        parallelism, rate, period_s = _effective_limits(flow)
        inflight = 0
        if parallelism is not None:
            inflight = int(cur.execute(
                "SELECT COUNT(*) FROM messages WHERE user = ? AND fc_key = ? AND inflight = 1",
                (user, key),
            ).fetchone()[0])
        return _FlowGate(key=key, paused=bool(flow["paused"]), parallelism=parallelism,
                         rate=rate, period_ms=period_s * 1000, inflight=inflight,
                         start=int(flow["period_start_ms"]), used=int(flow["rate_count"]))

    def _park_flow(self, cur: sqlite3.Cursor, user: str, gate: _FlowGate, now_ms: int) -> None:
        """Park every due message of a closed key at once (see :meth:`claim_due`)."""
        assert gate.closed is not None
        cur.execute(
            "UPDATE messages SET parked = ?, due_ms = NULL WHERE user = ? AND fc_key = ? "
            "AND parked IS NULL AND inflight = 0 AND cancel = 0 AND due_ms <= ?",
            (gate.closed, user, gate.key, now_ms),
        )
        if gate.closed == "rate":
            # Woken when the period ends (next_due_ms includes it), `rate` at a time.
            cur.execute("UPDATE flow SET wake_ms = ? WHERE user = ? AND key = ?",
                        (gate.start + gate.period_ms, user, gate.key))

    def _wake_rate_limited(self, cur: sqlite3.Cursor, now_ms: int) -> None:
        """A rate period ended: unpark the next ``rate`` waiting messages of each such key."""
        for flow in cur.execute("SELECT * FROM flow WHERE wake_ms <= ?", (now_ms,)).fetchall():
            user, key = flow["user"], flow["key"]
            _, rate, period_s = _effective_limits(flow)
            wake: int | None = None
            if not flow["paused"]:
                cur.execute(
                    "UPDATE messages SET parked = NULL, due_ms = ready_ms WHERE seq IN ("
                    "SELECT seq FROM messages WHERE user = ? AND fc_key = ? AND parked = 'rate' "
                    "ORDER BY ready_ms, seq LIMIT ?)", (user, key, rate or -1),
                )
                more = cur.execute(
                    "SELECT 1 FROM messages WHERE user = ? AND fc_key = ? AND parked = 'rate' "
                    "LIMIT 1", (user, key),
                ).fetchone()
                if more is not None:
                    wake = now_ms + period_s * 1000
            cur.execute("UPDATE flow SET wake_ms = ? WHERE user = ? AND key = ?",
                        (wake, user, key))

    def _finish_cancelled(self, cur: sqlite3.Cursor, seq: int, message: JSON,
                          now_ms: int) -> None:
        self._log(cur, message, "CANCELED", now_ms)
        self._remove(cur, seq, message)

    def _remove(self, cur: sqlite3.Cursor, seq: int, message: JSON) -> None:
        cur.execute("DELETE FROM messages WHERE seq = ?", (seq,))
        if message.get("queue"):
            self._refill_queue(cur, message["user"], message["queue"])
        fc = message["opts"].get("flow_control")
        if fc:
            self._refill_flow(cur, message["user"], fc["key"])

    def finish_attempt(self, message: JSON, result: AttemptResult, now_ms: int,
                       callbacks: CallbackFactory | None = None) -> str:
        """Record the outcome of an attempt; returns DELIVERED, RETRY, FAILED or CANCELED."""
        attempted = dict(message)  # callbacks report the attempt's own retry count
        message = dict(message)
        with self._tx() as cur:
            row = cur.execute(
                "SELECT seq, cancel FROM messages WHERE id = ?", (message["id"],)
            ).fetchone()
            if row is None:  # reset() while the attempt was running
                return "CANCELED"
            seq = row["seq"]
            dlq_id: str | None = None
            if result.ok:
                state = "DELIVERED"
                self._log(cur, message, state, now_ms, response_fields(
                    result.status, result.headers, result.body, None))
                self._remove(cur, seq, message)
            else:
                self._log(cur, message, "ERROR", now_ms, response_fields(
                    result.status, result.headers, result.body, result.error))
                retries = int(message["opts"].get("retries", 0))
                if row["cancel"]:
                    state = "CANCELED"
                    self._finish_cancelled(cur, seq, message, now_ms)
                elif result.non_retryable or message["retried"] >= retries:
                    state = "FAILED"
                    dlq_id = self._to_dlq(cur, message, result, now_ms)
                    extra = response_fields(result.status, result.headers, result.body,
                                            result.error)
                    extra["dlqId"] = dlq_id
                    self._log(cur, message, state, now_ms, extra)
                    self._remove(cur, seq, message)
                else:
                    state = "RETRY"
                    wake = now_ms + max(0, int(result.retry_delay_ms))
                    message["retried"] += 1
                    self._log(cur, message, state, now_ms, {"nextDeliveryTime": wake})
                    cur.execute(
                        "UPDATE messages SET inflight = 0, due_ms = ?, ready_ms = ?, data = ? "
                        "WHERE seq = ?", (wake, wake, json.dumps(message), seq),
                    )
                    # The slot is free while the retry waits: let the next message in.
                    fc = message["opts"].get("flow_control")
                    if fc:
                        self._refill_flow(cur, message["user"], fc["key"])
            if state in ("DELIVERED", "FAILED"):
                self._record_schedule_state(cur, message, state)
            if callbacks is not None and message.get("kind") == "message":
                for spec in callbacks(attempted, result, state, dlq_id):
                    self._publish(cur, message["user"], spec.url, spec.options, queue=None,
                                  schedule_id=None, caller_ip=message.get("caller_ip"),
                                  kind=spec.kind, now_ms=now_ms)
        self._changed()
        return state

    # -- dead letter queue ------------------------------------------------------

    def _next_dlq_id(self, cur: sqlite3.Cursor, now_ms: int) -> str:
        row = cur.execute("SELECT value FROM meta WHERE key = 'dlq'").fetchone()
        seq = 0
        if row is not None:
            last_ms, last_seq = (int(x) for x in str(row["value"]).split("-"))
            if last_ms >= now_ms:
                now_ms, seq = last_ms, last_seq + 1
        value = f"{now_ms}-{seq}"
        cur.execute("INSERT OR REPLACE INTO meta VALUES ('dlq', ?)", (value,))
        return value

    def _to_dlq(self, cur: sqlite3.Cursor, message: JSON, result: AttemptResult,
                now_ms: int) -> str:
        dlq_id = self._next_dlq_id(cur, now_ms)
        entry = {
            "dlq_id": dlq_id,
            "message": message,
            "response_status": result.status,
            "response_headers": result.headers,
            "response_body": base64.b64encode(result.body).decode("ascii"),
            "error": result.error,
        }
        fc = message["opts"].get("flow_control") or {}
        labels = "," + ",".join(message["opts"].get("labels") or []) + ","
        cur.execute(
            "INSERT INTO dlq (dlq_id, user, created_ms, message_id, url, topic, queue, "
            "schedule_id, fc_key, caller_ip, response_status, labels, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (dlq_id, message["user"], now_ms, message["id"], message["url"],
             message.get("topic"), message.get("queue"), message.get("schedule_id"),
             fc.get("key"), message.get("caller_ip"), result.status, labels, json.dumps(entry)),
        )
        return dlq_id

    def _dlq_where(self, user: str, flt: EventFilter) -> tuple[list[str], list[Any]]:
        where = ["user = ?"]
        params: list[Any] = [user]
        if flt.dlq_ids:
            where.append(f"dlq_id IN ({','.join('?' * len(flt.dlq_ids))})")
            params += flt.dlq_ids
        if flt.message_ids:
            where.append(f"message_id IN ({','.join('?' * len(flt.message_ids))})")
            params += flt.message_ids
        for column, value in (("url", flt.url), ("topic", flt.topic), ("queue", flt.queue),
                              ("schedule_id", flt.schedule_id), ("fc_key", flt.fc_key),
                              ("caller_ip", flt.caller_ip),
                              ("response_status", flt.response_status)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if flt.from_ms is not None:
            where.append("created_ms >= ?")
            params.append(flt.from_ms)
        if flt.to_ms is not None:
            where.append("created_ms <= ?")
            params.append(flt.to_ms)
        if flt.labels:
            where.append("(" + " OR ".join("labels LIKE ?" for _ in flt.labels) + ")")
            params += [f"%,{label},%" for label in flt.labels]
        return where, params

    def list_dlq(self, user: str, flt: EventFilter, cursor: str | None,
                 count: int) -> tuple[list[JSON], str | None]:
        where, params = self._dlq_where(user, flt)
        return self._page("dlq", "created_ms", where, params, cursor, count)

    def get_dlq(self, user: str, dlq_id: str) -> JSON:
        row = self._one(
            "SELECT data FROM dlq WHERE user = ? AND dlq_id = ?", (user, dlq_id),
            "dlq message not found",
        )
        data: JSON = json.loads(row["data"])
        return data

    def delete_dlq(self, user: str, flt: EventFilter, count: int | None = None) -> int:
        where, params = self._dlq_where(user, flt)
        sql = f"SELECT seq FROM dlq WHERE {' AND '.join(where)} ORDER BY seq"
        if count is not None:
            sql += f" LIMIT {int(count)}"
        with self._tx() as cur:
            seqs = [row["seq"] for row in cur.execute(sql, params).fetchall()]
            cur.executemany("DELETE FROM dlq WHERE seq = ?", [(s,) for s in seqs])
        return len(seqs)

    def retry_dlq(self, user: str, flt: EventFilter,
                  override: Callable[[PublishOptions], PublishOptions] | None = None,
                  count: int | None = None) -> list[str]:
        """Republish DLQ entries (same body and headers; ``override`` applies Upstash-* headers)."""
        where, params = self._dlq_where(user, flt)
        sql = f"SELECT seq, data FROM dlq WHERE {' AND '.join(where)} ORDER BY seq"
        if count is not None:
            sql += f" LIMIT {int(count)}"
        now = self.now_ms()
        ids: list[str] = []
        with self._tx() as cur:
            for row in cur.execute(sql, params).fetchall():
                entry = json.loads(row["data"])
                original = entry["message"]
                options = PublishOptions.from_dict(original["opts"])
                options.delay_ms, options.not_before_ms = 0, None
                options.dedup_id, options.content_dedup = None, False
                if override is not None:
                    options = override(options)
                published = self._publish(
                    cur, user, original["url"], options, queue=original.get("queue"),
                    schedule_id=original.get("schedule_id"), caller_ip=original.get("caller_ip"),
                    kind=original.get("kind", "message"), now_ms=now,
                )
                for item in published:
                    # The retried copy keeps the group identity of the original.
                    self._patch_message(cur, item.message_id, topic=original.get("topic"),
                                        endpoint=original.get("endpoint"))
                    ids.append(item.message_id)
                cur.execute("DELETE FROM dlq WHERE seq = ?", (row["seq"],))
        self._changed()
        return ids

    def _patch_message(self, cur: sqlite3.Cursor, message_id: str, **fields: Any) -> None:
        row = cur.execute("SELECT data FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            return
        data = json.loads(row["data"])
        data.update(fields)
        cur.execute("UPDATE messages SET data = ? WHERE id = ?", (json.dumps(data), message_id))

    # -- queues -----------------------------------------------------------------

    def _ensure_queue(self, cur: sqlite3.Cursor, user: str, name: str, now_ms: int) -> None:
        if not _QUEUE_NAME.match(name):
            raise BadRequest(
                "invalid queue name: only alphanumerics, '-', '.' and '_' are allowed"
            )
        cur.execute(
            "INSERT OR IGNORE INTO queues (user, name, parallelism, paused, created_ms, "
            "updated_ms) VALUES (?, ?, 1, 0, ?, ?)", (user, name, now_ms, now_ms),
        )

    def _queue_paused(self, cur: sqlite3.Cursor, user: str, name: str) -> bool:
        row = cur.execute(
            "SELECT paused FROM queues WHERE user = ? AND name = ?", (user, name)
        ).fetchone()
        return bool(row and row["paused"])

    def _refill_queue(self, cur: sqlite3.Cursor, user: str, name: str) -> None:
        """Unpark the oldest waiting messages while the queue has free parallelism."""
        row = cur.execute(
            "SELECT parallelism, paused FROM queues WHERE user = ? AND name = ?", (user, name)
        ).fetchone()
        if row is None or row["paused"]:
            return
        active = cur.execute(
            "SELECT COUNT(*) FROM messages WHERE user = ? AND queue = ? AND parked IS NULL",
            (user, name),
        ).fetchone()[0]
        free = int(row["parallelism"]) - int(active)
        if free <= 0:
            return
        cur.execute(
            "UPDATE messages SET parked = NULL, due_ms = ready_ms WHERE seq IN ("
            "SELECT seq FROM messages WHERE user = ? AND queue = ? AND parked = 'queue' "
            "ORDER BY seq LIMIT ?)", (user, name, free),
        )

    def upsert_queue(self, user: str, name: str, parallelism: int, paused: bool) -> None:
        if not 1 <= parallelism <= MAX_PARALLELISM:
            raise BadRequest(f"parallelism must be between 1 and {MAX_PARALLELISM}")
        now = self.now_ms()
        with self._tx() as cur:
            self._ensure_queue(cur, user, name, now)
            cur.execute(
                "UPDATE queues SET parallelism = ?, paused = ?, updated_ms = ? "
                "WHERE user = ? AND name = ?", (parallelism, int(paused), now, user, name),
            )
            self._refill_queue(cur, user, name)
        self._changed()

    def _queue_json(self, cur: sqlite3.Cursor, row: sqlite3.Row) -> JSON:
        lag = cur.execute(
            "SELECT COUNT(*) FROM messages WHERE user = ? AND queue = ? AND inflight = 0",
            (row["user"], row["name"]),
        ).fetchone()[0]
        return {
            "name": row["name"], "parallelism": row["parallelism"],
            "createdAt": row["created_ms"], "updatedAt": row["updated_ms"],
            "lag": lag, "paused": bool(row["paused"]),
        }

    def get_queue(self, user: str, name: str) -> JSON:
        with self._lock:
            cur = self._db.cursor()
            row = cur.execute(
                "SELECT * FROM queues WHERE user = ? AND name = ?", (user, name)
            ).fetchone()
            if row is None:
                raise NotFound("queue not found")
            return self._queue_json(cur, row)

    def list_queues(self, user: str) -> list[JSON]:
        with self._lock:
            cur = self._db.cursor()
            rows = cur.execute("SELECT * FROM queues WHERE user = ? ORDER BY name", (user,))
            return [self._queue_json(cur, row) for row in rows.fetchall()]

    def delete_queue(self, user: str, name: str) -> None:
        """Drop the queue; its waiting messages are cancelled (logged CANCELED)."""
        now = self.now_ms()
        with self._tx() as cur:
            deleted = cur.execute(
                "DELETE FROM queues WHERE user = ? AND name = ?", (user, name)
            ).rowcount
            if not deleted:
                raise NotFound("queue not found")
            for row in cur.execute(
                "SELECT seq, data FROM messages WHERE user = ? AND queue = ? AND inflight = 0",
                (user, name),
            ).fetchall():
                message = json.loads(row["data"])
                self._log(cur, message, "CANCELED", now)
                cur.execute("DELETE FROM messages WHERE seq = ?", (row["seq"],))

    def set_queue_paused(self, user: str, name: str, paused: bool) -> None:
        with self._tx() as cur:
            updated = cur.execute(
                "UPDATE queues SET paused = ?, updated_ms = ? WHERE user = ? AND name = ?",
                (int(paused), self.now_ms(), user, name),
            ).rowcount
            if not updated:
                raise NotFound("queue not found")
            self._refill_queue(cur, user, name)
        self._changed()

    # -- URL groups (topics) ----------------------------------------------------

    def upsert_endpoints(self, user: str, name: str, endpoints: list[JSON]) -> None:
        if not _QUEUE_NAME.match(name):
            raise BadRequest("invalid url group name")
        now = self.now_ms()
        with self._tx() as cur:
            row = cur.execute(
                "SELECT endpoints FROM topics WHERE user = ? AND name = ?", (user, name)
            ).fetchone()
            current: list[JSON] = json.loads(row["endpoints"]) if row else []
            for endpoint in endpoints:
                url = endpoint.get("url")
                if not isinstance(url, str):
                    raise BadRequest("invalid endpoint url: add http:// or https://")
                check_url(url, "endpoint url")
                label = endpoint.get("name")
                if label is not None and not isinstance(label, str):
                    raise BadRequest("invalid endpoint name: must be a string")
                if label:  # it travels as the Upstash-Endpoint-Name header
                    check_header_value(label, "endpoint name")
                current = [e for e in current if e["url"] != url and (
                    not endpoint.get("name") or e.get("name") != endpoint.get("name"))]
                item: JSON = {"url": url}
                if endpoint.get("name"):
                    item["name"] = endpoint["name"]
                current.append(item)
            if row is None:
                cur.execute("INSERT INTO topics VALUES (?, ?, ?, ?, ?)",
                            (user, name, now, now, json.dumps(current)))
            else:
                cur.execute(
                    "UPDATE topics SET endpoints = ?, updated_ms = ? WHERE user = ? AND name = ?",
                    (json.dumps(current), now, user, name),
                )

    def remove_endpoints(self, user: str, name: str, endpoints: list[JSON]) -> None:
        with self._tx() as cur:
            row = cur.execute(
                "SELECT endpoints FROM topics WHERE user = ? AND name = ?", (user, name)
            ).fetchone()
            if row is None:
                raise NotFound("url group not found")
            current: list[JSON] = json.loads(row["endpoints"])
            for endpoint in endpoints:
                current = [e for e in current if not (
                    (endpoint.get("url") and e["url"] == endpoint["url"])
                    or (endpoint.get("name") and e.get("name") == endpoint["name"]))]
            if current:
                cur.execute(
                    "UPDATE topics SET endpoints = ?, updated_ms = ? WHERE user = ? AND name = ?",
                    (json.dumps(current), self.now_ms(), user, name),
                )
            else:
                cur.execute("DELETE FROM topics WHERE user = ? AND name = ?", (user, name))

    @staticmethod
    def _topic_json(row: sqlite3.Row) -> JSON:
        return {"name": row["name"], "createdAt": row["created_ms"],
                "updatedAt": row["updated_ms"], "endpoints": json.loads(row["endpoints"])}

    def get_topic(self, user: str, name: str) -> JSON:
        return self._topic_json(self._one(
            "SELECT * FROM topics WHERE user = ? AND name = ?", (user, name),
            "url group not found",
        ))

    def list_topics(self, user: str) -> list[JSON]:
        rows = self._all("SELECT * FROM topics WHERE user = ? ORDER BY name", (user,))
        return [self._topic_json(row) for row in rows]

    def delete_topic(self, user: str, name: str) -> None:
        with self._tx() as cur:
            if not cur.execute(
                "DELETE FROM topics WHERE user = ? AND name = ?", (user, name)
            ).rowcount:
                raise NotFound("url group not found")

    # -- flow control -----------------------------------------------------------

    def _touch_flow(self, cur: sqlite3.Cursor, user: str, key: str, parallelism: int | None,
                    rate: int | None, period_s: int) -> None:
        # The latest publish defines the key's limits (pins override them).
        cur.execute(
            "INSERT INTO flow (user, key, parallelism, rate, period_s) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(user, key) DO UPDATE SET parallelism = excluded.parallelism, "
            "rate = excluded.rate, period_s = excluded.period_s",
            (user, key, parallelism, rate, period_s),
        )

    def _refill_flow(self, cur: sqlite3.Cursor, user: str, key: str,
                     everything: bool = False) -> None:
        flow = cur.execute("SELECT * FROM flow WHERE user = ? AND key = ?", (user, key)).fetchone()
        if flow is None or flow["paused"]:
            return
        states = "('flow', 'flowpause', 'rate')" if everything else "('flow')"
        parallelism, _, _ = _effective_limits(flow)
        limit = -1
        if parallelism is not None and not everything:
            inflight = cur.execute(
                "SELECT COUNT(*) FROM messages WHERE user = ? AND fc_key = ? AND inflight = 1",
                (user, key),
            ).fetchone()[0]
            limit = max(0, parallelism - int(inflight))
            if limit == 0:
                return
        cur.execute(
            "UPDATE messages SET parked = NULL, due_ms = ready_ms WHERE seq IN ("
            f"SELECT seq FROM messages WHERE user = ? AND fc_key = ? AND parked IN {states} "
            "ORDER BY ready_ms, seq LIMIT ?)", (user, key, limit),
        )
        if everything:
            cur.execute("UPDATE flow SET wake_ms = NULL WHERE user = ? AND key = ?", (user, key))

    def _flow_json(self, cur: sqlite3.Cursor, flow: sqlite3.Row, now_ms: int) -> JSON:
        parallelism, rate, period_s = _effective_limits(flow)
        user, key = flow["user"], flow["key"]
        inflight, waiting = cur.execute(
            "SELECT COALESCE(SUM(inflight), 0), COALESCE(SUM(1 - inflight), 0) FROM messages "
            "WHERE user = ? AND fc_key = ?", (user, key),
        ).fetchone()
        in_period = now_ms < flow["period_start_ms"] + period_s * 1000
        return {
            "flowControlKey": key,
            "waitListSize": int(waiting),
            "parallelismMax": parallelism or 0,
            "parallelismCount": int(inflight),
            "rateMax": rate or 0,
            "rateCount": flow["rate_count"] if in_period else 0,
            "ratePeriod": period_s,
            "ratePeriodStart": flow["period_start_ms"] if in_period else 0,
            "isPaused": bool(flow["paused"]),
            "isPinnedParallelism": flow["pin_parallelism"] is not None,
            "isPinnedRate": flow["pin_rate"] is not None,
        }

    def get_flow(self, user: str, key: str) -> JSON:
        with self._lock:
            cur = self._db.cursor()
            flow = cur.execute(
                "SELECT * FROM flow WHERE user = ? AND key = ?", (user, key)
            ).fetchone()
            if flow is None:
                raise NotFound("flow control key not found")
            return self._flow_json(cur, flow, self.now_ms())

    def list_flows(self, user: str, search: str | None = None) -> list[JSON]:
        with self._lock:
            cur = self._db.cursor()
            rows = cur.execute("SELECT * FROM flow WHERE user = ? ORDER BY key", (user,)).fetchall()
            now = self.now_ms()
            return [self._flow_json(cur, row, now) for row in rows
                    if not search or search.lower() in row["key"].lower()]

    def update_flow(self, user: str, key: str, action: str, *, parallelism: int | None = None,
                    rate: int | None = None, period_s: int | None = None,
                    unpin_parallelism: bool = False, unpin_rate: bool = False) -> None:
        """pause / resume / pin / unpin / resetRate / reset one flow-control key."""
        with self._tx() as cur:
            cur.execute("INSERT OR IGNORE INTO flow (user, key) VALUES (?, ?)", (user, key))
            where = (user, key)
            if action in ("pause", "resume"):
                cur.execute("UPDATE flow SET paused = ? WHERE user = ? AND key = ?",
                            (int(action == "pause"), *where))
            elif action == "pin":
                if parallelism is not None:
                    cur.execute("UPDATE flow SET pin_parallelism = ? WHERE user = ? AND key = ?",
                                (parallelism, *where))
                if rate is not None:
                    cur.execute("UPDATE flow SET pin_rate = ?, pin_period_s = ? "
                                "WHERE user = ? AND key = ?", (rate, period_s, *where))
            elif action == "unpin":
                if unpin_parallelism:
                    cur.execute("UPDATE flow SET pin_parallelism = NULL WHERE user = ? AND key = ?",
                                where)
                if unpin_rate:
                    cur.execute("UPDATE flow SET pin_rate = NULL, pin_period_s = NULL "
                                "WHERE user = ? AND key = ?", where)
            elif action == "resetRate":
                cur.execute("UPDATE flow SET rate_count = 0, period_start_ms = 0 "
                            "WHERE user = ? AND key = ?", where)
            elif action == "reset":
                cur.execute("UPDATE flow SET rate_count = 0, period_start_ms = 0, paused = 0, "
                            "pin_parallelism = NULL, pin_rate = NULL, pin_period_s = NULL "
                            "WHERE user = ? AND key = ?", where)
            else:
                raise NotFound(f"unknown flow control action {action}")
            self._refill_flow(cur, user, key, everything=True)
        self._changed()

    def global_parallelism(self, user: str) -> JSON:
        with self._lock:
            count = self._db.execute(
                "SELECT COUNT(*) FROM messages WHERE user = ? AND inflight = 1", (user,)
            ).fetchone()[0]
        return {"parallelismMax": GLOBAL_PARALLELISM_MAX, "parallelismCount": int(count)}

    # -- schedules --------------------------------------------------------------

    def upsert_schedule(self, user: str, destination: str, schedule: ScheduleOptions,
                        caller_ip: str | None = None) -> str:
        now = self.now_ms()
        schedule_id = schedule.schedule_id or _new_id("scd_")
        with self._tx() as cur:
            if is_url(destination):
                self._targets(cur, user, destination)  # validates the URL
            if schedule.queue is not None:
                self._ensure_queue(cur, user, schedule.queue, now)
            row = cur.execute("SELECT created_ms, paused FROM schedules WHERE user = ? AND id = ?",
                              (user, schedule_id)).fetchone()
            created = row["created_ms"] if row else now
            paused = bool(row["paused"]) if row else False
            data = {
                "id": schedule_id, "destination": destination, "cron": schedule.cron,
                "queue": schedule.queue, "caller_ip": caller_ip,
                "opts": schedule.publish.to_dict(), "last_ms": None, "last_states": {},
                "error": None,
            }
            try:
                next_ms = None if paused else int(next_after(schedule.cron, now / 1000) * 1000)
            except CronError as exc:
                raise BadRequest(f"invalid Upstash-Cron header: {exc}") from None
            cur.execute(
                "INSERT OR REPLACE INTO schedules VALUES (?, ?, ?, ?, ?, ?)",
                (user, schedule_id, next_ms, int(paused), created, json.dumps(data)),
            )
        self._changed()
        return schedule_id

    def _schedule_json(self, row: sqlite3.Row) -> JSON:
        data = json.loads(row["data"])
        options = PublishOptions.from_dict(data["opts"])
        out: JSON = {
            "scheduleId": data["id"], "cron": data["cron"], "destination": data["destination"],
            "createdAt": row["created_ms"], "method": options.method,
            "header": shown_headers(options.headers, options.redact),
            "retries": options.retries,
            "isPaused": bool(row["paused"]), "callerIP": data.get("caller_ip") or "127.0.0.1",
            "lastScheduleStates": data.get("last_states") or {},
        }
        body = shown_body(options.body, options.redact)
        try:
            out["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            out["bodyBase64"] = base64.b64encode(body).decode("ascii")
        if options.delay_ms:
            out["delay"] = options.delay_ms // 1000
        if options.timeout_ms is not None:
            out["timeout"] = options.timeout_ms // 1000
        if options.callback:
            out["callback"] = options.callback.url
            out["callbackHeader"] = shown_headers(options.callback.headers, options.redact)
        if options.failure_callback:
            out["failureCallback"] = options.failure_callback.url
            out["failureCallbackHeader"] = shown_headers(options.failure_callback.headers,
                                                         options.redact)
        if data.get("queue"):
            out["queueName"] = data["queue"]
        if options.retry_delay:
            out["retryDelayExpression"] = options.retry_delay
        if options.labels:
            out["label"], out["labels"] = options.labels[0], options.labels
        if options.flow_control:
            fc = options.flow_control
            out["flowControlKey"] = fc.key
            out.update({k: v for k, v in (("parallelism", fc.parallelism), ("rate", fc.rate))
                        if v is not None})
            out["period"] = fc.period_s
        if data.get("last_ms") is not None:
            out["lastScheduleTime"] = data["last_ms"]
        if row["next_ms"] is not None:
            out["nextScheduleTime"] = row["next_ms"]
        if data.get("error"):
            out["error"] = data["error"]
        return out

    def get_schedule(self, user: str, schedule_id: str) -> JSON:
        return self._schedule_json(self._one(
            "SELECT * FROM schedules WHERE user = ? AND id = ?", (user, schedule_id),
            "schedule not found",
        ))

    def list_schedules(self, user: str) -> list[JSON]:
        rows = self._all("SELECT * FROM schedules WHERE user = ? ORDER BY created_ms", (user,))
        return [self._schedule_json(row) for row in rows]

    def delete_schedule(self, user: str, schedule_id: str) -> None:
        with self._tx() as cur:
            cur.execute("DELETE FROM schedules WHERE user = ? AND id = ?", (user, schedule_id))

    def set_schedule_paused(self, user: str, schedule_id: str, paused: bool) -> None:
        with self._tx() as cur:
            row = cur.execute("SELECT data FROM schedules WHERE user = ? AND id = ?",
                              (user, schedule_id)).fetchone()
            if row is None:
                raise NotFound("schedule not found")
            cron = json.loads(row["data"])["cron"]
            try:
                next_ms = None if paused else int(next_after(cron, self.now_ms() / 1000) * 1000)
            except CronError:
                next_ms = None
            cur.execute("UPDATE schedules SET paused = ?, next_ms = ? WHERE user = ? AND id = ?",
                        (int(paused), next_ms, user, schedule_id))
        self._changed()

    def fire_due_schedules(self, now_ms: int, limit: int = 256) -> int:
        """Publish one message (or one per group endpoint) per due schedule.

        A schedule that cannot fire (its URL group is gone, or anything unexpected)
        records the reason in its ``error`` and moves on to its next time: one broken
        schedule never stops delivery.
        """
        fired = 0
        with self._tx() as cur:
            rows = cur.execute(
                "SELECT * FROM schedules WHERE next_ms <= ? ORDER BY next_ms LIMIT ?",
                (now_ms, limit),
            ).fetchall()
            for row in rows:
                self._fire_schedule(cur, row, now_ms)
                fired += 1
        return fired

    def _fire_schedule(self, cur: sqlite3.Cursor, row: sqlite3.Row, now_ms: int) -> None:
        try:
            data = json.loads(row["data"])
        except ValueError:
            cur.execute("UPDATE schedules SET next_ms = NULL WHERE user = ? AND id = ?",
                        (row["user"], row["id"]))
            return
        data["last_ms"] = row["next_ms"]
        cur.execute("SAVEPOINT fire")
        try:
            options = PublishOptions.from_dict(data["opts"])
            published = self._publish(
                cur, row["user"], data["destination"], options, queue=data.get("queue"),
                schedule_id=data["id"], caller_ip=data.get("caller_ip"),
                kind="message", now_ms=now_ms,
            )
        except Exception as exc:
            cur.execute("ROLLBACK TO fire")  # nothing half-published
            data["error"] = exc.message if isinstance(exc, (BadRequest, NotFound)) else (
                f"schedule could not fire: {type(exc).__name__}")
        else:
            data["last_states"] = {p.message_id: "IN_PROGRESS" for p in published}
            data["error"] = None
        cur.execute("RELEASE fire")
        next_ms: int | None
        try:
            next_ms = int(next_after(data["cron"], now_ms / 1000) * 1000)
        except (CronError, KeyError, TypeError):
            next_ms = None  # never fires again; the error says why
            data["error"] = data.get("error") or "cron expression never fires"
        cur.execute("UPDATE schedules SET next_ms = ?, data = ? WHERE user = ? AND id = ?",
                    (next_ms, json.dumps(data), row["user"], row["id"]))

    def _record_schedule_state(self, cur: sqlite3.Cursor, message: JSON, state: str) -> None:
        if not message.get("schedule_id"):
            return
        row = cur.execute("SELECT data FROM schedules WHERE user = ? AND id = ?",
                          (message["user"], message["schedule_id"])).fetchone()
        if row is None:
            return
        data = json.loads(row["data"])
        if message["id"] in data.get("last_states", {}):
            data["last_states"][message["id"]] = "SUCCESS" if state == "DELIVERED" else "FAIL"
            cur.execute("UPDATE schedules SET data = ? WHERE user = ? AND id = ?",
                        (json.dumps(data), message["user"], message["schedule_id"]))


@dataclass
class _FlowGate:
    """One flow key's admission state during one claim (read once, updated in memory)."""

    key: str
    paused: bool
    parallelism: int | None
    rate: int | None
    period_ms: int
    inflight: int
    start: int
    used: int
    #: Why the key admits nothing more in this claim: the ``parked`` value to use.
    closed: str | None = None
    rate_used_changed: bool = False

    def admit(self, now_ms: int) -> bool:
        if self.paused:
            self.closed = "flowpause"
            return False
        if self.parallelism is not None and self.inflight >= self.parallelism:
            self.closed = "flow"
            return False
        if self.rate is not None:
            if now_ms >= self.start + self.period_ms:
                self.start, self.used = now_ms, 0
                self.rate_used_changed = True
            if self.used >= self.rate:
                self.closed = "rate"
                return False
            self.used += 1
            self.rate_used_changed = True
        self.inflight += 1
        return True


def _effective_limits(flow: sqlite3.Row) -> tuple[int | None, int | None, int]:
    parallelism = flow["pin_parallelism"] if flow["pin_parallelism"] is not None \
        else flow["parallelism"]
    if flow["pin_rate"] is not None:
        return parallelism, flow["pin_rate"], flow["pin_period_s"] or flow["period_s"] or 1
    return parallelism, flow["rate"], flow["period_s"] or 1


def _message_matches(message: JSON, flt: EventFilter, host: str | None, path: str | None) -> bool:
    """Bulk-cancel filters: OR within a filter, AND across filters."""
    from urllib.parse import urlsplit

    parts = urlsplit(message["url"])
    opts = message["opts"]
    checks: list[bool] = []
    if flt.url is not None:
        checks.append(message["url"] == flt.url)
    if host is not None:
        checks.append(parts.hostname == host or parts.netloc == host)
    if path is not None:
        checks.append(parts.path == path)
    if flt.topic is not None:
        checks.append(message.get("topic") == flt.topic)
    if flt.queue is not None:
        checks.append(message.get("queue") == flt.queue)
    if flt.schedule_id is not None:
        checks.append(message.get("schedule_id") == flt.schedule_id)
    if flt.caller_ip is not None:
        checks.append(message.get("caller_ip") == flt.caller_ip)
    if flt.fc_key is not None:
        checks.append((opts.get("flow_control") or {}).get("key") == flt.fc_key)
    if flt.labels:
        checks.append(bool(set(flt.labels) & set(opts.get("labels") or [])))
    if flt.from_ms is not None:
        checks.append(message["created_ms"] >= flt.from_ms)
    if flt.to_ms is not None:
        checks.append(message["created_ms"] <= flt.to_ms)
    return all(checks)
