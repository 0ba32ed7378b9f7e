"""Queues (``/v2/queues``): FIFO order and per-queue parallelism.

A message published to a queue is *parked* (``parked = 'queue'``) until the queue
has a free slot; :meth:`Queues.refill` unparks the oldest ones when a slot frees.
"""

from __future__ import annotations

import json
import re
import sqlite3

from ..errors import BadRequest, NotFound
from ..publish import MAX_PARALLELISM
from .db import JSON, Database
from .events import Events
from .secrets import Secrets

__all__ = ["NAME", "Queues"]

NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


class Queues:
    def __init__(self, db: Database, events: Events, secrets: Secrets) -> None:
        self.db = db
        self.events = events
        self.secrets = secrets

    def ensure(self, cur: sqlite3.Cursor, user: str, name: str, now_ms: int) -> None:
        if not NAME.match(name):
            raise BadRequest(
                "invalid queue name: only alphanumerics, '-', '.' and '_' are allowed"
            )
        cur.execute(
            "INSERT OR IGNORE INTO queues (user, name, parallelism, paused, created_ms, "
            "updated_ms) VALUES (?, ?, 1, 0, ?, ?)", (user, name, now_ms, now_ms),
        )

    def paused(self, cur: sqlite3.Cursor, user: str, name: str) -> bool:
        row = cur.execute(
            "SELECT paused FROM queues WHERE user = ? AND name = ?", (user, name)
        ).fetchone()
        return bool(row and row["paused"])

    def refill(self, cur: sqlite3.Cursor, user: str, name: str) -> None:
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

    def upsert(self, user: str, name: str, parallelism: int, paused: bool) -> None:
        if not 1 <= parallelism <= MAX_PARALLELISM:
            raise BadRequest(f"parallelism must be between 1 and {MAX_PARALLELISM}")
        now = self.db.now_ms()
        with self.db.tx() as cur:
            self.ensure(cur, user, name, now)
            cur.execute(
                "UPDATE queues SET parallelism = ?, paused = ?, updated_ms = ? "
                "WHERE user = ? AND name = ?", (parallelism, int(paused), now, user, name),
            )
            self.refill(cur, user, name)
        self.db.changed()

    def _json(self, cur: sqlite3.Cursor, row: sqlite3.Row) -> JSON:
        lag = cur.execute(
            "SELECT COUNT(*) FROM messages WHERE user = ? AND queue = ? AND inflight = 0",
            (row["user"], row["name"]),
        ).fetchone()[0]
        return {
            "name": row["name"], "parallelism": row["parallelism"],
            "createdAt": row["created_ms"], "updatedAt": row["updated_ms"],
            "lag": lag, "paused": bool(row["paused"]),
        }

    def get(self, user: str, name: str) -> JSON:
        with self.db.lock:
            cur = self.db.conn.cursor()
            row = cur.execute(
                "SELECT * FROM queues WHERE user = ? AND name = ?", (user, name)
            ).fetchone()
            if row is None:
                raise NotFound("queue not found")
            return self._json(cur, row)

    def all(self, user: str) -> list[JSON]:
        with self.db.lock:
            cur = self.db.conn.cursor()
            rows = cur.execute("SELECT * FROM queues WHERE user = ? ORDER BY name", (user,))
            return [self._json(cur, row) for row in rows.fetchall()]

    def delete(self, user: str, name: str) -> None:
        """Drop the queue; its waiting messages are cancelled (logged CANCELED)."""
        now = self.db.now_ms()
        with self.db.tx() as cur:
            # An unknown name is a 200, as the OAS lists for delete, pause and resume.
            cur.execute("DELETE FROM queues WHERE user = ? AND name = ?", (user, name))
            for row in cur.execute(
                "SELECT seq, data FROM messages WHERE user = ? AND queue = ? AND inflight = 0",
                (user, name),
            ).fetchall():
                message = json.loads(row["data"])
                self.events.log(cur, message, "CANCELED", now)
                cur.execute("DELETE FROM messages WHERE seq = ?", (row["seq"],))
                self.secrets.drop(cur, f"msg:{message['id']}")

    def set_paused(self, user: str, name: str, paused: bool) -> None:
        with self.db.tx() as cur:
            cur.execute(
                "UPDATE queues SET paused = ?, updated_ms = ? WHERE user = ? AND name = ?",
                (int(paused), self.db.now_ms(), user, name),
            )
            self.refill(cur, user, name)
        self.db.changed()
