"""State of the AutoSend sandbox, with no HTTP in it (``api.py`` does the wire).

What is kept, and where:

- captured emails, idempotency records and request counters: SQLite, so a
  sandbox restarted on the same ``data_dir`` still shows its inbox and still
  replays an idempotent request. ``data_dir=None`` is an in-memory database.
- rate-limit windows and chaos rules: memory. They describe the running process
  (a restart of the real service forgets its counters too), and keeping them
  out of the database keeps the hot path free of writes.

All time comes from the injected :class:`~celery_qstash.clock.Clock`.
A message is a JSON-ready ``dict`` (the shape ``GET /api/v1/messages`` returns), so
the page and the JSON API print the same thing the store saved.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ...clock import Clock
from ..files import owner_only_db

__all__ = [
    "DB_FILENAME",
    "IDEMPOTENCY_TTL",
    "REJECTIONS_KEPT",
    "ChaosQueue",
    "ChaosRule",
    "IdempotencyRecord",
    "Message",
    "RateDecision",
    "RateLimiter",
    "SandboxStore",
]

Message = dict[str, Any]

DB_FILENAME = "sandbox.sqlite3"
IDEMPOTENCY_TTL = 24 * 60 * 60.0  # AutoSend: "retry ... within 24 hours"
REJECTIONS_KEPT = 1000  # refused requests remembered for the Rejected view

_SCHEMA = """
CREATE TABLE IF NOT EXISTS emails (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order; FakeClock times can tie
    id         TEXT NOT NULL UNIQUE,
    batch_id   TEXT,
    created_at REAL NOT NULL,
    recipients TEXT NOT NULL,  -- lower-cased to/cc/bcc addresses, one a line, for ?to=
    subjects   TEXT NOT NULL,  -- raw and rendered subject, for ?subject=
    data       TEXT NOT NULL   -- the message as JSON
);
CREATE INDEX IF NOT EXISTS emails_batch ON emails (batch_id);
CREATE TABLE IF NOT EXISTS idempotency (
    key_fp       TEXT NOT NULL,  -- fingerprint of the API key: idempotency is per key
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status       INTEGER NOT NULL,
    response     TEXT NOT NULL,
    created_at   REAL NOT NULL,
    PRIMARY KEY (key_fp, key)
);
CREATE TABLE IF NOT EXISTS rejections (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    data       TEXT NOT NULL   -- {status, kind, reason, endpoint, to, subject, idempotencyKey}
);
CREATE TABLE IF NOT EXISTS webhooks (  -- AutoSend's events for each email (webhooks.py)
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id TEXT NOT NULL UNIQUE,   -- X-Webhook-Delivery-Id, the same on every retry
    email_id    TEXT NOT NULL,
    event       TEXT NOT NULL,
    body        TEXT NOT NULL,          -- the signed JSON, byte for byte on every attempt
    due_at      REAL NOT NULL,          -- the next attempt
    state       TEXT NOT NULL,          -- pending, delivered, failed, recorded (no URL)
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_status INTEGER,
    last_error  TEXT,
    updated_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS webhooks_due ON webhooks (state, due_at);
CREATE INDEX IF NOT EXISTS webhooks_email ON webhooks (email_id);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    n    INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class IdempotencyRecord:
    """The first successful response given for one (API key, Idempotency-Key)."""

    request_hash: str
    status: int
    response: Any
    created_at: float


@dataclass(frozen=True)
class RateDecision:
    """One request seen by the limiter.

    ``limit``/``remaining``/``reset`` describe the longest window (the per-minute
    one by default) and become the ``X-RateLimit-*`` headers; ``retry_after`` is
    the wait, in whole seconds, imposed by whichever window refused the request.
    """

    allowed: bool
    limit: int
    remaining: int
    reset: int  # epoch seconds at which the longest window frees a slot
    retry_after: int  # 0 when allowed


class RateLimiter:
    """Sliding-window-log limits per API-key fingerprint (e.g. 2 per 1 s and 50 per 60 s).

    A sliding window (not fixed buckets) because it never admits a burst of
    2 x limit across a bucket boundary, which is the strictest reading of
    "2 requests per second". Only admitted requests enter the log, so a client
    that keeps retrying while limited is not locked out for longer.
    """

    def __init__(self, clock: Clock, limits: Sequence[tuple[int, float]]) -> None:
        self._clock = clock
        # Zero or None disables a window; the longest window comes last.
        self._limits = sorted(((n, w) for n, w in limits if n and w), key=lambda lw: lw[1])
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self._limits)

    def hit(self, key_fp: str, *, record: bool = True) -> RateDecision | None:
        """Count one request for ``key_fp``; ``None`` when no limit is configured.

        ``record=False`` only reports (headers for a response the limiter did not gate).
        """
        if not self._limits:
            return None
        with self._lock:
            now = self._clock.now()
            hits = self._hits.setdefault(key_fp, deque())
            longest = self._limits[-1][1]
            while hits and hits[0] <= now - longest:
                hits.popleft()
            retry_after = 0.0
            for limit, window in self._limits:
                inside = [t for t in hits if t > now - window]
                if len(inside) >= limit:
                    # The request fits once enough of the oldest entries have aged out.
                    frees_at = inside[len(inside) - limit] + window
                    retry_after = max(retry_after, frees_at - now)
            allowed = retry_after == 0.0
            if allowed and record:
                hits.append(now)
            limit, window = self._limits[-1]
            inside = [t for t in hits if t > now - window]
            reset = inside[0] + window if inside else now + window
            return RateDecision(
                allowed=allowed,
                limit=limit,
                remaining=max(0, limit - len(inside)),
                reset=_ceil(reset),
                retry_after=0 if allowed else max(1, _ceil(retry_after)),
            )

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()


