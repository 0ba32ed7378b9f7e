"""Schedules (``/v2/schedules``): cron-driven publishes, fired by the delivery loop."""

from __future__ import annotations

import base64
import json
import sqlite3

from ..cron import CronError, next_after
from ..errors import BadRequest, NotFound
from ..publish import PublishOptions, ScheduleOptions
from ..wire import shown_body, shown_headers
from .db import JSON, Database, new_id
from .messages import Messages
from .queues import Queues
from .topics import UrlGroups, is_url

__all__ = ["Schedules"]


class Schedules:
    def __init__(self, db: Database, messages: Messages, queues: Queues,
                 groups: UrlGroups) -> None:
        self.db = db
        self.messages = messages
        self.queues = queues
        self.groups = groups

    def upsert(self, user: str, destination: str, schedule: ScheduleOptions,
                        caller_ip: str | None = None) -> str:
        now = self.db.now_ms()
        schedule_id = schedule.schedule_id or new_id("scd_")
        with self.db.tx() as cur:
            if is_url(destination):
                self.groups.targets(cur, user, destination)  # validates the URL
            if schedule.queue is not None:
                self.queues.ensure(cur, user, schedule.queue, now)
            row = cur.execute("SELECT created_ms, paused FROM schedules WHERE user = ? AND id = ?",
                              (user, schedule_id)).fetchone()
            created = row["created_ms"] if row else now
            paused = bool(row["paused"]) if row else False
            data = {
                "id": schedule_id, "destination": destination, "cron": schedule.cron,
                "queue": schedule.queue, "caller_ip": caller_ip,
                "opts": self.messages.secrets.seal_opts(
                    cur, f"scd:{user}:{schedule_id}", schedule.publish.to_dict()),
                "last_ms": None, "last_states": {},
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
        self.db.changed()
        return schedule_id

    def _json(self, row: sqlite3.Row) -> JSON:
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
        if body:  # QStash omits ``body`` for a schedule without one (not ``""``)
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

    def get(self, user: str, schedule_id: str) -> JSON:
        return self._json(self.db.one(
            "SELECT * FROM schedules WHERE user = ? AND id = ?", (user, schedule_id),
            "schedule not found",
        ))

    def all(self, user: str) -> list[JSON]:
        rows = self.db.all("SELECT * FROM schedules WHERE user = ? ORDER BY created_ms", (user,))
        return [self._json(row) for row in rows]

    def delete(self, user: str, schedule_id: str) -> None:
        with self.db.tx() as cur:
            cur.execute("DELETE FROM schedules WHERE user = ? AND id = ?", (user, schedule_id))
            self.messages.secrets.drop(cur, f"scd:{user}:{schedule_id}")

    def set_paused(self, user: str, schedule_id: str, paused: bool) -> None:
        with self.db.tx() as cur:
            row = cur.execute("SELECT data FROM schedules WHERE user = ? AND id = ?",
                              (user, schedule_id)).fetchone()
            if row is None:
                return  # OAS: pause and resume answer 200, with no 404, for any id
            cron = json.loads(row["data"])["cron"]
            try:
                next_ms = None if paused else int(next_after(cron, self.db.now_ms() / 1000) * 1000)
            except CronError:
                next_ms = None
            cur.execute("UPDATE schedules SET paused = ?, next_ms = ? WHERE user = ? AND id = ?",
                        (int(paused), next_ms, user, schedule_id))
        self.db.changed()

    def fire_due(self, now_ms: int, limit: int = 256) -> int:
        """Publish one message (or one per group endpoint) per due schedule.

        A schedule that cannot fire (its URL group is gone, or anything unexpected)
        records the reason in its ``error`` and moves on to its next time: one broken
        schedule never stops delivery.
        """
        fired = 0
        with self.db.lock:  # the usual answer is "none": no write transaction for it
            if self.db.conn.execute("SELECT 1 FROM schedules WHERE next_ms <= ? LIMIT 1",
                                    (now_ms,)).fetchone() is None:
                return 0
        with self.db.tx() as cur:
            rows = cur.execute(
                "SELECT * FROM schedules WHERE next_ms <= ? ORDER BY next_ms LIMIT ?",
                (now_ms, limit),
            ).fetchall()
            for row in rows:
                self._fire(cur, row, now_ms)
                fired += 1
        return fired

    def _fire(self, cur: sqlite3.Cursor, row: sqlite3.Row, now_ms: int) -> None:
        try:
            data = json.loads(row["data"])
        except ValueError:
            cur.execute("UPDATE schedules SET next_ms = NULL WHERE user = ? AND id = ?",
                        (row["user"], row["id"]))
            return
        data["last_ms"] = row["next_ms"]
        cur.execute("SAVEPOINT fire")
        try:
            options = PublishOptions.from_dict(self.messages.secrets.unseal_opts(
                cur, f"scd:{row['user']}:{row['id']}", data["opts"]))
            published = self.messages.publish_in(
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

    def record_state(self, cur: sqlite3.Cursor, message: JSON, state: str) -> None:
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
