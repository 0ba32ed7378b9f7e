"""The emulator database's schema and its migrations: the one place either is written.

``SCHEMA`` is idempotent (``CREATE ... IF NOT EXISTS``) so it runs on every open;
``migrate`` then brings a database written by an older emulator up to date, one
step per change, so an existing ``.qstash/emulator.sqlite3`` keeps opening.
"""

from __future__ import annotations

import sqlite3

__all__ = ["SCHEMA", "TABLES", "migrate"]

SCHEMA = """
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
-- Partial: only a queued or flow-controlled message is in these indexes, so every other
-- publish skips their upkeep. Each query on them names ``queue = ?`` or ``fc_key = ?``,
-- which lets SQLite use an index whose rows all have that column set.
CREATE INDEX IF NOT EXISTS messages_in_queue ON messages(user, queue, parked, seq)
    WHERE queue IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_flow_waiting ON messages(user, fc_key, parked, ready_ms, seq)
    WHERE fc_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_flow_active ON messages(user, fc_key, inflight)
    WHERE fc_key IS NOT NULL;
DROP INDEX IF EXISTS messages_flow;
DROP INDEX IF EXISTS messages_queue;
DROP INDEX IF EXISTS messages_flow_wait;
DROP INDEX IF EXISTS messages_flow_inflight;
-- No index by user alone: every lookup names an id, a due time, a queue or a flow key
-- (each indexed above); one by user served nothing and cost every publish a page.
DROP INDEX IF EXISTS messages_user;
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
    caller_ip TEXT,
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
CREATE INDEX IF NOT EXISTS dlq_created ON dlq(created_ms);
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
    headers TEXT NOT NULL DEFAULT '{}',
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
CREATE TABLE IF NOT EXISTS secrets (key TEXT PRIMARY KEY, data TEXT NOT NULL);
"""

TABLES = ("messages", "events", "event_labels", "dlq", "queues", "topics", "flow",
          "schedules", "signing_keys", "dedup", "meta", "secrets")


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {str(row[1]) for row in db.execute(f"PRAGMA table_info({table})")}


def migrate(db: sqlite3.Connection) -> None:
    """Bring a database created by an older emulator up to the current schema."""
    if "wake_ms" not in _columns(db, "flow"):  # before flow-control rate wake-ups
        db.execute("ALTER TABLE flow ADD COLUMN wake_ms INTEGER")
    db.execute("CREATE INDEX IF NOT EXISTS flow_wake ON flow(wake_ms)")
    if "headers" not in _columns(db, "topics"):  # before PATCH /v2/topics/{name}
        db.execute("ALTER TABLE topics ADD COLUMN headers TEXT NOT NULL DEFAULT '{}'")
    if "caller_ip" not in _columns(db, "events"):  # before the logs' callerIp filter
        db.execute("ALTER TABLE events ADD COLUMN caller_ip TEXT")
