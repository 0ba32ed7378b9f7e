"""Messages: publishing (dedup, URL-group fan-out, queue and flow bookkeeping),
reading one back, bulk cancel, and removal once an attempt is final.

A message waiting to be delivered has ``due_ms`` set; one waiting on something
other than time (a queue slot, a flow-control slot) is *parked* (``due_ms``
NULL) and unparked by the event that frees it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from celery_qstash.redaction import is_secret_name

from ..publish import FlowControl as FlowControlOptions
from ..publish import PublishOptions, canonical, content_dedup_id
from .db import JSON, Database, json_text, new_id
from .events import EventFilter, Events
from .flow import FlowControl
from .queues import Queues
from .secrets import Secrets
from .topics import UrlGroups

__all__ = ["DEDUP_WINDOW_MS", "Messages", "Published"]

DEDUP_WINDOW_MS = 10 * 60 * 1000

#: (user, flow key) -> the (parallelism, rate, period) last written in a transaction.
FlowLimits = dict[tuple[str, str], tuple[int | None, int | None, int]]


@dataclass
class Published:
    message_id: str
    url: str
    deduplicated: bool = False


class Messages:
    def __init__(self, db: Database, events: Events, queues: Queues, flow: FlowControl,
                 groups: UrlGroups, secrets: Secrets) -> None:
        self.db = db
        self.secrets = secrets
        self.events = events
        self.queues = queues
        self.flow = flow
        self.groups = groups
        self._swept_ms = -1_000_000  # when expired dedup ids were last deleted

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
        now = self.db.now_ms() if now_ms is None else now_ms
        with self.db.tx() as cur:
            result = self.publish_in(cur, user, destination, options, queue=queue,
                                   schedule_id=schedule_id, caller_ip=caller_ip, kind=kind,
                                   now_ms=now)
        self.db.changed()
        return result

    def publish_many(
        self,
        user: str,
        items: Sequence[tuple[str, PublishOptions, str | None]],
        *,
        caller_ip: str | None = None,
    ) -> list[list[Published] | Exception]:
        """A batch's (destination, options, queue) items in one transaction, one commit.

        Each item is answered as if it were its own publish: an item that fails leaves
        nothing behind and its error takes its place; the others are stored. The usual
        batch has no failing item, so all of them are first written with no savepoint
        (a SAVEPOINT/RELEASE pair per item cost about a third of a batch's SQLite time);
        only when one raises is that transaction rolled back and the batch written
        again with a savepoint per item.
        """
        now = self.db.now_ms()
        # The limits written for each flow key in this transaction (all of a task's messages
        # carry the same ones): a message with the same limits need not write them again.
        flow_seen: FlowLimits = {}
        try:
            with self.db.tx() as cur:
                out: list[list[Published] | Exception] = [
                    self.publish_in(cur, user, destination, options, queue=queue,
                                    schedule_id=None, caller_ip=caller_ip, kind="message",
                                    now_ms=now, flow_seen=flow_seen)
                    for destination, options, queue in items
                ]
        except Exception:  # some item failed: nothing was committed, redo item by item
            out = self._publish_each(user, items, caller_ip, now)
        self.db.changed()
        return out

    def _publish_each(
        self, user: str, items: Sequence[tuple[str, PublishOptions, str | None]],
        caller_ip: str | None, now: int,
    ) -> list[list[Published] | Exception]:
        out: list[list[Published] | Exception] = []
        with self.db.tx() as cur:
            for destination, options, queue in items:
                cur.execute("SAVEPOINT item")
                try:
                    out.append(self.publish_in(cur, user, destination, options, queue=queue,
                                               schedule_id=None, caller_ip=caller_ip,
                                               kind="message", now_ms=now))
                except Exception as exc:  # the item's own answer, never the whole batch's
                    cur.execute("ROLLBACK TO item")
                    out.append(exc)
                cur.execute("RELEASE item")
        return out

    def publish_in(self, cur: sqlite3.Cursor, user: str, destination: str,
                 options: PublishOptions, *, queue: str | None, schedule_id: str | None,
                 caller_ip: str | None, kind: str, now_ms: int,
                 flow_seen: FlowLimits | None = None) -> list[Published]:
        if queue is not None:
            self.queues.ensure(cur, user, queue, now_ms)
        if now_ms - self._swept_ms >= 1000 or now_ms < self._swept_ms:
            # Expired dedup ids are swept at most once a second (the lookup below ignores
            # them anyway), not once per message: a batch of 100 sweeps once.
            cur.execute("DELETE FROM dedup WHERE expires_ms <= ?", (now_ms,))
            self._swept_ms = now_ms
        results: list[Published] = []
        for url, topic, endpoint in self.groups.targets(cur, user, destination):
            dedup_key = None
            if options.dedup_id:
                dedup_key = "id:" + options.dedup_id + ("|" + url if topic else "")
            elif options.content_dedup:
                dedup_key = content_dedup_id(url, options)
            if dedup_key is not None:
                row = cur.execute(
                    "SELECT message_id FROM dedup WHERE user = ? AND dedup_id = ? "
                    "AND expires_ms > ?",
                    (user, dedup_key, now_ms),
                ).fetchone()
                if row is not None:
                    results.append(Published(str(row["message_id"]), url, deduplicated=True))
                    continue
            message_id = new_id("msg_")
            not_before = options.not_before_ms
            if not_before is None:
                not_before = now_ms + options.delay_ms
            opts = options.to_dict()
            logged: PublishOptions | None = options
            if topic is not None:  # the group's default headers, under the message's own
                for name, value in self.groups.default_headers(cur, user, topic).items():
                    opts["headers"].setdefault(canonical(name), [value])
                    if is_secret_name(name) and name.lower() not in opts["redact"]["headers"]:
                        # A credential set on the group is the message's secret too.
                        opts["redact"]["headers"].append(name.lower())
                logged = None  # the log entry reads the headers from ``opts``
            message: JSON = {
                "id": message_id, "user": user, "url": url, "topic": topic,
                "endpoint": endpoint, "queue": queue, "schedule_id": schedule_id,
                "caller_ip": caller_ip, "created_ms": now_ms, "not_before_ms": not_before,
                "retried": 0, "kind": kind, "opts": opts,
            }
            self._insert(cur, message, options.flow_control, ready_ms=not_before,
                         now_ms=now_ms, options=logged, flow_seen=flow_seen)
            if dedup_key is not None:
                cur.execute(
                    "INSERT OR REPLACE INTO dedup VALUES (?, ?, ?, ?)",
                    (user, dedup_key, message_id, now_ms + DEDUP_WINDOW_MS),
                )
            results.append(Published(message_id, url))
        return results

    def _insert(self, cur: sqlite3.Cursor, message: JSON, fc: FlowControlOptions | None,
                ready_ms: int, now_ms: int, options: PublishOptions | None = None,
                flow_seen: FlowLimits | None = None) -> None:
        queue = message.get("queue")
        parked = "queue" if queue else None
        cur.execute(
            "INSERT INTO messages (id, user, due_ms, ready_ms, parked, queue, fc_key, "
            "created_ms, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (message["id"], message["user"], None if parked else ready_ms, ready_ms, parked,
             queue, fc.key if fc else None, message["created_ms"],
             json_text(self.secrets.seal(cur, message))),
        )
        if fc is not None:
            key, limits = (message["user"], fc.key), (fc.parallelism, fc.rate, fc.period_s)
            if flow_seen is None or flow_seen.get(key) != limits:
                self.flow.touch(cur, message["user"], fc.key, fc.parallelism, fc.rate,
                                fc.period_s)
                if flow_seen is not None:
                    flow_seen[key] = limits
        self.events.log(cur, message, "CREATED", now_ms, options=options)
        if queue:
            self.queues.refill(cur, message["user"], queue)

    def get(self, user: str, message_id: str) -> JSON:
        row = self.db.one(
            "SELECT data FROM messages WHERE user = ? AND id = ? AND cancel = 0",
            (user, message_id), "message not found",
        )
        data: JSON = json.loads(row["data"])
        return data

    def pending_count(self) -> int:
        with self.db.lock:
            return int(self.db.conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0])

    def cancel(self, user: str, message_ids: Sequence[str] | None = None,
               flt: EventFilter | None = None, limit: int | None = None) -> int:
        """Record CANCEL_REQUESTED now; the next tick logs CANCELED and removes them.

        ``message_ids`` None and an empty filter cancel everything of ``user``; ``limit``
        cancels at most that many (the oldest first).
        """
        now = self.db.now_ms()
        cancelled = 0
        with self.db.tx() as cur:
            sql = "SELECT seq, id, inflight, data FROM messages WHERE user = ? AND cancel = 0"
            params: list[Any] = [user]
            if message_ids is not None:
                if not message_ids:
                    return 0
                sql += f" AND id IN ({','.join('?' * len(message_ids))})"
                params += list(message_ids)
            rows = cur.execute(sql + " ORDER BY seq", params).fetchall()
            for row in rows:
                if limit is not None and cancelled >= limit:
                    break
                message = json.loads(row["data"])
                if flt is not None and not _matches(message, flt):
                    continue
                self.events.log(cur, message, "CANCEL_REQUESTED", now)
                if row["inflight"]:
                    cur.execute("UPDATE messages SET cancel = 1 WHERE seq = ?", (row["seq"],))
                else:
                    cur.execute(
                        "UPDATE messages SET cancel = 1, parked = NULL, due_ms = ? WHERE seq = ?",
                        (now, row["seq"]),
                    )
                cancelled += 1
        self.db.changed()
        return cancelled

    def finish_cancelled(self, cur: sqlite3.Cursor, seq: int, message: JSON,
                          now_ms: int) -> None:
        self.events.log(cur, message, "CANCELED", now_ms)
        self.remove(cur, seq, message)

    def remove(self, cur: sqlite3.Cursor, seq: int, message: JSON,
               keep_secrets: bool = False) -> None:
        """Delete a finished message (its secrets too, unless its DLQ entry needs them)."""
        cur.execute("DELETE FROM messages WHERE seq = ?", (seq,))
        if not keep_secrets:
            self.secrets.drop(cur, f"msg:{message['id']}")
        if message.get("queue"):
            self.queues.refill(cur, message["user"], message["queue"])
        fc = message["opts"].get("flow_control")
        if fc:
            self.flow.refill(cur, message["user"], fc["key"])

    def patch(self, cur: sqlite3.Cursor, message_id: str, **fields: Any) -> None:
        row = cur.execute("SELECT data FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            return
        data = json.loads(row["data"])
        data.update(fields)
        cur.execute("UPDATE messages SET data = ? WHERE id = ?", (json.dumps(data), message_id))


def _matches(message: JSON, flt: EventFilter) -> bool:
    """Bulk-cancel filters: OR within a filter, AND across filters."""
    parts = urlsplit(message["url"])
    opts = message["opts"]
    fields: list[tuple[list[Any], Any]] = [
        (flt.urls, message["url"]),
        (flt.hosts, parts.hostname),
        (flt.paths, parts.path),
        (flt.topics, message.get("topic")),
        (flt.queues, message.get("queue")),
        (flt.schedule_ids, message.get("schedule_id")),
        (flt.caller_ips, message.get("caller_ip")),
        (flt.fc_keys, (opts.get("flow_control") or {}).get("key")),
    ]
    if any(values and value not in values for values, value in fields):
        return False
    if flt.labels and not set(flt.labels) & set(opts.get("labels") or []):
        return False
    if flt.from_ms is not None and message["created_ms"] < flt.from_ms:
        return False
    return flt.to_ms is None or message["created_ms"] <= flt.to_ms
