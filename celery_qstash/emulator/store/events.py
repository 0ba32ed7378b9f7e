"""The message log (QStash's ``/v2/events`` and ``/v2/logs``): writing entries, and
reading them back through the filters and cursors the official SDKs send."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from ..wire import log_entry
from .db import JSON, Database

__all__ = ["EventFilter", "Events"]


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


class Events:
    def __init__(self, db: Database) -> None:
        self.db = db

    def log(self, cur: sqlite3.Cursor, message: JSON, state: str, now_ms: int,
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

    def page(self, user: str, flt: EventFilter, cursor: str | None,
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
        return self.db.page("events", "time_ms", where, params, cursor, count)