def _ceil(seconds: float) -> int:
    # Whole seconds, rounded up, ignoring sub-millisecond float noise (30.0000002 s is 30).
    return math.ceil(round(seconds, 3))


@dataclass
class ChaosRule:
    """Make the next ``remaining`` mail requests fail with ``status`` after ``delay_ms``.

    ``status=None`` only delays: the request is then handled normally (a slow,
    not a failing, AutoSend). ``body`` replaces the default error JSON;
    ``retry_after`` adds ``retryAfter`` and a ``Retry-After`` header.
    """

    remaining: int
    status: int | None = 500
    delay_ms: int = 0
    body: Any = None
    retry_after: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ChaosQueue:
    """Chaos rules applied in order: a rule is used up before the next one starts."""

    def __init__(self) -> None:
        self._rules: deque[ChaosRule] = deque()
        self._lock = threading.Lock()

    def add(self, rule: ChaosRule) -> None:
        with self._lock:
            self._rules.append(rule)

    def take(self) -> ChaosRule | None:
        """The rule for this request (``remaining=1`` in the copy), or ``None``."""
        with self._lock:
            if not self._rules:
                return None
            rule = self._rules[0]
            rule.remaining -= 1
            if rule.remaining <= 0:
                self._rules.popleft()
            return replace(rule, remaining=1)

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rule.as_dict() for rule in self._rules]

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()


#: What the inbox's search box looks through: addresses, names, subject, text, HTML.
_SEARCHED = " || char(10) || ".join(
    ["recipients", "subjects"]
    + [f"coalesce(json_extract(data, '$.{path}'), '')"
       for path in ("from.email", "from.name", "to.name", "renderedText", "renderedHtml")]
)


