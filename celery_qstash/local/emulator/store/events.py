"""The message log (QStash's ``/v2/events`` and ``/v2/logs``): writing entries, and
reading them back through the filters and cursors the official SDKs send."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

from ..publish import PublishOptions
from ..wire import log_entry
from .db import JSON, Database, json_text

__all__ = ["EventFilter", "Events", "filter_sql"]


@dataclass
class EventFilter:
    """QStash's list filters: OR within a field (several values), AND across fields."""

    message_ids: list[str] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)
    schedule_ids: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    fc_keys: list[str] = field(default_factory=list)
    response_statuses: list[int] = field(default_factory=list)
    caller_ips: list[str] = field(default_factory=list)
    dlq_ids: list[str] = field(default_factory=list)
    from_ms: int | None = None
    to_ms: int | None = None


def _in(column: str, values: list[Any]) -> tuple[str, list[Any]]:
    return f"{column} IN ({','.join('?' * len(values))})", list(values)


def filter_sql(flt: EventFilter, time_col: str,
               status_col: str = "response_status") -> tuple[list[str], list[Any]]:
    """WHERE clauses for the columns the ``events`` and ``dlq`` tables share.

    ``url_host``/``url_path`` are SQL functions registered by :class:`Database`.
    """
    where: list[str] = []
    params: list[Any] = []
    for column, values in (("message_id", flt.message_ids), ("url", flt.urls),
                           ("url_host(url)", flt.hosts), ("url_path(url)", flt.paths),
                           ("topic", flt.topics), ("queue", flt.queues),
                           ("schedule_id", flt.schedule_ids), ("fc_key", flt.fc_keys),
                           ("caller_ip", flt.caller_ips), (status_col, flt.response_statuses)):
        if values:
            clause, args = _in(column, values)
            where.append(clause)
            params += args
    if flt.from_ms is not None:
        where.append(f"{time_col} >= ?")
        params.append(flt.from_ms)
    if flt.to_ms is not None:
        where.append(f"{time_col} <= ?")
        params.append(flt.to_ms)
    return where, params


class Events:
    def __init__(self, db: Database) -> None:
        self.db = db

    def log(self, cur: sqlite3.Cursor, message: JSON, state: str, now_ms: int,
            extra: JSON | None = None, options: PublishOptions | None = None) -> None:
        """Append one log entry (``options``: ``message["opts"]`` parsed, if at hand)."""
        entry = log_entry(message, state, now_ms, extra, options)
        fc = message["opts"].get("flow_control") or {}
        cur.execute(
            "INSERT INTO events (user, time_ms, message_id, state, url, topic, queue, "
            "schedule_id, fc_key, caller_ip, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (message["user"], now_ms, message["id"], state, message["url"], message.get("topic"),
             message.get("queue"), message.get("schedule_id"), fc.get("key"),
             message.get("caller_ip"), json_text(entry)),
        )
        seq = cur.lastrowid
        for label in message["opts"].get("labels") or []:
            cur.execute(
                "INSERT OR IGNORE INTO event_labels VALUES (?, ?, ?)", (message["user"], label, seq)
            )

    def created_since(self, user: str, since_ms: int) -> int:
        """Messages created (callbacks included: QStash bills them alike) since ``since_ms``."""
        with self.db.lock:
            row = self.db.conn.execute(
                "SELECT COUNT(*) FROM events WHERE user = ? AND time_ms >= ? "
                "AND state = 'CREATED'", (user, since_ms)).fetchone()
        return int(row[0])

    def page(self, user: str, flt: EventFilter, cursor: str | None,
             count: int) -> tuple[list[JSON], str | None]:
        """Log entries, newest first, with an opaque cursor (None at the end)."""
        where = ["user = ?"]
        params: list[Any] = [user]
        states = set(flt.states)
        if "IN_PROGRESS" in states:
            states = (states - {"IN_PROGRESS"}) | {"ACTIVE", "RETRY", "ERROR"}
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            params += sorted(states)
        clauses, args = filter_sql(flt, "time_ms",
                                   "CAST(json_extract(data, '$.responseStatus') AS INTEGER)")
        where += clauses
        params += args
        if flt.labels:
            where.append(
                "seq IN (SELECT seq FROM event_labels WHERE user = ? AND label IN "
                f"({','.join('?' * len(flt.labels))}))"
            )
            params += [user, *flt.labels]
        return self.db.page("events", "time_ms", where, params, cursor, count)
