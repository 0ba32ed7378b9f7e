"""Flow control (``Upstash-Flow-Control-Key``, ``/v2/flowControl``): per-key
parallelism and rate, pause and pin.

A message whose key is full is *parked* (``flow``, ``flowpause`` or ``rate``) and
unparked by the event that frees it (a finished attempt, the next rate period),
never rescanned: see :meth:`FlowControl.gate` and :meth:`FlowControl.park`.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from ..errors import NotFound
from .db import JSON, Database

__all__ = ["GLOBAL_PARALLELISM_MAX", "FlowControl", "FlowGate", "effective_limits"]

GLOBAL_PARALLELISM_MAX = 1000


@dataclass
class FlowGate:
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


def effective_limits(flow: sqlite3.Row) -> tuple[int | None, int | None, int]:
    parallelism = flow["pin_parallelism"] if flow["pin_parallelism"] is not None \
        else flow["parallelism"]
    if flow["pin_rate"] is not None:
        return parallelism, flow["pin_rate"], flow["pin_period_s"] or flow["period_s"] or 1
    return parallelism, flow["rate"], flow["period_s"] or 1


class FlowControl:
    def __init__(self, db: Database) -> None:
        self.db = db

    def gate(self, cur: sqlite3.Cursor, user: str, key: str) -> FlowGate | None:
        """The admission state of one flow key, read once per claim."""
        flow = cur.execute("SELECT * FROM flow WHERE user = ? AND key = ?", (user, key)).fetchone()
        if flow is None:
            return None
        parallelism, rate, period_s = effective_limits(flow)
        inflight = 0
        if parallelism is not None:
            inflight = int(cur.execute(
                "SELECT COUNT(*) FROM messages WHERE user = ? AND fc_key = ? AND inflight = 1",
                (user, key),
            ).fetchone()[0])
        return FlowGate(key=key, paused=bool(flow["paused"]), parallelism=parallelism,
                         rate=rate, period_ms=period_s * 1000, inflight=inflight,
                         start=int(flow["period_start_ms"]), used=int(flow["rate_count"]))

    def park(self, cur: sqlite3.Cursor, user: str, gate: FlowGate, now_ms: int) -> None:
        """Park every due message of a closed key at once (see :meth:`Attempts.claim_due`)."""
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

    def wake_rate_limited(self, cur: sqlite3.Cursor, now_ms: int) -> None:
        """A rate period ended: unpark the next ``rate`` waiting messages of each such key."""
        for flow in cur.execute("SELECT * FROM flow WHERE wake_ms <= ?", (now_ms,)).fetchall():
            user, key = flow["user"], flow["key"]
            _, rate, period_s = effective_limits(flow)
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

    def touch(self, cur: sqlite3.Cursor, user: str, key: str, parallelism: int | None,
                    rate: int | None, period_s: int) -> None:
        # The latest publish defines the key's limits (pins override them). Limits that
        # are already these are not written again: no page of ``flow`` is dirtied, and
        # each page a publish dirties is one more to write at its commit.
        cur.execute(
            "INSERT INTO flow (user, key, parallelism, rate, period_s) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(user, key) DO UPDATE SET parallelism = excluded.parallelism, "
            "rate = excluded.rate, period_s = excluded.period_s "
            "WHERE parallelism IS NOT excluded.parallelism OR rate IS NOT excluded.rate "
            "OR period_s IS NOT excluded.period_s",
            (user, key, parallelism, rate, period_s),
        )

    def refill(self, cur: sqlite3.Cursor, user: str, key: str,
                     everything: bool = False) -> None:
        flow = cur.execute("SELECT * FROM flow WHERE user = ? AND key = ?", (user, key)).fetchone()
        if flow is None or flow["paused"]:
            return
        states = "('flow', 'flowpause', 'rate')" if everything else "('flow')"
        parallelism, _, _ = effective_limits(flow)
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

    def _json(self, cur: sqlite3.Cursor, flow: sqlite3.Row, now_ms: int) -> JSON:
        parallelism, rate, period_s = effective_limits(flow)
        user, key = flow["user"], flow["key"]
        # OAS FlowControlKey.waitListSize: "messages waiting due to flow control
        # configuration": parked on the key, not a delayed message waiting for its time.
        inflight, waiting = cur.execute(
            "SELECT COALESCE(SUM(inflight), 0), "
            "COALESCE(SUM(parked IN ('flow', 'flowpause', 'rate')), 0) FROM messages "
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
            # OAS: "Unix timestamp (seconds) when the current rate period started".
            "ratePeriodStart": flow["period_start_ms"] // 1000 if in_period else 0,
            "isPaused": bool(flow["paused"]),
            "isPinnedParallelism": flow["pin_parallelism"] is not None,
            "isPinnedRate": flow["pin_rate"] is not None,
        }

    def get(self, user: str, key: str) -> JSON:
        with self.db.lock:
            cur = self.db.conn.cursor()
            flow = cur.execute(
                "SELECT * FROM flow WHERE user = ? AND key = ?", (user, key)
            ).fetchone()
            if flow is None:
                raise NotFound("flow control key not found")
            return self._json(cur, flow, self.db.now_ms())

    def all(self, user: str, search: str | None = None) -> list[JSON]:
        with self.db.lock:
            cur = self.db.conn.cursor()
            rows = cur.execute("SELECT * FROM flow WHERE user = ? ORDER BY key", (user,)).fetchall()
            now = self.db.now_ms()
            return [self._json(cur, row, now) for row in rows
                    if not search or search.lower() in row["key"].lower()]

    def update(self, user: str, key: str, action: str, *, parallelism: int | None = None,
                    rate: int | None = None, period_s: int | None = None,
                    unpin_parallelism: bool = False, unpin_rate: bool = False) -> None:
        """pause / resume / pin / unpin / resetRate / reset one flow-control key."""
        with self.db.tx() as cur:
            cur.execute("INSERT OR IGNORE INTO flow (user, key) VALUES (?, ?)", (user, key))
            where = (user, key)
            if action in ("pause", "resume"):
                cur.execute("UPDATE flow SET paused = ? WHERE user = ? AND key = ?",
                            (int(action == "pause"), *where))
            elif action == "pin":
                # OAS: "Pinning a configuration resets the current state (rate count and
                # period) of the flow-control key."
                cur.execute("UPDATE flow SET rate_count = 0, period_start_ms = 0 "
                            "WHERE user = ? AND key = ?", where)
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
            self.refill(cur, user, key, everything=True)
        self.db.changed()

    def global_parallelism(self, user: str) -> JSON:
        with self.db.lock:
            count = self.db.conn.execute(
                "SELECT COUNT(*) FROM messages WHERE user = ? AND inflight = 1", (user,)
            ).fetchone()[0]
        return {"parallelismMax": GLOBAL_PARALLELISM_MAX, "parallelismCount": int(count)}
