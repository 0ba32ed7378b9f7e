-- The emulator database schema as the release before issue 9 created it (migration tests).
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
CREATE INDEX IF NOT EXISTS messages_queue ON messages(user, queue, parked, seq);
CREATE INDEX IF NOT EXISTS messages_flow_wait ON messages(user, fc_key, parked, ready_ms, seq);
CREATE INDEX IF NOT EXISTS messages_flow_inflight ON messages(user, fc_key, inflight);
DROP INDEX IF EXISTS messages_flow;
CREATE INDEX IF NOT EXISTS messages_user ON messages(user, created_ms);
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
