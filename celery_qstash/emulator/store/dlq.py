"""The dead-letter queue (``/v2/dlq``): messages whose retries ran out, listed,
deleted or republished."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Callable
from typing import Any

from ..publish import PublishOptions
from .db import JSON, Database
from .events import EventFilter
from .messages import Messages
from .results import AttemptResult

__all__ = ["DeadLetters"]


class DeadLetters:
    def __init__(self, db: Database, messages: Messages) -> None:
        self.db = db
        self.messages = messages

    def _next_id(self, cur: sqlite3.Cursor, now_ms: int) -> str:
        row = cur.execute("SELECT value FROM meta WHERE key = 'dlq'").fetchone()
        seq = 0
        if row is not None:
            last_ms, last_seq = (int(x) for x in str(row["value"]).split("-"))
            if last_ms >= now_ms:
                now_ms, seq = last_ms, last_seq + 1
        value = f"{now_ms}-{seq}"
        cur.execute("INSERT OR REPLACE INTO meta VALUES ('dlq', ?)", (value,))
        return value

    def add(self, cur: sqlite3.Cursor, message: JSON, result: AttemptResult,
                now_ms: int) -> str:
        dlq_id = self._next_id(cur, now_ms)
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

    def _where(self, user: str, flt: EventFilter) -> tuple[list[str], list[Any]]:
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

    def page(self, user: str, flt: EventFilter, cursor: str | None,
                 count: int) -> tuple[list[JSON], str | None]:
        where, params = self._where(user, flt)
        return self.db.page("dlq", "created_ms", where, params, cursor, count)

    def get(self, user: str, dlq_id: str) -> JSON:
        row = self.db.one(
            "SELECT data FROM dlq WHERE user = ? AND dlq_id = ?", (user, dlq_id),
            "dlq message not found",
        )
        data: JSON = json.loads(row["data"])
        return data

    def delete(self, user: str, flt: EventFilter, count: int | None = None) -> int:
        where, params = self._where(user, flt)
        sql = f"SELECT seq FROM dlq WHERE {' AND '.join(where)} ORDER BY seq"
        if count is not None:
            sql += f" LIMIT {int(count)}"
        with self.db.tx() as cur:
            seqs = [row["seq"] for row in cur.execute(sql, params).fetchall()]
            cur.executemany("DELETE FROM dlq WHERE seq = ?", [(s,) for s in seqs])
        return len(seqs)

    def retry(self, user: str, flt: EventFilter,
                  override: Callable[[PublishOptions], PublishOptions] | None = None,
                  count: int | None = None) -> list[str]:
        """Republish DLQ entries (same body and headers; ``override`` applies Upstash-* headers)."""
        where, params = self._where(user, flt)
        sql = f"SELECT seq, data FROM dlq WHERE {' AND '.join(where)} ORDER BY seq"
        if count is not None:
            sql += f" LIMIT {int(count)}"
        now = self.db.now_ms()
        ids: list[str] = []
        with self.db.tx() as cur:
            for row in cur.execute(sql, params).fetchall():
                entry = json.loads(row["data"])
                original = entry["message"]
                options = PublishOptions.from_dict(original["opts"])
                options.delay_ms, options.not_before_ms = 0, None
                options.dedup_id, options.content_dedup = None, False
                if override is not None:
                    options = override(options)
                published = self.messages.publish_in(
                    cur, user, original["url"], options, queue=original.get("queue"),
                    schedule_id=original.get("schedule_id"), caller_ip=original.get("caller_ip"),
                    kind=original.get("kind", "message"), now_ms=now,
                )
                for item in published:
                    # The retried copy keeps the group identity of the original.
                    self.messages.patch(cur, item.message_id, topic=original.get("topic"),
                                        endpoint=original.get("endpoint"))
                    ids.append(item.message_id)
                cur.execute("DELETE FROM dlq WHERE seq = ?", (row["seq"],))
        self.db.changed()
        return ids