def _like(value: str) -> str:
    # The user's text is matched literally: % and _ are not wildcards here.
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class SandboxStore:
    """Everything the sandbox remembers. Thread-safe: one connection behind one lock."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        clock: Clock,
        rate_limits: Sequence[tuple[int, float]] = ((2, 1.0),),
        idempotency_ttl: float = IDEMPOTENCY_TTL,
    ) -> None:
        self.clock = clock
        self.idempotency_ttl = idempotency_ttl
        self.limiter = RateLimiter(clock, rate_limits)
        self.chaos = ChaosQueue()
        self.path: Path | None = None
        if data_dir is None:
            target = ":memory:"
        else:
            target = owner_only_db(data_dir, DB_FILENAME)
            self.path = Path(target)
        # Handlers run on the server's event loop while tests read from their own
        # thread; the lock, not sqlite's thread check, serialises access.
        self._db = sqlite3.connect(target, check_same_thread=False)
        self._lock = threading.RLock()
        if self.path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.commit()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._db:
            yield self._db

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """The database in one transaction, under the store's lock (the webhook emitter
        keeps its table here)."""
        return self._tx()

    # -- emails --------------------------------------------------------------

    def save(
        self,
        messages: Sequence[Message],
        *,
        idempotency: tuple[str, str, str] | None = None,
        status: int = 200,
        response: Any = None,
    ) -> None:
        """Store accepted ``messages`` and, atomically with them, the idempotency record.

        ``idempotency`` is ``(key fingerprint, Idempotency-Key, request hash)``;
        ``status``/``response`` are what a replay will answer.
        """
        now = self.clock.now()
        rows = []
        for msg in messages:
            addresses = [msg["to"]["email"]]
            addresses += [a["email"] for a in (msg.get("cc") or []) + (msg.get("bcc") or [])]
            recipients = "\n" + "\n".join(a.lower() for a in addresses) + "\n"
            subjects = "\n".join(s for s in (msg.get("subject"), msg.get("renderedSubject")) if s)
            rows.append(
                (
                    msg["id"],
                    msg.get("batchId"),
                    now,
                    recipients,
                    subjects,
                    json.dumps(msg, ensure_ascii=False),
                )
            )
        with self._tx() as db:
            db.executemany(
                "INSERT INTO emails (id, batch_id, created_at, recipients, subjects, data)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            if idempotency is not None:
                key_fp, key, request_hash = idempotency
                db.execute(
                    "INSERT OR REPLACE INTO idempotency"
                    " (key_fp, key, request_hash, status, response, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (key_fp, key, request_hash, status, json.dumps(response), now),
                )

    def get(self, message_id: str) -> Message | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM emails WHERE id = ?", (message_id,)).fetchone()
        return None if row is None else _load(row[0])

    def messages(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        to: str | None = None,
        subject: str | None = None,
        batch_id: str | None = None,
        search: str | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[int, list[Message]]:
        """``(total matching, one page newest first)``.

        ``to`` containing ``@`` matches a to/cc/bcc address exactly (case-insensitive);
        otherwise it, like ``subject``, is a case-insensitive substring. ``search`` is
        the inbox's search box: every word must appear somewhere in the email (to,
        from, subject, text, HTML). ``idempotency_key`` matches exactly (a task id).
        """
        where: list[str] = []
        args: list[Any] = []
        if to:
            needle = f"\n{to.lower()}\n" if "@" in to else to.lower()
            where.append("recipients LIKE ? ESCAPE '\\'")
            args.append(f"%{_like(needle)}%")
        if subject:
            where.append("subjects LIKE ? ESCAPE '\\'")
            args.append(f"%{_like(subject)}%")
        if batch_id:
            where.append("batch_id = ?")
            args.append(batch_id)
        for word in (search or "").split()[:20]:
            where.append(f"({_SEARCHED}) LIKE ? ESCAPE '\\'")
            args.append(f"%{_like(word)}%")
        if idempotency_key:
            where.append("json_extract(data, '$.idempotencyKey') = ?")
            args.append(idempotency_key)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM emails{clause}", args).fetchone()[0]
            rows = self._db.execute(
                f"SELECT data FROM emails{clause} ORDER BY seq DESC LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
        return int(total), [_load(row[0]) for row in rows]

    def neighbours(self, message_id: str) -> tuple[str | None, str | None]:
        """``(newer id, older id)`` around one message, in arrival order."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM emails WHERE id = ?", (message_id,)).fetchone()
            if row is None:
                return None, None
            newer = self._db.execute(
                "SELECT id FROM emails WHERE seq > ? ORDER BY seq ASC LIMIT 1", (row[0],)
            ).fetchone()
            older = self._db.execute(
                "SELECT id FROM emails WHERE seq < ? ORDER BY seq DESC LIMIT 1", (row[0],)
            ).fetchone()
        return (newer[0] if newer else None), (older[0] if older else None)

    # -- refused requests ------------------------------------------------------

    def record_rejection(self, rejection: dict[str, Any]) -> None:
        """Remember a refused mail request (the inbox's Rejected view); the newest
        :data:`REJECTIONS_KEPT` are kept."""
        now = self.clock.now()
        with self._tx() as db:
            db.execute("INSERT INTO rejections (created_at, data) VALUES (?, ?)",
                       (now, json.dumps({**rejection, "at": now}, ensure_ascii=False)))
            db.execute("DELETE FROM rejections WHERE seq <= (SELECT MAX(seq) FROM rejections) - ?",
                       (REJECTIONS_KEPT,))

    def rejections(self, *, limit: int = 50, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
        """``(total kept, one page newest first)``."""
        with self._lock:
            total = self._db.execute("SELECT COUNT(*) FROM rejections").fetchone()[0]
            rows = self._db.execute(
                "SELECT data FROM rejections ORDER BY seq DESC LIMIT ? OFFSET ?", (limit, offset)
            ).fetchall()
        return int(total), [json.loads(row[0]) for row in rows]

    def delete(self, message_id: str | None = None) -> int:
        """Delete one message, or all of them when ``message_id`` is ``None``."""
        with self._tx() as db:
            if message_id is None:
                return db.execute("DELETE FROM emails").rowcount
            return db.execute("DELETE FROM emails WHERE id = ?", (message_id,)).rowcount

    # -- idempotency ---------------------------------------------------------

    def idempotency(self, key_fp: str, key: str) -> IdempotencyRecord | None:
        """The live record for this key, if any; expired records are dropped here."""
        with self._tx() as db:
            db.execute(
                "DELETE FROM idempotency WHERE created_at <= ?",
                (self.clock.now() - self.idempotency_ttl,),
            )
            row = db.execute(
                "SELECT request_hash, status, response, created_at FROM idempotency"
                " WHERE key_fp = ? AND key = ?",
                (key_fp, key),
            ).fetchone()
        if row is None:
            return None
        return IdempotencyRecord(row[0], int(row[1]), json.loads(row[2]), float(row[3]))

    # -- counters ------------------------------------------------------------

    def count(self, *names: str) -> None:
        """Add one to each named counter (``received``, ``accepted``, ``rejected.429``...)."""
        with self._tx() as db:
            db.executemany(
                "INSERT INTO counters (name, n) VALUES (?, 1)"
                " ON CONFLICT (name) DO UPDATE SET n = n + 1",
                [(name,) for name in names],
            )

    def stats(self) -> dict[str, Any]:
        with self._lock:
            counters = dict(self._db.execute("SELECT name, n FROM counters").fetchall())
            emails = self._db.execute("SELECT COUNT(*) FROM emails").fetchone()[0]
        rejected = {
            name.removeprefix("rejected."): n
            for name, n in sorted(counters.items())
            if name.startswith("rejected.")
        }
        return {
            "received": counters.get("received", 0),
            "accepted": counters.get("accepted", 0),
            "replayed": counters.get("replayed", 0),
            "rejected": rejected,
            "emails": emails,
        }

    # -- lifecycle -----------------------------------------------------------

    def reset(self) -> None:
        """Forget everything: emails, idempotency records, counters, refused requests,
        webhook events, windows, chaos."""
        with self._tx() as db:
            db.execute("DELETE FROM emails")
            db.execute("DELETE FROM idempotency")
            db.execute("DELETE FROM counters")
            db.execute("DELETE FROM rejections")
            db.execute("DELETE FROM webhooks")
        self.limiter.reset()
        self.chaos.clear()

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _load(data: str) -> Message:
    msg: Message = json.loads(data)
    return msg
