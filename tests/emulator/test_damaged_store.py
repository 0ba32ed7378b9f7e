"""A damaged row in the store (a hand-edited or broken database) costs that message
only: every other message is still delivered, the bad one is set aside with an error
naming it (never left in flight forever, never claimed again in a loop), and a
restart tries it again."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from celery_qstash.clock import FakeClock
from celery_qstash.local.emulator import EmulatorServer
from celery_qstash.local.emulator.store import DLQ_RETENTION_S
from celery_qstash.local.emulator.store.attempts import UNREADABLE
from celery_qstash.local.emulator.store.db import DB_FILENAME

from .conftest import START, Client, Reply, Target

#: SQL that damages one message's stored JSON, each the way a different step reads it:
#: the claim (decode, options, retry count, headers) or the outcome (retries, callback).
DAMAGE = {
    "not-json": "data = 'not json'",
    "opts-not-an-object": "data = json_set(data, '$.opts', 'x')",
    "no-retry-count": "data = json_remove(data, '$.retried')",
    "headers-not-a-map": "data = json_set(data, '$.opts.headers', json('[1]'))",
    "retries-not-a-number": "data = json_set(data, '$.opts.retries', 'x')",
    "callback-url-not-text": "data = json_set(data, '$.opts.callback', json('{\"url\": 5}'))",
}


def _rows(server: EmulatorServer) -> dict[str, tuple[int, str | None, int | None]]:
    db = server.emulator.store.db
    with db.lock:
        rows = db.conn.execute("SELECT id, inflight, parked, due_ms FROM messages").fetchall()
    return {r["id"]: (r["inflight"], r["parked"], r["due_ms"]) for r in rows}


@pytest.mark.parametrize("damage", list(DAMAGE.values()), ids=list(DAMAGE))
def test_one_damaged_message_does_not_stop_the_others(
        tmp_path: Path, target: Target, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    server = EmulatorServer(tmp_path, clock=FakeClock(START), start_delivery=False).start()
    client = Client(server)
    target.reply("/bad", Reply(500))
    bad = client.publish(f"{target.url}/bad", "b", **{"Upstash-Retries": "1"}).json()["messageId"]
    good = client.publish(f"{target.url}/good", "g").json()["messageId"]
    db_file = tmp_path / DB_FILENAME
    with sqlite3.connect(db_file) as con:
        original = con.execute("SELECT data FROM messages WHERE id = ?", (bad,)).fetchone()[0]
        con.execute(f"UPDATE messages SET {damage} WHERE id = ?", (bad,))

    with caplog.at_level(logging.ERROR, logger="celery_qstash.local.emulator"):
        server.emulator.tick()
    assert [r.body for r in target.at("/good")] == [b"g"]
    assert client.states(good)[-1] == "DELIVERED"
    # Set aside: not in flight, not due, so later ticks leave it (and everything else) be.
    assert _rows(server) == {bad: (0, UNREADABLE, None)}
    assert any(bad in r.getMessage() and "set aside" in r.getMessage() for r in caplog.records)
    attempts = len(target.at("/bad"))
    for _ in range(3):
        client.advance(3600)
        assert server.emulator.tick() == 0
    assert len(target.at("/bad")) == attempts
    client.http.close()
    server.stop()

    # Repaired and restarted, it is tried again and delivered.
    with sqlite3.connect(db_file) as con:
        con.execute("UPDATE messages SET data = ? WHERE id = ?", (original, bad))
    target.reply("/bad", Reply(200))
    server = EmulatorServer(tmp_path, clock=FakeClock(START + 4 * 3600),
                            start_delivery=False).start()
    try:
        assert server.emulator.tick() == 1
        assert [r.body for r in target.at("/bad")][-1] == b"b"
        assert _rows(server) == {}
    finally:
        server.stop()


def test_an_unreadable_dlq_entry_expires_without_stopping_delivery(
        fake: Client, target: Target) -> None:
    # The retention runs inside every claim: reading the entry's JSON there made one
    # damaged DLQ row stop every delivery once it came due for expiry.
    target.reply("/dead", Reply(500))
    fake.publish(f"{target.url}/dead", "d", Upstash_Retries="0")
    fake.tick()
    db = fake.emulator.store.db
    with db.tx() as cur:
        cur.execute("UPDATE dlq SET data = 'not json'")
    fake.advance(DLQ_RETENTION_S + 1)
    fake.publish(f"{target.url}/live", "l")
    assert fake.tick() == 1
    assert [r.body for r in target.at("/live")] == [b"l"]
    with db.lock:
        assert db.conn.execute("SELECT COUNT(*) FROM dlq").fetchone()[0] == 0
