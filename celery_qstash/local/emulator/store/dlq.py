"""The dead-letter queue (``/v2/dlq``): messages whose retries ran out, listed,
deleted or republished."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Callable
from typing import Any

from ..errors import NotFound
from ..publish import PublishOptions
from .db import JSON, Database, decode_cursor, encode_cursor
from .events import EventFilter, filter_sql
from .messages import Messages
from .results import AttemptResult

__all__ = ["BULK_MAX", "DLQ_RETENTION_S", "DeadLetters"]

#: How long a dead letter is kept: QStash's pay-as-you-go "DLQ retention: 7 days"
#: (upstash.com/pricing/qstash; Free keeps 3 days, the fixed plans 30 days to 3 months).
DLQ_RETENTION_S = 7 * 86_400

#: QStash's page size for bulk DLQ delete and retry (OAS: count default and maximum 100).
BULK_MAX = 100


class DeadLetters:
    def __init__(self, db: Database, messages: Messages,
                 retention_ms: int = DLQ_RETENTION_S * 1000) -> None:
        self.db = db
        self.messages = messages
        self.retention_ms = retention_ms

    def expire(self, cur: sqlite3.Cursor, now_ms: int) -> int:
        """Drop the entries older than the retention (their secrets with them)."""
        # By the message_id column, not the stored JSON: this runs in every claim, where
        # one unreadable entry must not stop all delivery.
        rows = cur.execute("SELECT seq, message_id FROM dlq WHERE created_ms <= ?",
                           (now_ms - self.retention_ms,)).fetchall()
        for row in rows:
            cur.execute("DELETE FROM dlq WHERE seq = ?", (row["seq"],))
            self.messages.secrets.drop(cur, f"msg:{row['message_id']}")
        return len(rows)

    def _expired(self) -> None:
        with self.db.tx() as cur:
            self.expire(cur, self.db.now_ms())

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
            "message": self.messages.secrets.seal(cur, message),
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
        clauses, args = filter_sql(flt, "created_ms")
        where += clauses
        params += args
        if flt.labels:
            # instr, never LIKE: a label matches exactly (``_`` and ``%`` are characters of
            # it, case counts), so a bulk delete meant for one task takes no other's.
            # Labels hold no commas (Upstash-Label is split on them).
            where.append("(" + " OR ".join("instr(labels, ?) > 0" for _ in flt.labels) + ")")
            params += [f",{label}," for label in flt.labels]
        return where, params

    def _batch(self, cur: sqlite3.Cursor, user: str, flt: EventFilter, cursor: str | None,
               count: int) -> tuple[list[sqlite3.Row], str | None]:
        """The next ``count`` matching entries, oldest first, and a cursor if more remain.

        QStash's bulk delete and retry work a page at a time (count: default and maximum
        100) and return a ``cursor`` while more match; the cursor is the last entry done.
        """
        self.expire(cur, self.db.now_ms())
        where, params = self._where(user, flt)
        after = decode_cursor(cursor)
        if after is not None:
            where.append("seq > ?")
            params.append(after[1])
        rows = cur.execute(
            f"SELECT seq, created_ms, data FROM dlq WHERE {' AND '.join(where)} "
            "ORDER BY seq LIMIT ?", (*params, count + 1),
        ).fetchall()
        next_cursor = None
        if len(rows) > count:
            rows = rows[:count]
            next_cursor = encode_cursor(rows[-1]["created_ms"], rows[-1]["seq"])
        return rows, next_cursor

    def _drop_secrets(self, cur: sqlite3.Cursor, row: sqlite3.Row) -> None:
        message_id = json.loads(row["data"])["message"]["id"]
        self.messages.secrets.drop(cur, f"msg:{message_id}")

    def page(self, user: str, flt: EventFilter, cursor: str | None,
                 count: int) -> tuple[list[JSON], str | None]:
        self._expired()
        where, params = self._where(user, flt)
        return self.db.page("dlq", "created_ms", where, params, cursor, count)

    def get(self, user: str, dlq_id: str) -> JSON:
        self._expired()
        row = self.db.one(
            "SELECT data FROM dlq WHERE user = ? AND dlq_id = ?", (user, dlq_id),
            "dlq message not found",
        )
        data: JSON = json.loads(row["data"])
        return data

    def delete(self, user: str, flt: EventFilter, count: int = BULK_MAX,
               cursor: str | None = None) -> tuple[int, str | None]:
        with self.db.tx() as cur:
            rows, next_cursor = self._batch(cur, user, flt, cursor, count)
            cur.executemany("DELETE FROM dlq WHERE seq = ?", [(r["seq"],) for r in rows])
            for row in rows:
                self._drop_secrets(cur, row)
        return len(rows), next_cursor

    def retry(self, user: str, flt: EventFilter,
              override: Callable[[PublishOptions], PublishOptions] | None = None,
              count: int = BULK_MAX, cursor: str | None = None) -> tuple[list[str], str | None]:
        """Republish DLQ entries (same body and headers; ``override`` applies Upstash-* headers).

        Asked for by id, every id must exist, else nothing is retried (OAS: 404 "Some
        messages were not found in the DLQ").
        """
        now = self.db.now_ms()
        ids: list[str] = []
        with self.db.tx() as cur:
            rows, next_cursor = self._batch(cur, user, flt, cursor, count)
            if flt.dlq_ids and len(rows) < len(set(flt.dlq_ids)) and next_cursor is None:
                raise NotFound("Some messages were not found in the DLQ")
            for row in rows:
                entry = json.loads(row["data"])
                original = self.messages.secrets.unseal(cur, entry["message"])
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
                self._drop_secrets(cur, row)
        self.db.changed()
        return ids, next_cursor
