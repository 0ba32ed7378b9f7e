"""Delivery bookkeeping: which messages are due, claiming them for an attempt
(enforcing queue pause, flow-control parallelism and rate), and recording each
attempt's outcome (delivered, retry, dead-lettered, cancelled) with its callbacks.

Scheduling is index-driven: ``claim_due`` reads ``ORDER BY due_ms LIMIT n``
through an index, so the cost of a tick does not grow with the number of
future messages.
"""

from __future__ import annotations

import json
import logging
import sqlite3

from ..publish import PublishOptions
from ..wire import response_fields
from .db import JSON, Database
from .dlq import DeadLetters
from .events import Events
from .flow import FlowControl, FlowGate
from .messages import Messages
from .queues import Queues
from .results import AttemptResult, CallbackFactory
from .schedules import Schedules

__all__ = ["UNREADABLE", "Attempts"]

log = logging.getLogger("celery_qstash.local.emulator")

#: ``parked`` for a message whose stored data cannot be delivered (a damaged or
#: hand-edited database): claimed by nothing until a restart tries it again, so it
#: neither wedges the claim of every other message nor stays in flight forever.
UNREADABLE = "unreadable"


class Attempts:
    def __init__(self, db: Database, events: Events, queues: Queues, flow: FlowControl,
                 messages: Messages, dlq: DeadLetters, schedules: Schedules) -> None:
        self.db = db
        self.events = events
        self.queues = queues
        self.flow = flow
        self.messages = messages
        self.dlq = dlq
        self.schedules = schedules

    def recover(self) -> None:
        # An attempt interrupted by a crash is retried: at-least-once delivery.
        # So is one set aside as unreadable: a restart is the operator's "try again".
        with self.db.tx() as cur:
            cur.execute(
                "UPDATE messages SET inflight = 0, due_ms = ready_ms, parked = NULL "
                "WHERE inflight = 1 OR parked = ?", (UNREADABLE,)
            )

    def explain_due_query(self) -> str:
        """The query plan of ``claim_due`` (tests assert it uses the index)."""
        with self.db.lock:
            rows = self.db.conn.execute(
                "EXPLAIN QUERY PLAN SELECT seq FROM messages WHERE due_ms <= ? "
                "ORDER BY due_ms, seq LIMIT 10", (0,)
            ).fetchall()
        return " ".join(str(row[3]) for row in rows)

    def next_due_ms(self) -> int | None:
        """Earliest time anything (message or schedule) is due, for the background loop."""
        with self.db.lock:
            row = self.db.conn.execute("SELECT MIN(due_ms) FROM messages").fetchone()
            srow = self.db.conn.execute(
                "SELECT MIN(next_ms) FROM schedules WHERE paused = 0"
            ).fetchone()
            frow = self.db.conn.execute("SELECT MIN(wake_ms) FROM flow").fetchone()
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
        return [message for _, message in self.claim(now_ms, limit)]

    def claim(self, now_ms: int, limit: int = 256,
              until_ms: int | None = None) -> list[tuple[int, JSON]]:
        """:meth:`claim_due`, also claiming ahead: a message due by ``until_ms`` (later
        than ``now_ms``) is claimed too when nothing but time holds it (no queue, no flow
        control, not cancelled), so the delivery loop can prepare it and send it the
        moment it falls due. Returns (due time, message) pairs. A message claimed ahead
        is in flight (a restart sends it again) but logs ACTIVE only when
        :meth:`release` hands it out."""
        claimed: list[tuple[int, JSON]] = []
        horizon = now_ms if until_ms is None else max(now_ms, until_ms)
        with self.db.tx() as cur:
            self.flow.wake_rate_limited(cur, now_ms)
            self.dlq.expire(cur, now_ms)
            rows = cur.execute(
                "SELECT seq, id, data, cancel, queue, fc_key, user, due_ms FROM messages "
                "WHERE due_ms <= ? ORDER BY due_ms, seq LIMIT ?",
                (horizon, limit),
            ).fetchall()
            gates: dict[tuple[str, str], FlowGate | None] = {}
            for row in rows:
                due = row["due_ms"]
                if due > now_ms and (row["cancel"] or row["queue"] or row["fc_key"]):
                    continue  # held by more than time: claimed when it is due
                gate = None if row["cancel"] else self._gate(cur, row, gates)
                if gate is not None and gate.closed:
                    continue  # parked together with the key's other due messages
                # One row's damaged data (a hand-edited or broken database) must not
                # roll back the whole claim every tick and so stop every delivery.
                cur.execute("SAVEPOINT claim_row")
                try:
                    message = self._claim_row(cur, row, now_ms, gate, ahead=due > now_ms)
                except Exception as exc:
                    cur.execute("ROLLBACK TO claim_row")
                    self._set_aside(cur, row["seq"], row["id"], exc)
                    message = None
                cur.execute("RELEASE claim_row")
                if message is not None:
                    claimed.append((max(now_ms, due), message))
            for (user, key), gate in gates.items():
                if gate is not None and gate.rate_used_changed:
                    cur.execute(
                        "UPDATE flow SET period_start_ms = ?, rate_count = ? "
                        "WHERE user = ? AND key = ?", (gate.start, gate.used, user, key),
                    )
        return claimed

    def release(self, claimed: list[JSON], now_ms: int) -> list[JSON]:
        """Of messages claimed ahead, those to send now, logged ACTIVE at ``now_ms``: a
        message reset away or removed since is dropped, and one cancelled since is
        finished here (CANCELED), as the claim would have done had it been made now.
        One transaction for all of them."""
        released: list[JSON] = []
        with self.db.tx() as cur:
            found: dict[str, sqlite3.Row] = {}
            ids = [message["id"] for message in claimed]
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                for row in cur.execute(
                    "SELECT seq, id, cancel, data FROM messages WHERE inflight = 1 AND id IN "
                    f"({','.join('?' * len(chunk))})", chunk,
                ):
                    found[row["id"]] = row
            for message in claimed:
                row = found.get(message["id"])
                if row is None:
                    continue
                if row["cancel"]:  # logged from the stored form, as the claim does
                    self.messages.finish_cancelled(cur, row["seq"], json.loads(row["data"]),
                                                   now_ms)
                    continue
                self.events.log(cur, message, "ACTIVE", now_ms)
                released.append(message)
        self.db.changed()
        return released

    def unclaim(self, message_ids: list[str]) -> None:
        """Claimed messages that will not be attempted now (the loop stopped first): due
        again at once, as a restart would make them."""
        if not message_ids:
            return
        with self.db.tx() as cur:
            for start in range(0, len(message_ids), 500):
                chunk = message_ids[start:start + 500]
                cur.execute(
                    "UPDATE messages SET inflight = 0, due_ms = ready_ms WHERE inflight = 1 "
                    f"AND id IN ({','.join('?' * len(chunk))})", chunk,
                )
        self.db.changed()

    def _gate(self, cur: sqlite3.Cursor, row: sqlite3.Row,
              gates: dict[tuple[str, str], FlowGate | None]) -> FlowGate | None:
        if not row["fc_key"]:
            return None
        flow_key = (row["user"], row["fc_key"])
        if flow_key not in gates:
            gates[flow_key] = self.flow.gate(cur, row["user"], row["fc_key"])
        return gates[flow_key]

    def _claim_row(self, cur: sqlite3.Cursor, row: sqlite3.Row, now_ms: int,
                   gate: FlowGate | None, ahead: bool = False) -> JSON | None:
        """The message of ``row`` claimed for an attempt, or None (cancelled, parked)."""
        seq, user = row["seq"], row["user"]
        stored = json.loads(row["data"])
        if row["cancel"]:
            self.messages.finish_cancelled(cur, seq, stored, now_ms)
            return None
        # Read everything an attempt needs before the flow gate counts it.
        message = self.messages.secrets.unseal(cur, stored)
        PublishOptions.from_dict(message["opts"])
        int(message["retried"])
        if row["queue"] and self.queues.paused(cur, user, row["queue"]):
            cur.execute(
                "UPDATE messages SET parked = 'queue', due_ms = NULL WHERE seq = ?", (seq,)
            )
            return None
        if gate is not None and not gate.admit(now_ms):
            self.flow.park(cur, user, gate, now_ms)
            return None
        cur.execute("UPDATE messages SET inflight = 1, due_ms = NULL WHERE seq = ?", (seq,))
        if not ahead:  # claimed ahead: ACTIVE is logged when it is released (release())
            self.events.log(cur, message, "ACTIVE", now_ms)
        return message

    @staticmethod
    def _set_aside(cur: sqlite3.Cursor, seq: int, message_id: str, exc: Exception) -> None:
        cur.execute(
            "UPDATE messages SET inflight = 0, due_ms = NULL, parked = ? WHERE seq = ?",
            (UNREADABLE, seq),
        )
        log.error("message %s: its stored data cannot be delivered (%s); set aside until "
                  "the emulator restarts", message_id, type(exc).__name__)

    def set_aside(self, message_id: str, exc: Exception) -> None:
        """An attempt whose outcome could not be recorded: out of flight, not retried
        until a restart (which tries it again), instead of in flight forever."""
        with self.db.tx() as cur:
            row = cur.execute("SELECT seq FROM messages WHERE id = ?", (message_id,)).fetchone()
            if row is not None:
                self._set_aside(cur, row["seq"], message_id, exc)

    def finish_attempt(self, message: JSON, result: AttemptResult, now_ms: int,
                       callbacks: CallbackFactory | None = None) -> str:
        """Record the outcome of an attempt; returns DELIVERED, RETRY, FAILED or CANCELED."""
        with self.db.tx() as cur:
            state = self._finish(cur, message, result, now_ms, callbacks)
        self.db.changed()
        return state

    def finish_many(self, outcomes: list[tuple[JSON, AttemptResult, int]],
                    callbacks: CallbackFactory | None = None) -> list[str]:
        """Record many attempts' outcomes in one transaction (one commit: group commit).

        Each outcome is its own savepoint: one whose data cannot be recorded (a damaged
        database) is set aside alone (``SET_ASIDE``), the others are recorded.
        """
        states: list[str] = []
        with self.db.tx() as cur:
            for message, result, now_ms in outcomes:
                cur.execute("SAVEPOINT finish_one")
                try:
                    state = self._finish(cur, message, result, now_ms, callbacks)
                except Exception as exc:
                    cur.execute("ROLLBACK TO finish_one")
                    row = cur.execute("SELECT seq FROM messages WHERE id = ?",
                                      (message["id"],)).fetchone()
                    if row is not None:
                        self._set_aside(cur, row["seq"], message["id"], exc)
                    state = "SET_ASIDE"
                cur.execute("RELEASE finish_one")
                states.append(state)
        self.db.changed()
        return states

    def _finish(self, cur: sqlite3.Cursor, message: JSON, result: AttemptResult, now_ms: int,
                callbacks: CallbackFactory | None) -> str:
        attempted = dict(message)  # callbacks report the attempt's own retry count
        message = dict(message)
        row = cur.execute(
            "SELECT seq, cancel FROM messages WHERE id = ?", (message["id"],)
        ).fetchone()
        if row is None:  # reset() while the attempt was running
            return "CANCELED"
        seq = row["seq"]
        dlq_id: str | None = None
        if result.ok:
            state = "DELIVERED"
            self.events.log(cur, message, state, now_ms, response_fields(
                result.status, result.headers, result.body, None))
            self.messages.remove(cur, seq, message)
        else:
            self.events.log(cur, message, "ERROR", now_ms, response_fields(
                result.status, result.headers, result.body, result.error))
            retries = int(message["opts"].get("retries", 0))
            if row["cancel"]:
                state = "CANCELED"
                self.messages.finish_cancelled(cur, seq, message, now_ms)
            elif result.non_retryable or message["retried"] >= retries:
                state = "FAILED"
                dlq_id = self.dlq.add(cur, message, result, now_ms)
                extra = response_fields(result.status, result.headers, result.body,
                                        result.error)
                extra["dlqId"] = dlq_id
                self.events.log(cur, message, state, now_ms, extra)
                self.messages.remove(cur, seq, message, keep_secrets=True)
            else:
                state = "RETRY"
                wake = now_ms + max(0, int(result.retry_delay_ms))
                message["retried"] += 1
                self.events.log(cur, message, state, now_ms, {"nextDeliveryTime": wake})
                stored = json.dumps(self.messages.secrets.seal(cur, message))
                cur.execute(
                    "UPDATE messages SET inflight = 0, due_ms = ?, ready_ms = ?, data = ? "
                    "WHERE seq = ?", (wake, wake, stored, seq),
                )
                # The slot is free while the retry waits: let the next message in.
                fc = message["opts"].get("flow_control")
                if fc:
                    self.flow.refill(cur, message["user"], fc["key"])
        if state in ("DELIVERED", "FAILED"):
            self.schedules.record_state(cur, message, state)
        if callbacks is not None and message.get("kind") == "message":
            for spec in callbacks(attempted, result, state, dlq_id):
                self.messages.publish_in(
                    cur, message["user"], spec.url, spec.options, queue=None,
                    schedule_id=None, caller_ip=message.get("caller_ip"),
                    kind=spec.kind, now_ms=now_ms)
        return state
